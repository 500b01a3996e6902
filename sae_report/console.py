"""The terminal summary of an analysis (rich tables: targets, findings, phases)."""

from __future__ import annotations

import math
from typing import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .analysis.claims import fmt_steps_short as fmt_step
from .analysis.claims import format_claim
from .analysis.result import Analysis, Target

MARKS = {"ok": "✅", "warn": "⚠️", "fail": "❌", "none": ""}
SEVERITY_STYLE = {"info": "dim", "warn": "yellow", "fail": "bold red"}


def _fmt_result(t: Target, d_sae: int | None) -> str:
    if t.claim is not None:
        text = format_claim(t.claim)
        if t.metric.startswith("Dead") and d_sae and t.result is not None and math.isfinite(t.result):
            text = f"{t.result * d_sae:,.0f} ({text})"
        if "(s)" in t.metric and t.result is not None and math.isfinite(t.result):
            text = f"{t.result / 60:.1f} min"
        return text
    v = t.result
    if v is None:
        return "n/a"
    if "(s)" in t.metric and math.isfinite(v):
        return f"{v / 60:.1f} min"
    return f"{v:.4g}"


def targets_table(analysis: Analysis) -> Table:
    table = Table(title="Results", title_justify="left")
    for col in ("Metric", "Result", "Target", "Status"):
        table.add_column(col)
    for t in analysis.targets:
        pct = f" {t.percent_of_target:.0f}%" if t.percent_of_target is not None else ""
        table.add_row(Text(t.metric), Text(_fmt_result(t, analysis.run.d_sae)), Text(t.comparison or "-"),
                      Text(f"{MARKS[t.status]}{pct}"))
    return table


def findings_table(analysis: Analysis) -> Table:
    table = Table(title="Findings", title_justify="left", show_lines=False)
    for col in ("Steps", "Kind", "Metric", "What happened"):
        table.add_column(col, overflow="fold")
    for f in analysis.findings:
        steps = fmt_step(f.step) + (f"-{fmt_step(f.end_step)}" if f.end_step is not None and f.end_step != f.step else "")
        why = f.explanation
        table.add_row(Text(steps), Text(f.kind.value, style=SEVERITY_STYLE.get(f.severity, "")), Text(f.metric), Text(why))
    return table


def phases_table(analysis: Analysis) -> Table:
    table = Table(title="Phases", title_justify="left")
    for col in ("Phase", "Steps", "Metric"):
        table.add_column(col)
    for p in analysis.phases:
        table.add_row(Text(p.name), Text(f"{fmt_step(p.start_step)}-{fmt_step(p.end_step)}"), Text(p.metric))
    return table


def print_summary(analysis: Analysis, *, files: Sequence[object] = (), notes: Sequence[str] = (),
                  console: Console | None = None) -> None:
    """Print the targets, findings and phases tables, skipped analyses and the files written."""
    con = console or Console()
    r = analysis.run
    span = f"steps {fmt_step(r.first_step)}-{fmt_step(r.last_step)}" if r.first_step is not None else "no steps"
    con.print(Text(f"{r.id}  ({r.source}, {r.rows:,} rows, {span}{', sampled' if r.sampled else ''})", style="bold"),
              soft_wrap=True)
    if analysis.verdict is not None:
        v = analysis.verdict
        head = {"ok": "No problems found", "warn": "Worth acting on", "fail": "Not usable"}[v.status]
        con.print(Text(f"Verdict: {head}. " + " ".join(s.text for s in v.sentences[:1]),
                       style=SEVERITY_STYLE.get("fail" if v.status == "fail" else "warn" if v.status == "warn" else "info", "")),
                  soft_wrap=True)
    if analysis.targets:
        con.print(targets_table(analysis))
    if analysis.findings:
        con.print(findings_table(analysis))
    else:
        con.print(Text("No findings."))
    if analysis.phases:
        con.print(phases_table(analysis))
    for rec in analysis.recommendations:
        con.print(Text(f"Recommendation: {rec.parameter} {rec.current} -> {rec.proposed}: {rec.reason}"), soft_wrap=True)
    for s in analysis.skipped:
        con.print(Text(f"Skipped {s.analysis}: {s.reason}", style="dim"), soft_wrap=True)
    for n in notes:
        con.print(Text(f"Note: {n}", style="dim"), soft_wrap=True)
    for f in files:
        con.print(Text(f"Wrote {f}"), soft_wrap=True)
