"""`sae-report compare`: runs side by side, the finding across them, the l1_alpha/L0 fit."""

from __future__ import annotations

import io
import json
import os
import sys
import textwrap
from pathlib import Path

import click

from .options import TARGET_L0
from .options import map_option


class InputError(click.ClickException):
    """Unusable input: one line, exit 2."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message


def resolve_comparison(runs: tuple[str, ...], target_l0: float | None, maps: tuple[str, ...] = (),
                       min_ce_loss_score: float | None = None):
    """Compare ``runs`` or raise ``InputError`` when none can be read."""
    from ..compare import compare_runs, expand_paths

    paths = expand_paths(list(runs))
    if not paths:
        raise InputError(f"{runs[0]}: no runs found (give run directories, globs, or a folder of runs)")
    try:
        comp = compare_runs(paths, target_l0, column_map=maps, min_ce_loss_score=min_ce_loss_score)
    except ValueError as exc:
        raise click.UsageError(f"--target-l0: {exc}") from None
    if not comp.rows:
        first = comp.unreadable[0]["reason"] if comp.unreadable else f"{runs[0]}: no runs found"
        raise InputError(first)
    return comp


#: The terminal table's columns: (key of ``display_rows``, header, importance: 0 always shown, higher
#: numbers are left out first when the table does not fit the terminal).
TABLE_COLUMNS = (
    ("id", "run", 0), ("l1_alpha", "l1_alpha", 0), ("settled_l0", "settled L0", 0), ("pct_target", "% target", 1),
    ("final_l0", "final L0", 2), ("dead", "dead", 2), ("resample", "resample", 3), ("status", "status", 3),
    ("loss", "final loss", 4), ("second_half", "2nd-half mean", 5), ("duration", "time", 6),
)
#: Without a terminal and without COLUMNS (a file): one wide layout, long lines kept whole.
FILE_WIDTH = 140


def _terminal_rows(comp) -> list[dict[str, str]]:  # noqa: ANN001 - Comparison
    """The table's cells, shortened for a terminal (an excluded run's reason is among the warnings)."""
    from ..report.formatting import display_rows

    rows = []
    for r in display_rows(comp.to_dict()["runs"], comp.target_l0):
        r = dict(r)
        r["pct_target"] = r.get("pct_target", "").split(" (")[0]
        r["duration"] = r.get("duration", "").replace(" minutes", " min").replace(" hours", " h")
        if r.get("status", "").startswith("excluded: "):
            r["status"] = "excluded"
        rows.append(r)
    return rows


def comparison_table(comp, width: int):  # noqa: ANN001, ANN201 - Comparison -> rich Table | None
    """The runs table fitted to ``width`` columns: the least important columns are left out until it
    fits (run, l1_alpha, settled L0 stay); None when even those do not fit (``print_comparison``
    then prints one block per run)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..compare.comparison import fmt_target

    rows = _terminal_rows(comp)
    columns = [c for c in TABLE_COLUMNS if any(r.get(c[0]) for r in rows)]
    measure = Console(width=10_000, file=io.StringIO())  # the table's natural width, nothing printed
    while True:
        table = Table(title=f"Runs (target L0 {fmt_target(comp.target_l0)}; settled = second-half median)",
                      box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
        for key, header, _ in columns:
            table.add_column(comp.coefficient if key == "l1_alpha" else header, no_wrap=True)
        for r in rows:
            table.add_row(*(Text(r.get(key, "")) for key, _, _ in columns))
        if measure.measure(table).maximum <= width:
            return table
        droppable = [c for c in columns if c[2] > 0]
        if not droppable:
            return None
        columns.remove(max(droppable, key=lambda c: (c[2], columns.index(c))))


def print_comparison(comp) -> None:  # noqa: ANN001 - Comparison
    """Terminal view: table, key finding, recommendation, warnings; fitted to the terminal's width
    (COLUMNS when set; a file without COLUMNS gets a 140-column layout with long lines kept whole)."""
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False)
    to_file = not console.is_terminal and not os.environ.get("COLUMNS", "").strip().isdigit()
    if to_file:
        console = Console(highlight=False, width=FILE_WIDTH)

    def say(text: str, style: str = "", indent: str = "") -> None:
        """One paragraph: whole in a file, wrapped at word boundaries on a terminal."""
        if not to_file:
            text = "\n".join(textwrap.wrap(text, max(20, console.width - 1), initial_indent=indent,
                                            subsequent_indent=indent, break_on_hyphens=False)) or text
        else:
            text = indent + text
        console.print(Text(text, style=style), soft_wrap=True)

    table = comparison_table(comp, console.width)
    rows = _terminal_rows(comp)
    if table is not None:
        console.print(table)
    else:  # too narrow for a table: one block per run
        from ..compare.comparison import fmt_target

        say(f"Runs (target L0 {fmt_target(comp.target_l0)}; settled = second-half median)", "italic")
        for r in rows:
            say(r["id"], "bold")
            fields = [f"{comp.coefficient if key == 'l1_alpha' else header} {r[key]}"
                      for key, header, _ in TABLE_COLUMNS[1:] if r.get(key)]
            say(" | ".join(fields), indent="  ")
    say("Key finding: " + comp.key_finding)
    rec = comp.recommendation
    if rec is not None:
        say(f"Recommended {rec.coefficient}: {rec.l1_alpha:.3g} (range {rec.low:.3g}-{rec.high:.3g}), "
            f"{rec.direction} relative to {rec.reference_l1_alpha:g}; predicted settled L0 "
            f"{100 * rec.predicted_l0:.3g}%", "bold")
    for w in comp.warnings:
        say("warning: " + w, "yellow")


@click.command(short_help="Compare runs: the table, the key finding, the next l1_alpha.")
@click.argument("runs", nargs=-1, required=True)
@click.option("--target-l0", type=TARGET_L0, default=None,
              help="Target L0: a fraction (0.05), a percent (5%) or a count of features (32). Default: the runs' common target_l0.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write comparison.md, comparison.html, comparison.json and l1_l0.svg here "
                   "(default: a 'comparison' folder beside the runs).")
@click.option("--no-files", is_flag=True, help="Only print; write no report files.")
@click.option("--min-ce-loss-score", type=click.FloatRange(0, 1), default=None, metavar="X",
              help="Also name the sparsest run whose spliced-in loss score (ce_loss_score) stays at or above X.")
@map_option
def compare(runs: tuple[str, ...], target_l0: float | None, as_json: bool, out_dir: Path | None,
            no_files: bool, min_ce_loss_score: float | None, maps: tuple[str, ...]) -> None:
    """Compare runs: the table, the key finding, confounders and the next l1_alpha.

    RUN may be a run directory, a metrics log, a glob, or a folder of runs.

    \b
    Example:
      sae-report compare runs/ --target-l0 0.05
      sae-report compare 'runs/train_*' --target-l0 5% --json
    """
    comp = resolve_comparison(runs, target_l0, maps, min_ce_loss_score)
    files: list[Path] = []
    if not no_files:
        from ..report.comparison import write_comparison

        if out_dir is None:
            parents = {Path(r.path).resolve().parent for r in comp.rows}
            out_dir = (parents.pop() if len(parents) == 1 else Path.cwd()) / "comparison"
        command = "sae-report compare " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["compare"] else ""
        try:
            files = write_comparison(comp, out_dir, command=command)
        except OSError as exc:
            raise click.ClickException(f"{out_dir}: cannot write the report ({exc.strerror or exc})") from None
    if as_json:
        click.echo(json.dumps(comp.to_dict(), indent=2, allow_nan=False))
        return
    print_comparison(comp)
    for f in files:
        if f.suffix in (".md", ".html"):
            click.echo(f"wrote {f}")
