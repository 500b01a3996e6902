"""The terminal summary of an analysis (rich tables: targets, findings, phases), and ``printable``.

Everything printed here comes from the run (ids, config values, metric names, notes), so every
string goes through ``printable`` first: control characters (ANSI/OSC escape sequences, carriage
returns, newlines, bells) and bidirectional-text controls (U+202E, ...) are shown as visible
escapes (``\\x1b``, ``\\u202e``) and never reach the terminal raw.
"""

from __future__ import annotations

import math
from typing import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .analysis.claims import fmt_steps_short as fmt_step
from .analysis.claims import format_claim
from .analysis.verdict import severity_key
from .analysis.result import Analysis, Target
from .report.printable import printable

MARKS = {"ok": "✅", "warn": "⚠️", "fail": "❌", "none": ""}
SEVERITY_STYLE = {"info": "dim", "warn": "yellow", "fail": "bold red"}

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


#: Status marks for the terminal: one cell wide in every terminal font (no emoji).
TERM_MARKS = {"ok": "✓", "warn": "⚠", "fail": "✗", "info": "·", "none": ""}
STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "none": "", "info": "dim"}
#: Below this width findings print as blocks (heading line, then the sentence); at or above it, a table.
WIDE = 120


def _table(title: str, columns: Sequence[str], right: Sequence[str] = (), keep: Sequence[str] = ()) -> Table:
    """A compact table (no vertical rules); every cell folds rather than being cut with an ellipsis;
    ``keep`` columns never wrap (numbers)."""
    table = Table(title=title, title_justify="left", title_style="bold", show_lines=False, pad_edge=False,
                  box=box.SIMPLE_HEAD, collapse_padding=True)
    for col in columns:
        table.add_column(col, overflow="fold", justify="right" if col in right else "left", no_wrap=col in keep)
    return table


def targets_table(analysis: Analysis) -> Table:
    """The results table: final and settled (second-half median) values, target, % of target on the
    settled basis, and a mark only where there is a target to meet."""
    from .report.context import results_rows

    rows, basis = results_rows(analysis.to_dict())
    table = _table(f"Results (settled = second-half median; % of target on the {basis or 'settled'} L0)",
                   ("Metric", "Final", "Settled", "Target", "% of target", "Status"),
                   right=("Final", "Settled", "Target"), keep=("Final", "Settled", "Target", "% of target"))
    for r in rows:
        mark = TERM_MARKS.get(r["status"], "")
        table.add_row(_t(r["metric"]), _t(r["final"]), _t(r["settled"]), _t(r["target"]), _t(r["pct"]),
                      _t(f"{mark} {r['status_text']}".strip(), style=STATUS_STYLE.get(r["status"], "")))
    return table


def _sorted_findings(analysis: Analysis) -> list:
    return sorted(analysis.findings, key=lambda f: severity_key(f.severity, f.kind.value, f.step))


def _steps(f) -> str:
    return fmt_step(f.step) + (f"-{fmt_step(f.end_step)}" if f.end_step is not None and f.end_step != f.step else "")


def findings_table(analysis: Analysis) -> Table:
    """Findings, most severe first (fail, warn, info; then step)."""
    table = _table("Findings (most severe first)", ("", "Steps", "Kind", "Metric", "What happened"))
    for f in _sorted_findings(analysis):
        style = SEVERITY_STYLE.get(f.severity, "")
        table.add_row(_t(TERM_MARKS.get(f.severity, ""), style=style), _t(_steps(f)), _t(f.kind.value, style=style),
                      _t(f.metric), _t(f.explanation))
    return table


def _block(con: Console, head: Text, body: str, indent: int = 4) -> None:
    """A heading line, then ``body`` wrapped under it with an indent."""
    con.print(head)
    grid = Table.grid(padding=(0, 0))
    grid.add_column(width=indent, no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("", _t(body))
    con.print(grid)


def _findings_blocks(con: Console, analysis: Analysis) -> None:
    """Findings for a narrow terminal: one heading line each, the sentence wrapped under it."""
    con.print(Text("Findings (most severe first)", style="bold"))
    for f in _sorted_findings(analysis):
        style = SEVERITY_STYLE.get(f.severity, "")
        head = Text.assemble(Text(f"{TERM_MARKS.get(f.severity, '')} {f.severity:<4} ", style=style),
                             Text(printable(f.kind.value), style=style),
                             Text(printable(f"  steps {_steps(f)}  ({f.metric})")))
        _block(con, head, f.explanation)


def phases_table(analysis: Analysis) -> Table:
    table = _table("Phases", ("Phase", "Steps", "Metric"))
    for p in analysis.phases:
        table.add_row(_t(p.name), _t(f"{fmt_step(p.start_step)}-{fmt_step(p.end_step)}"), _t(p.metric))
    return table


def comparison_table(analysis: Analysis) -> Table | None:
    """The sibling runs (``Analysis.comparison``): settled L0 and % of target on the settled basis."""
    from .report.proposals import comparison_table as rows_of

    view = rows_of(analysis.comparison, analysis.run.id) if analysis.comparison else None
    if not view:
        return None
    coef = view.get("coef") or "l1_alpha"
    table = _table("Compared with the runs beside it (* this run; settled = second-half median; % of target on it)",
                   ("Run", coef, "Settled L0", "% of target", "Final L0", "Dead"),
                   right=(coef, "Settled L0", "Final L0", "Dead"),
                   keep=(coef, "Settled L0", "% of target", "Final L0", "Dead"))
    for r in view["rows"]:
        style = "bold" if r["current"] else ""
        table.add_row(_t(r["id"] + (" *" if r["current"] else ""), style=style), _t(r["l1_alpha"]),
                      _t(r["settled_l0"]), _t(r["pct_target"]), _t(r["final_l0"]), _t(r["dead"]))
    return table


def _lines(con: Console, items: Sequence[tuple[str, str, str]], indent: int = 2) -> None:
    """Label/text lines with a hanging indent (the text wraps under itself, never past the width)."""
    if not items:
        return
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column(overflow="fold")
    for label, text, style in items:
        grid.add_row(Text(" " * indent + printable(label)), _t(text, style=style))
    con.print(grid)


def print_summary(analysis: Analysis, *, files: Sequence[object] = (), notes: Sequence[str] = (),
                  console: Console | None = None) -> None:
    """The terminal summary, verdict first: the verdict with L0 and fidelity against their targets,
    the most severe finding and the next config; then the results table, the findings (most severe
    first), the phases, the comparison with sibling runs and its l1_alpha fit, the recommendations,
    skipped analyses and the files written. Fits the terminal's width (``COLUMNS``); prose wraps."""
    from .report.context import build_context

    con = console or Console(highlight=False)
    r = analysis.run
    doc = analysis.to_dict()
    ctx = build_context(doc, command="-")
    head = ctx["headline"]
    span = f"steps {fmt_step(r.first_step)}-{fmt_step(r.last_step)}" if r.first_step is not None else "no steps"
    con.print(_t(f"{r.id}  ({r.source}, {r.rows:,} rows, {span}{', sampled' if r.sampled else ''})", style="bold"))
    if ctx["run"].get("architecture"):
        con.print(_t(f"Architecture: {ctx['run']['architecture']}"))
    for n in r.notes:  # a live or unfinished run is said before anything is judged
        if n.startswith(("run in progress", "unfinished run")):
            con.print(_t(f"Note: {n}", style="yellow"))
    if analysis.verdict is not None:
        v = ctx["verdict"]
        style = STATUS_STYLE.get(v["status"], "")
        con.print(_t(f"Verdict: {TERM_MARKS.get(v['status'], '')} {v['headline']}.", style=f"bold {style}".strip()))
        items = []
        if head["l0"]:
            items.append(("L0", head["l0"], ""))
        if head["fidelity"]:
            items.append(("Fidelity", head["fidelity"], ""))
        if head["dead"]:
            items.append(("Dead features", head["dead"], ""))
        w = head["worst"]
        if w:
            items.append(("Most severe", f"{w['title']}, {w['span']} ({w['metric']}): {w['explanation']}",
                          SEVERITY_STYLE.get(v["status"], "")))
        else:
            items.append(("Findings", " ".join(v["lines"][:1]), ""))
        if head["next"]:
            items.append(("Next run", "; ".join(head["next"]), ""))
        _lines(con, items)
    if ctx["results"]:
        con.print(targets_table(analysis))
        if ctx["direction_note"]:
            _lines(con, [("Direction", ctx["direction_note"], "")], indent=0)
    if analysis.findings:
        if con.width >= WIDE:
            con.print(findings_table(analysis))
        else:
            _findings_blocks(con, analysis)
    else:
        con.print(_t("No findings."))
    if analysis.phases:
        con.print(phases_table(analysis))
    comp = comparison_table(analysis)
    if comp is not None:
        con.print(comp)
        view = ctx["comparison"] or {}
        extra = []
        if view.get("key_finding"):
            extra.append(("Key finding", view["key_finding"], ""))
        if view.get("fit"):
            fit = view["fit"]
            extra.append((f"{view.get('coef') or 'l1_alpha'} fit", f"{fit['l1_alpha']}" + (f" (range {fit['range']})" if fit["range"] else "")
                          + (f", predicted settled L0 {fit['predicted']}" if fit["predicted"] else "")
                          + (f"; {fit['direction']}" if fit["direction"] else ""), ""))
        elif view.get("no_fit"):
            extra.append((f"{view.get('coef') or 'l1_alpha'} fit", f"none: {view['no_fit']}", ""))
        for w in view.get("warnings") or []:
            extra.append(("Warning", w, "yellow"))
        _lines(con, extra, indent=0)
    if ctx["recommendations"]:
        con.print(Text("Recommendations for the next run", style="bold"))
        for rec in ctx["recommendations"]:
            head = _t(f"  {rec['parameter']}: {rec['current']} -> {rec['proposed']}"
                      + (f" (range {rec['range']})" if rec["range"] else ""), style="bold")
            _block(con, head, " ".join(x for x in (rec["reason"], f"Expected: {rec['effect']}" if rec["effect"] else "") if x))
    for s in analysis.skipped:
        con.print(_t(f"Skipped {s.analysis}: {s.reason}", style="dim"))
    for n in notes:
        con.print(_t(f"Note: {n}", style="dim"))
    for f in files:
        con.print(_t(f"Wrote {f}"), soft_wrap=True)  # a path stays whole (copyable), even past the width
