"""The track report section: Markdown and HTML from ``templates/track/``, charts as SVG.

``render_section(analysis, "md" | "html", charts)`` returns the section alone (for the main report
to include); ``write_track_report`` writes ``track.json``, ``report.md``, ``report.html`` and
``charts/*.svg`` into ``OUT/track/``. Figures are formatted here, so templates only print.
Templates render through the report package's environment (``sae_report.report.render``): HTML
autoescaped, every Markdown value escaped unless marked ``verbatim`` (checkpoint labels come from
file names). Charts are rendered offline with vl-convert; inline SVG needs no JavaScript, so the
page's Content-Security-Policy allows no script at all and its style sheet (``templates/track/style.css``)
by hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from markupsafe import Markup

from .. import __version__
from .render import Verbatim, chart_image, csp, render, template_source
from ..runlog import atomic_write_text
from .charts.track import CHARTS
from ..track.study import TRACK_JSON, TrackAnalysis, write_track_json

CHART_TITLES = {"speedup": "Speed-up", "drift": "Decoder drift", "matched": "Feature matching", "l0_dead": "L0 and dead features"}


def _num(v: Any, digits: int = 4) -> str:
    if v is None or isinstance(v, str):
        return "-" if v is None else v
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}g}"


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def context(t: TrackAnalysis) -> dict[str, Any]:
    """Display-ready plain data for the templates."""
    labels = [c.label for c in t.checkpoints]
    speed = []
    for s in t.speedups:
        ratio = s.ratio
        speed.append({
            "checkpoint": labels[s.checkpoint] if s.checkpoint < len(labels) else str(s.checkpoint),
            "metric": "loss" if s.metric == "loss" else "explained variance", "target": _num(s.target),
            "fresh": _num(s.fresh_tokens) if s.fresh_tokens is not None else "not reached",
            "recurrent": _num(s.recurrent_tokens) if s.recurrent_tokens is not None else f"not within {s.recurrent_budget:,}",
            "ratio": (f"{ratio:.3f} (1/{1 / ratio:.0f})" if ratio else "0 (at start)") if ratio is not None else
                     (f"> {s.ratio_upper_bound:.3f}" if s.ratio_upper_bound is not None else "-"),
            "budgets": f"{s.recurrent_budget:,} / {s.fresh_budget:,}",
            "within": "-" if s.recurrent_tokens is None else (
                "yes" if s.recurrent_tokens <= round(t.fraction * s.fresh_budget) else "no"),
            "finals": f"{_num(s.recurrent_final)} / {_num(s.fresh_final)}",
        })
    rows = []
    for c, d in zip(t.checkpoints, t.drift.per_checkpoint):
        rows.append({"label": c.label, "init": c.init, "tokens": _num(c.tokens), "loss": _num(c.final_loss), "start_loss": _num(c.start_loss),
                     "l0": _num(c.l0), "dead": _pct(c.dead_frac), "ev": _pct(c.explained_variance), "alive": f"{c.alive:,}",
                     "births": f"{t.lifecycle.births[c.index]:,}" if c.index < len(t.lifecycle.births) else "-",
                     "deaths": f"{t.lifecycle.deaths[c.index]:,}" if c.index < len(t.lifecycle.deaths) else "-",
                     "drift_median": _num(d.quantiles["q50"], 3), "drift_band": f"{d.quantiles['q10']:.3f} to {d.quantiles['q90']:.3f}",
                     "step_cos": _num(d.step_cosine, 3), "stable": _pct(d.frac_above)})
    matches = [{"pair": f"{labels[m.a]} -> {labels[m.b]}" if m.kind == "consecutive" else f"fresh SAE at {labels[m.a]} vs series",
                "by_index": _pct(m.by_index), "by_index_median": _num(m.by_index_median, 3),
                "by_assignment": _pct(m.by_assignment), "by_assignment_median": _num(m.by_assignment_median, 3),
                "identity": _pct(m.identity_kept)} for m in t.matches]
    phases = [{"name": p.name, "start": labels[p.start], "end": labels[p.end], "drift": f"{p.drift_per_step:.3g}"}
              for p in t.drift.phases]
    measured = sorted({c.measured_on for c in t.checkpoints})
    return {"version": __version__, "measured_on": ", ".join(measured), "tolerance": f"{100 * t.tolerance:g}%", "threshold": f"{t.threshold:g}", "fraction": f"{t.fraction:g}",
            "fraction_inv": f"{1 / t.fraction:.0f}" if t.fraction else "-", "headline": t.headline, "notes": t.notes,
            "speedups": speed, "rows": rows, "matches": matches, "phases": phases, "phase_note": t.drift.phase_note,
            "n_features": f"{t.drift.n_features:,}", "stable_threshold": f"{t.drift.stable_threshold:g}",
            "born_late": f"{t.lifecycle.born_late:,}", "died_late": f"{t.lifecycle.died_late:,}",
            "source": [{"key": str(k), "value": str(v)} for k, v in sorted(t.source.items())]}


@dataclass(frozen=True)
class ChartFile:
    """One rendered chart."""

    name: str
    """Chart key (``drift``, ``matched``, ``l0_dead``, ``speedup``)."""
    title: str
    """Heading shown above it."""
    svg: str
    """The SVG markup."""
    path: str
    """File name relative to the report folder (``charts/drift.svg``)."""


def render_charts(t: TrackAnalysis) -> list[ChartFile]:
    """Render every chart to SVG offline (the speed-up chart only when there is a control)."""
    out = []
    for name, fn in CHARTS.items():
        if name == "speedup" and not t.speedups:
            continue
        svg = chart_image(fn(t).to_dict(), "svg").decode("utf-8")
        out.append(ChartFile(name, CHART_TITLES[name], svg, f"charts/{name}.svg"))
    return out


def render_section(t: TrackAnalysis, fmt: str, charts: Sequence[ChartFile] = ()) -> str:
    """The section alone, ``md`` or ``html``."""
    name = {"md": "track/section.md.j2", "html": "track/section.html.j2"}[fmt]
    return render(name, {**context(t), "charts": list(charts)}, fmt)


def write_track_report(t: TrackAnalysis, out_dir: Path, formats: Sequence[str] = ("md", "html", "json"),
                       command: str = "") -> list[Path]:
    """Write the track outputs into ``out_dir`` (``OUT/track/``); return the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "json" in formats:
        written.append(write_track_json(out_dir / TRACK_JSON, t))
    if not ({"md", "html"} & set(formats)):
        return written
    charts = render_charts(t)
    for c in charts:
        path = out_dir / c.path
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, c.svg)
        written.append(path)
    for fmt, page in (("md", "track/report.md.j2"), ("html", "track/report.html.j2")):
        if fmt not in formats:
            continue
        section = Verbatim(render_section(t, fmt, charts))
        page_ctx: dict[str, Any] = {"section": section, "command": command, "version": __version__}
        if fmt == "html":  # no script; the style sheet allowed by its hash
            style = "\n" + template_source("track/style.css")
            page_ctx.update(style=Markup(style), csp=Markup(csp(style)))
        text = render(page, page_ctx, fmt)
        path = out_dir / f"report.{fmt}"
        atomic_write_text(path, text)
        written.append(path)
    return written
