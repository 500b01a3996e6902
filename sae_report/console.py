"""The terminal summary of an analysis (rich tables: targets, findings, phases), and ``printable``.

Everything printed here comes from the run (ids, config values, metric names, notes), so every
string goes through ``printable`` first: control characters (ANSI/OSC escape sequences, carriage
returns, newlines, bells) and bidirectional-text controls (U+202E, ...) are shown as visible
escapes (``\\x1b``, ``\\u202e``) and never reach the terminal raw.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .analysis.claims import fmt_steps_short as fmt_step
from .analysis.claims import format_claim
from .analysis.result import Analysis, Target

MARKS = {"ok": "✅", "warn": "⚠️", "fail": "❌", "none": ""}
SEVERITY_STYLE = {"info": "dim", "warn": "yellow", "fail": "bold red"}

#: Bidirectional-text controls: they reorder the text around them (U+202E shows "abc" as "cba").
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_CONTROL_CLASS = "\x00-\x08\x0b-\x1f\x7f-\x9f" + BIDI_CONTROLS
#: What ``printable`` escapes for a terminal: every C0/C1 control but tab (newlines too: one line stays one line).
TERMINAL_UNSAFE = re.compile(f"[\n{_CONTROL_CLASS}]")
#: What ``printable(text, keep_newlines=True)`` escapes (report files: their own newlines and tabs are kept).
DOCUMENT_UNSAFE = re.compile(f"[{_CONTROL_CLASS}]")


_NAMED = {"\n": "\\n", "\r": "\\r"}


def _escape_char(m: re.Match[str]) -> str:
    if m.group(0) in _NAMED:
        return _NAMED[m.group(0)]
    c = ord(m.group(0))
    return f"\\x{c:02x}" if c <= 0xFF else f"\\u{c:04x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with control and bidi characters written as visible escapes (``\\x1b``, ``\\u202e``)."""
    s = str(text)
    return (DOCUMENT_UNSAFE if keep_newlines else TERMINAL_UNSAFE).sub(_escape_char, s)


def unsafe_characters(texts: Iterable[str], *, keep_newlines: bool = True) -> set[str]:
    """The control and bidi characters that ``printable`` would escape in ``texts``."""
    pattern = DOCUMENT_UNSAFE if keep_newlines else TERMINAL_UNSAFE
    found: set[str] = set()
    for t in texts:
        found.update(pattern.findall(t))
    return found


def _t(text: object, style: str = "") -> Text:
    return Text(printable(text), style=style)


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
        table.add_row(_t(t.metric), _t(_fmt_result(t, analysis.run.d_sae)), _t(t.comparison or "-"),
                      _t(f"{MARKS[t.status]}{pct}"))
    return table


def findings_table(analysis: Analysis) -> Table:
    table = Table(title="Findings", title_justify="left", show_lines=False)
    for col in ("Steps", "Kind", "Metric", "What happened"):
        table.add_column(col, overflow="fold")
    for f in analysis.findings:
        steps = fmt_step(f.step) + (f"-{fmt_step(f.end_step)}" if f.end_step is not None and f.end_step != f.step else "")
        why = f.explanation
        table.add_row(_t(steps), _t(f.kind.value, style=SEVERITY_STYLE.get(f.severity, "")), _t(f.metric), _t(why))
    return table


def phases_table(analysis: Analysis) -> Table:
    table = Table(title="Phases", title_justify="left")
    for col in ("Phase", "Steps", "Metric"):
        table.add_column(col)
    for p in analysis.phases:
        table.add_row(_t(p.name), _t(f"{fmt_step(p.start_step)}-{fmt_step(p.end_step)}"), _t(p.metric))
    return table


def print_summary(analysis: Analysis, *, files: Sequence[object] = (), notes: Sequence[str] = (),
                  console: Console | None = None) -> None:
    """Print the targets, findings and phases tables, skipped analyses and the files written."""
    con = console or Console()
    r = analysis.run
    span = f"steps {fmt_step(r.first_step)}-{fmt_step(r.last_step)}" if r.first_step is not None else "no steps"
    con.print(_t(f"{r.id}  ({r.source}, {r.rows:,} rows, {span}{', sampled' if r.sampled else ''})", style="bold"),
              soft_wrap=True)
    if analysis.verdict is not None:
        v = analysis.verdict
        head = {"ok": "No problems found", "warn": "Worth acting on", "fail": "Not usable"}[v.status]
        con.print(_t(f"Verdict: {head}. " + " ".join(s.text for s in v.sentences[:1]),
                       style=SEVERITY_STYLE.get("fail" if v.status == "fail" else "warn" if v.status == "warn" else "info", "")),
                  soft_wrap=True)
    if analysis.targets:
        con.print(targets_table(analysis))
    if analysis.findings:
        con.print(findings_table(analysis))
    else:
        con.print(_t("No findings."))
    if analysis.phases:
        con.print(phases_table(analysis))
    for rec in analysis.recommendations:
        con.print(_t(f"Recommendation: {rec.parameter} {rec.current} -> {rec.proposed}: {rec.reason}"), soft_wrap=True)
    for s in analysis.skipped:
        con.print(_t(f"Skipped {s.analysis}: {s.reason}", style="dim"), soft_wrap=True)
    for n in notes:
        con.print(_t(f"Note: {n}", style="dim"), soft_wrap=True)
    for f in files:
        con.print(_t(f"Wrote {f}"), soft_wrap=True)
