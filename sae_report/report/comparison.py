"""Write a comparison out: ``comparison.json``, ``comparison.md`` (+ its SVG charts),
``comparison.html``.

Charts: the l1_alpha/L0 fit (``l1_l0``), the sparsity-fidelity chart (settled L0 against settled
explained variance, one point per run, the Pareto frontier drawn: ``fidelity``), and the runs' L0,
dead-feature and loss curves overlaid on one step axis (``overlay_l0``, ``overlay_dead``,
``overlay_loss``). Fidelity and curves are read from each run's log (the comparison rows carry only
L0); a run whose log cannot be read again is left out of those charts with a note.

``comparison.html`` is one self-contained offline file, built like ``report.html`` by the same code
(``report.render.html_page``, the report's jinja environment and partials): the Vega bundle and the
shared embed script (``templates/html/embed.js``: vega's expression interpreter, no ``eval``)
inlined once, chart specs as inert JSON, a Content-Security-Policy of hashes only (no
``'unsafe-inline'`` / ``'unsafe-eval'``), time charts that zoom and pan on the step axis, and each
chart also as a static SVG image inside ``<noscript>`` for readers with JavaScript off. Markdown
values are escaped by the environment's ``finalize`` hook, HTML values autoescaped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import altair as alt

from .. import __version__
from ..recommend.fit import RunPoint
from . import formatting as fm
from . import render as rr
from .charts import l1_l0_chart
from .charts import runs as run_charts
from .formatting import display_rows, recommendation_view
from ..runlog import atomic_write_bytes, atomic_write_text, to_jsonable
from ..compare.comparison import Comparison, fmt_target

FORMATS = ("md", "html", "json")
#: Points drawn per run in the overlaid curves (each keeps its minima and maxima; see report.points).
OVERLAY_POINTS = 600


@dataclass
class RunFidelity:
    """What the comparison shows of one run beyond its L0: fidelity and its curves (from its log)."""

    id: str
    ev_final: float | None = None
    """Explained variance at the last logged step (the analysis' ``summary.explained_variance.final``)."""
    ev_settled: float | None = None
    """Second-half median of explained variance (``summary.explained_variance.second_half_median``)."""
    mse_final: float | None = None
    mse_settled: float | None = None
    fvu: bool = False
    """The log had FVU (sparsify): explained variance = 1 - FVU."""
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """``l0`` (percent of the dictionary), ``dead`` (percent), ``loss``: thinned ``{step, value, run}`` rows."""
    note: str = ""
    """Why the run has no fidelity or curves (its log could not be read again)."""


def run_fidelity(comp: Comparison) -> list[RunFidelity]:
    """Fidelity (explained variance, MSE: final and second-half median, as ``analyze`` computes them)
    and thinned curves of each compared run, read again from its log."""
    from ..analysis import analyze
    from ..ingest import load_run
    from .context import fvu_logged
    from .points import thin
    from ..runlog import RunLogError

    out = []
    for r in comp.rows:
        fid = RunFidelity(r.id)
        out.append(fid)
        try:
            data = load_run(Path(r.path))
            doc = analyze(data).to_dict()
        except (RunLogError, OSError, ValueError, TypeError, ArithmeticError, KeyError) as exc:
            fid.note = f"{r.id}: fidelity and curves not drawn ({str(exc).splitlines()[0][:160]})"
            continue
        summary = doc.get("summary") or {}
        ev, mse = summary.get("explained_variance") or {}, summary.get("mse") or {}
        fid.ev_final, fid.ev_settled = _num(ev.get("final")), _num(ev.get("second_half_median"))
        fid.mse_final, fid.mse_settled = _num(mse.get("final")), _num(mse.get("second_half_median"))
        fid.fvu = fvu_logged(doc)
        m = data.metrics
        d_sae = r.d_sae or doc["run"].get("d_sae")
        l0 = thin(m, "l0_frac", n_points=OVERLAY_POINTS)
        scale = 100.0
        if l0 is None and d_sae:
            l0, scale = thin(m, "l0", n_points=OVERLAY_POINTS), 100.0 / d_sae
        if l0 is not None:
            fid.curves["l0"] = [row for row in _rows(l0, r.id, scale) if row["value"] > 0]
        dead = thin(m, "dead_frac", n_points=OVERLAY_POINTS)
        if dead is not None:
            fid.curves["dead"] = _rows(dead, r.id, 100.0)
        loss = thin(m, "loss", n_points=OVERLAY_POINTS)
        if loss is not None:
            fid.curves["loss"] = _rows(loss, r.id, 1.0)
    return out


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _rows(series: Any, run_id: str, scale: float) -> list[dict[str, Any]]:
    return [{"step": row["step"], "value": row["value"], "run": run_id}
            for row in series.records(scale=scale)]


def pareto_front(points: Sequence[tuple[str, float, float]]) -> list[str]:
    """Ids of the runs on the sparsity-fidelity frontier: no other run is at once sparser (lower
    L0) and more faithful (higher explained variance). ``points`` are ``(id, l0, ev)``."""
    front = []
    for pid, l0, ev in points:
        beaten = any((o_l0 <= l0 and o_ev >= ev) and (o_l0 < l0 or o_ev > ev) for oid, o_l0, o_ev in points if oid != pid)
        if not beaten:
            front.append(pid)
    return front


def fidelity_chart(comp: Comparison, fids: Sequence[RunFidelity]) -> alt.LayerChart | None:
    """Settled L0 (log axis) against settled explained variance, one point per run, the Pareto
    frontier drawn (``report.charts.frontier_chart``); None when no run has both."""
    by_id = {f.id: f for f in fids}
    pts = [(r.id, r.settled_l0, by_id[r.id].ev_settled) for r in comp.rows
           if r.id in by_id and _num(r.settled_l0) and r.settled_l0 > 0 and by_id[r.id].ev_settled is not None]
    if not pts:
        return None
    front = set(pareto_front(pts))
    rows = [{"run": rid, "l0_pct": fm_round(100 * l0), "ev_pct": fm_round(100 * ev),
             "front": "on the frontier" if rid in front else "dominated"} for rid, l0, ev in pts]
    return run_charts.frontier_chart(rows, comp.target_l0, fvu=any(by_id[r["run"]].fvu for r in rows))


def fm_round(v: float) -> float:
    return float(f"{v:.6g}")


def overlay_chart(kind: str, fids: Sequence[RunFidelity], target_l0: float | None = None) -> alt.LayerChart | None:
    """One metric of every run over the training steps (``report.charts.overlay_chart``)."""
    return run_charts.overlay_chart(kind, [row for f in fids for row in f.curves.get(kind, [])], target_l0)


def comparison_chart(comp: Comparison) -> Any:
    """The l1_alpha/L0 chart of a comparison (excluded runs greyed when they have a settled L0)."""
    excluded = [RunPoint(r.id, r.l1_alpha, r.settled_l0) for r in comp.excluded
                if r.l1_alpha and r.settled_l0 and r.l1_alpha > 0 and r.settled_l0 > 0]
    return l1_l0_chart(comp.points(), comp.recommendation, comp.target_l0, excluded=excluded,
                       coefficient=comp.coefficient)


@dataclass
class _Chart:
    id: str
    title: str
    caption: str
    spec: dict[str, Any]
    zoom: bool = False
    svg: bytes | None = None


def _charts(comp: Comparison, fids: Sequence[RunFidelity]) -> list[_Chart]:
    c = comp.coefficient
    out = [] if c == "k" else [
        _Chart("l1_l0", f"L0 against {c} (log-log)", f"Settled L0 of each run against its {c}, the fitted curve, the "
               f"target and the recommended {c} with its interval.", rr.chart_spec(comparison_chart(comp)))]
    chart = fidelity_chart(comp, fids)
    if chart is not None:
        out.append(_Chart("fidelity", "Sparsity against fidelity", "The view SAE papers compare by: settled L0 "
                          "against settled explained variance; runs on the line are not beaten on both at once.",
                          rr.chart_spec(chart)))
    for kind, title in (("l0", "L0 of every run"), ("dead", "Dead features of every run"), ("loss", "Loss of every run")):
        chart = overlay_chart(kind, fids, comp.target_l0)
        if chart is not None:
            out.append(_Chart(f"overlay_{kind}", title, "One colour per run, on one step axis.", rr.chart_spec(chart),
                              zoom=True))
    return out


def _fidelity_cells(fids: Sequence[RunFidelity]) -> dict[str, dict[str, str]]:
    return {f.id: {"ev": fm.pct(f.ev_settled) if f.ev_settled is not None else fm.DASH,
                   "mse": fm.sig(f.mse_settled) if f.mse_settled is not None else fm.DASH} for f in fids}


def context(comp: Comparison, *, command: str = "", chart_file: str | None = None,
            fids: Sequence[RunFidelity] = (), charts: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Display-ready data for the comparison templates."""
    doc = comp.to_dict()
    rows = display_rows(doc["runs"], comp.target_l0)
    cells = _fidelity_cells(fids)
    for row in rows:
        row.update(cells.get(row["id"], {"ev": fm.DASH, "mse": fm.DASH}))
    return {
        "title": f"Run comparison: {len(comp.rows)} run{'s' if len(comp.rows) != 1 else ''}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "command": command,
        "target": fmt_target(comp.target_l0),
        "target_source": comp.target_source,
        "rows": rows,
        "coef": comp.coefficient,
        "fvu": any(f.fvu for f in fids),
        "key_finding": comp.key_finding,
        "rec": recommendation_view(doc["recommendation"]),
        "no_rec": comp.no_recommendation_reason,
        "warnings": list(comp.warnings),
        "run_notes": [{"id": r.id, "notes": list(r.warnings)} for r in comp.rows if r.warnings],
        "fidelity_notes": [f.note for f in fids if f.note],
        "excluded": [{"id": r.id, "reason": str(r.excluded)} for r in comp.excluded],
        "chart_file": chart_file,
        "charts": list(charts),
    }


def fidelity_doc(fids: Sequence[RunFidelity], comp: Comparison) -> dict[str, Any]:
    """The fidelity part of ``comparison.json``: per run, explained variance and MSE (final and
    second-half median, as ``analyze`` computes them) and whether the log had FVU; the frontier."""
    by_row = {r.id: r for r in comp.rows}
    pts = [(f.id, by_row[f.id].settled_l0, f.ev_settled) for f in fids
           if f.ev_settled is not None and _num(by_row[f.id].settled_l0)]
    return {"runs": [{"id": f.id, "explained_variance_final": f.ev_final, "explained_variance_settled": f.ev_settled,
                      "mse_final": f.mse_final, "mse_settled": f.mse_settled, "from_fvu": f.fvu,
                      **({"note": f.note} if f.note else {})} for f in fids],
            "pareto_front": pareto_front(pts)}


def html_page(ctx: dict[str, Any], charts: Sequence[_Chart]) -> str:
    """``comparison.html``: the page rendered with its inline code allowed by hash only."""
    views = [rr.chart_view(c.id, c.title, c.caption, c.spec, c.svg, c.zoom) for c in charts]
    return rr.html_page("compare/comparison.html.j2", {**ctx, "charts": views}, style_sheet=rr.COMPARE_STYLE)


def write_comparison(comp: Comparison, out_dir: Path, formats: Sequence[str] = FORMATS,
                     command: str = "") -> list[Path]:
    """Write the chosen formats into ``out_dir`` (each file atomically, folders and files following the
    umask); return the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    fids = run_fidelity(comp) if ("md" in formats or "html" in formats or "json" in formats) else []
    if "json" in formats:
        path = out_dir / "comparison.json"
        doc = {**comp.to_dict(), "fidelity": fidelity_doc(fids, comp)}
        atomic_write_text(path, json.dumps(to_jsonable(doc), indent=2, allow_nan=False) + "\n")
        written.append(path)
    if "md" not in formats and "html" not in formats:
        return written
    charts = _charts(comp, fids)
    for c in charts:
        c.svg = rr.chart_svg(c.spec)
    if "md" in formats:
        files = []
        for c in charts:
            if c.svg is None:
                continue
            path = out_dir / f"{c.id}.svg"
            atomic_write_bytes(path, c.svg)
            written.append(path)
            files.append({"id": c.id, "title": c.title, "caption": c.caption, "file": rr.Verbatim(path.name)})
        l1 = next((f["file"] for f in files if f["id"] == "l1_l0"), None)
        path = out_dir / "comparison.md"
        atomic_write_text(path, rr.render("compare/comparison.md.j2", context(
            comp, command=command, chart_file=l1, fids=fids, charts=[f for f in files if f["id"] != "l1_l0"]), "md"))
        written.append(path)
    if "html" in formats:
        path = out_dir / "comparison.html"
        atomic_write_text(path, html_page(context(comp, command=command, fids=fids), charts))
        written.append(path)
    return written
