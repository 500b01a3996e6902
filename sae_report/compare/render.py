"""Write a comparison out: ``comparison.json``, ``comparison.md`` (+ ``l1_l0.svg``), ``comparison.html``."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from ..recommend.chart import l1_l0_chart
from ..recommend.fit import RunPoint
from ..recommend.render import display_rows, recommendation_view, render, spec_json, vega_bundle, write_svg
from ..runlog import atomic_write_text
from .comparison import Comparison, fmt_target

FORMATS = ("md", "html", "json")


def comparison_chart(comp: Comparison) -> Any:
    """The l1_alpha/L0 chart of a comparison (excluded runs greyed when they have a settled L0)."""
    excluded = [RunPoint(r.id, r.l1_alpha, r.settled_l0) for r in comp.excluded
                if r.l1_alpha and r.settled_l0 and r.l1_alpha > 0 and r.settled_l0 > 0]
    return l1_l0_chart(comp.points(), comp.recommendation, comp.target_l0, excluded=excluded)


def context(comp: Comparison, *, command: str = "", chart_file: str | None = None) -> dict[str, Any]:
    """Display-ready data for the comparison templates."""
    doc = comp.to_dict()
    return {
        "title": f"Run comparison: {len(comp.rows)} run{'s' if len(comp.rows) != 1 else ''}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "command": command,
        "target": fmt_target(comp.target_l0),
        "target_source": comp.target_source,
        "rows": display_rows(doc["runs"], comp.target_l0),
        "key_finding": comp.key_finding,
        "rec": recommendation_view(doc["recommendation"]),
        "no_rec": comp.no_recommendation_reason,
        "warnings": list(comp.warnings),
        "run_notes": [{"id": r.id, "notes": list(r.warnings)} for r in comp.rows if r.warnings],
        "excluded": [{"id": r.id, "reason": str(r.excluded)} for r in comp.excluded],
        "chart_file": chart_file,
    }


def write_comparison(comp: Comparison, out_dir: Path, formats: Sequence[str] = FORMATS,
                     command: str = "") -> list[Path]:
    """Write the chosen formats into ``out_dir`` (each file atomically); return the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    chart = comparison_chart(comp)
    if "json" in formats:
        path = out_dir / "comparison.json"
        atomic_write_text(path, json.dumps(comp.to_dict(), indent=2, allow_nan=False) + "\n")
        written.append(path)
    if "md" in formats:
        svg = write_svg(chart, out_dir / "l1_l0.svg")
        if svg is not None:
            written.append(svg)
        path = out_dir / "comparison.md"
        atomic_write_text(path, render("compare/comparison.md.j2",
                                       context(comp, command=command, chart_file=svg.name if svg else None)))
        written.append(path)
    if "html" in formats:
        path = out_dir / "comparison.html"
        ctx = context(comp, command=command)
        ctx.update(spec=spec_json(chart), vega=vega_bundle())
        atomic_write_text(path, render("compare/comparison.html.j2", ctx))
        written.append(path)
    return written
