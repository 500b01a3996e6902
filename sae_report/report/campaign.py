"""The campaign report: the "Hyperparameter Optimization Workflow" document, one section per
iteration (configuration, results, what changed and why), the l1_alpha/L0 chart as it grew, and
the final choice. Writes ``campaign.md`` (+ ``charts/iter_NN.svg``), ``campaign.html``,
``best_config.yaml`` (the chosen run's config, ready for ``sae-report train CONFIG``).

Rendered by the run report's stack (``report.render``): one jinja environment (Markdown values
escaped by its ``finalize`` hook, HTML autoescaped), ``campaign.html`` built by ``html_page`` like
``report.html`` (inline assets allowed by a hash-only Content-Security-Policy, one Vega bundle, each
chart live and as a static SVG inside ``<noscript>``); the chart is ``report.charts.l1_l0_chart``."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..recommend.fit import L1Recommendation, RunPoint, recommend_l1
from . import formatting as fm
from . import render as rr
from .charts import l1_l0_chart
from .formatting import display_rows, g3, recommendation_view
from ..runlog import atomic_write_bytes, atomic_write_text, to_jsonable

#: Config keys shown in each iteration's configuration block (the write-up's five, then the shape).
SHOWN_KEYS = ("l1_alpha", "learning_rate", "resample_interval", "target_l0", "total_steps", "batch_size",
              "d_in", "d_sae", "l1_warmup_steps", "seed")

STATUS_TEXT = {
    "reached": "Target reached", "budget_spent": "Run budget spent", "saturated": "Stopped: L0 saturated",
    "stuck": "Stopped: no further refinement", "interrupted": "Interrupted (resumable)",
    "failed": "Failed", "running": "In progress", "unsettled": "Stopped: L0 not settled (runs too short)",
}


def _points_upto(camp: Any, k: int) -> list[RunPoint]:
    pts = []
    for it in camp.iterations[:k]:
        r = it.row or {}
        if r.get("excluded") is None and r.get("settled_l0"):
            pts.append(RunPoint(it.run_id, float(it.l1_alpha), float(r["settled_l0"]), float(r.get("l0_noise") or 0)))
    return pts


def _rec_after(camp: Any, k: int) -> L1Recommendation | None:
    pts = _points_upto(camp, k)
    return recommend_l1(pts, camp.target_l0, _coef(camp)) if pts else None


def _coef(camp: Any) -> str:
    return getattr(camp, "coefficient", "l1_alpha") or "l1_alpha"


def _config_block(camp: Any, it: Any) -> str:
    cfg = dict(camp.base_config)
    cfg.update({k: v for k, v in ((it.row or {}).get("config") or {}).items() if k in SHOWN_KEYS})
    coef = _coef(camp)
    cfg[coef] = it.l1_alpha
    keys = SHOWN_KEYS if coef == "l1_alpha" else (coef, "sae_variant", *SHOWN_KEYS[1:])
    shown = {k: cfg[k] for k in keys if cfg.get(k) is not None}
    return yaml.safe_dump(to_jsonable(shown), sort_keys=False, width=1000)


def _changed(camp: Any, idx: int) -> str:
    it = camp.iterations[idx]
    if idx == 0:
        return "Starting config (from the config file and --set overrides)."
    prev = camp.iterations[idx - 1]
    first = (getattr(it, "lengthened", None) or [{}])[0].get("from") or getattr(it, "total_steps", None)
    before = getattr(prev, "total_steps", None)
    longer = (f" total_steps {int(before):,} -> {int(first):,} (the earlier runs were too short for L0 to settle)."
              if first and before and int(first) != int(before) else "")
    if abs(it.l1_alpha - prev.l1_alpha) <= 1e-12:
        return longer.strip() or "No change."
    word = "lower" if it.l1_alpha < prev.l1_alpha else "raise"
    effect = ("weaker sparsity penalty -> more active features -> higher L0" if word == "lower"
              else "stronger sparsity penalty -> fewer active features -> lower L0")
    coef = _coef(camp)
    return (f"{coef} {g3(prev.l1_alpha)} -> {g3(it.l1_alpha)} ({word} {coef} -> {effect})."
            + (longer or " Nothing else changed."))


def _iteration_view(camp: Any, idx: int, chart_file: str | None) -> dict[str, Any]:
    it = camp.iterations[idx]
    row = display_rows([it.row], camp.target_l0)[0] if it.row else None
    rec_after = _rec_after(camp, idx + 1)
    nxt = camp.iterations[idx + 1] if idx + 1 < len(camp.iterations) else None
    if it.within:
        verdict = f"Within {100 * camp.tolerance:.3g}% of the {100 * camp.target_l0:.3g}% target."
    elif getattr(it, "unsettled", "") and it.row and it.row.get("settled_l0"):
        verdict = (f"Not settled: {it.unsettled}. Its second-half median {fm.pct(it.row['settled_l0'])} is not what "
                   "the run achieves, so it is never the answer" + (" (a longer run would settle elsewhere)."
                                                                   if getattr(it, "lengthen", False) else "."))
    elif it.row and it.row.get("settled_l0"):
        s = it.row["settled_l0"]
        side = "above" if s > camp.target_l0 else "below"
        verdict = (f"Settled L0 {fm.pct(s)} is {side} the target ({100 * s / camp.target_l0:.0f}%): "
                   + (f"raise {_coef(camp)} next (stronger penalty, fewer active features)." if side == "above"
                      else f"lower {_coef(camp)} next (weaker penalty, more active features)."))
    else:
        verdict = "No usable settled L0" + (f": {it.row.get('excluded')}." if it.row and it.row.get("excluded") else ".")
    return {
        "index": it.index, "run_id": it.run_id, "l1_alpha": g3(it.l1_alpha), "status": it.status,
        "config": _config_block(camp, it), "changed": _changed(camp, idx), "why": it.why,
        "row": row, "verdict": verdict,
        "notes": [*(f"Lengthened from {int(x['from']):,} to {int(x['to']):,} steps "
                    f"({'resumed from its checkpoint' if x.get('resumed', True) else 'trained afresh'}): total_steps "
                    f"{int(x['from']):,} was too short for L0 to settle ({x.get('why', '')})."
                    for x in getattr(it, "lengthened", []) or []),
                  *((it.row or {}).get("warnings") or [])],
        "findings": [{"kind": str(f.get("kind", "")).replace("_", " "), "step": fm.step(f.get("step")),
                      "explanation": str(f.get("explanation", ""))} for f in it.findings],
        "advice": [{"parameter": str(a.get("parameter")), "current": fm.sig(a.get("current")),
                    "proposed": fm.sig(a.get("proposed")), "reason": str(a.get("reason", ""))} for a in it.advice],
        "next": (f"Next: iteration {nxt.index} at {_coef(camp)} {g3(nxt.l1_alpha)}." if nxt else ""),
        "rec_after": recommendation_view(rec_after.to_dict()) if rec_after and not it.within and nxt is None else None,
        "chart_file": chart_file,
        "train_time": fm.duration(it.train_seconds) if it.train_seconds is not None else "reused from disk",
        "round": _round_note(camp, it),
    }


def _round_note(camp: Any, it: Any) -> str:
    """"round 2 of the campaign, at once with #4 iter_04_..." ("" when it trained alone)."""
    r = getattr(it, "round", 0)
    mates = [o for o in camp.iterations if r and getattr(o, "round", 0) == r and o is not it]
    if not mates:
        return ""
    return (f"round {r} of the campaign, at once with " + ", ".join(f"#{o.index} {o.run_id}" for o in mates)
            + (f" (on {it.device})" if getattr(it, "device", None) else ""))


def _chart(camp: Any, k: int) -> Any:
    pts = _points_upto(camp, k)
    rec = _rec_after(camp, k) if not any(it.within for it in camp.iterations[:k]) else None
    labels = {it.run_id: f"#{it.index}" for it in camp.iterations}
    return l1_l0_chart(pts, rec, camp.target_l0, labels=labels, coefficient=_coef(camp),
                       title=f"After iteration {k}: L0 against {_coef(camp)} (log-log)", width=460, height=280)


def context(camp: Any, chart_files: list[str | None], charts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Display-ready data for the campaign templates."""
    best = camp.best_iteration()
    rows = display_rows([dict(it.row, id=f"#{it.index} {it.run_id}") for it in camp.iterations if it.row],
                        camp.target_l0)
    return {
        "title": f"Hyperparameter Optimization Workflow: L0 {100 * camp.target_l0:.3g}% ± {100 * camp.tolerance:.3g}%",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "version": __version__,
        "status": STATUS_TEXT.get(camp.status, camp.status), "message": camp.message,
        "target": fm.pct(camp.target_l0), "tolerance": f"{100 * camp.tolerance:.3g}%",
        "runs": len(camp.iterations), "max_runs": camp.max_runs, "folder": str(camp.out_dir),
        "trained": getattr(camp, "where", ""),
        "rows": rows,
        "coef": _coef(camp),
        "iterations": [_iteration_view(camp, i, chart_files[i] if i < len(chart_files) else None)
                       for i in range(len(camp.iterations))],
        "best": ({"run_id": best.run_id, "index": best.index, "l1_alpha": g3(best.l1_alpha),
                  "settled": fm.pct((best.row or {}).get("settled_l0")),
                  "pct": f"{100 * (best.row or {}).get('settled_l0', 0) / camp.target_l0:.0f}%",
                  "config": _config_block(camp, best)} if best else None),
        "next": recommendation_view(camp.next_recommendation) if camp.status not in ("reached",) else None,
        "charts": charts or [],
    }


def write_campaign_report(camp: Any) -> list[Path]:
    """Write campaign.md (+ SVG charts), campaign.html and best_config.yaml into the campaign folder."""
    out = Path(camp.out_dir)
    written: list[Path] = []
    specs = [rr.chart_spec(_chart(camp, k)) for k in range(1, len(camp.iterations) + 1)]
    files: list[str | None] = []
    views: list[dict[str, Any]] = []
    for k, spec in enumerate(specs, start=1):
        svg = _iteration_svg(out / "charts" / f"iter_{k:02d}.svg", spec)
        files.append(rr.Verbatim(f"charts/iter_{k:02d}.svg") if svg is not None else None)
        views.append(rr.chart_view(f"iter-{k}", f"L0 against {_coef(camp)} after iteration {k}",
                                   f"The runs up to iteration {k}: settled L0 against {_coef(camp)}, the target and, "
                                   f"while the target is not reached, the fitted curve and the next {_coef(camp)}.",
                                   spec, svg))
    md = out / "campaign.md"
    atomic_write_text(md, rr.render("campaign/campaign.md.j2", context(camp, files), "md"))
    written.append(md)
    html = out / "campaign.html"
    atomic_write_text(html, rr.html_page("campaign/campaign.html.j2", context(camp, [None] * len(specs), views),
                                         style_sheet=rr.COMPARE_STYLE))
    written.append(html)
    best = camp.best_iteration()
    if best is None:
        _drop_stale_best(out / "best_config.yaml")  # no settled run: no config is the answer
    if best is not None and (out / best.run_id / "config.yaml").exists():
        from ..recommend.nextconfig import next_config
        from ..runlog import read_config

        nxt = next_config(read_config(out / best.run_id / "config.yaml"), base_id=best.run_id)
        text = (f"# Chosen by sae-report tune: {best.run_id}, settled L0 "
                f"{fm.pct((best.row or {}).get('settled_l0'))} (target {fm.pct(camp.target_l0)}).\n")
        atomic_write_text(out / "best_config.yaml", text + yaml.safe_dump(to_jsonable(nxt.config), sort_keys=False))
        written.append(out / "best_config.yaml")
    return written


def _iteration_svg(svg_path: Path, spec: dict[str, Any]) -> bytes | None:
    """The chart after an iteration as SVG, written to ``svg_path`` for the Markdown; drawn again only
    when its spec changed (it depends on runs 1..k only), the spec kept beside it as ``.vl.json``."""
    spec_path = svg_path.with_suffix(".vl.json")
    text = rr.script_json(spec)
    try:
        if spec_path.read_text(encoding="utf-8") == text:
            return svg_path.read_bytes()  # already drawn
    except OSError:
        pass
    svg = rr.chart_svg(spec)
    if svg is not None:
        svg_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(svg_path, svg)
        atomic_write_text(spec_path, text)
    return svg


def _drop_stale_best(path: Path) -> None:
    """Remove a ``best_config.yaml`` an earlier invocation wrote (ours only: its first line says so)."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline()
    except OSError:
        return
    if first.startswith("# Chosen by sae-report tune"):
        path.unlink(missing_ok=True)
