"""`sae-report compare`: runs side by side, the finding across them, the l1_alpha/L0 fit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..recommend.params import TARGET_L0


class InputError(click.ClickException):
    """Unusable input: one line, exit 2."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message


def resolve_comparison(runs: tuple[str, ...], target_l0: float | None):
    """Compare ``runs`` or raise ``InputError`` when none can be read."""
    from ..compare import compare_runs, expand_paths

    paths = expand_paths(list(runs))
    if not paths:
        raise InputError(f"{runs[0]}: no runs found (give run directories, globs, or a folder of runs)")
    comp = compare_runs(paths, target_l0)
    if not comp.rows:
        first = comp.unreadable[0]["reason"] if comp.unreadable else f"{runs[0]}: no runs found"
        raise InputError(first)
    return comp


def print_comparison(comp) -> None:
    """Terminal view: table, key finding, recommendation, warnings."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..compare.comparison import fmt_target
    from ..recommend.render import display_rows

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=140)
    table = Table(title=f"Runs (target L0 {fmt_target(comp.target_l0)}; settled = second-half median)",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("run", "l1_alpha", "resample", "final L0", "settled L0", "% target", "2nd-half mean",
                "dead", "final loss", "time", "status"):
        table.add_column(col, no_wrap=col in ("run", "l1_alpha", "settled L0"))
    for r in display_rows(comp.to_dict()["runs"], comp.target_l0):
        pct = r["pct_target"].split(" (")[0]
        table.add_row(*(Text(v) for v in (r["id"], r["l1_alpha"], r["resample"], r["final_l0"], r["settled_l0"], pct,
                                          r["second_half"], r["dead"], r["loss"], r["duration"], r["status"])))
    console.print(table)
    console.print("Key finding: " + comp.key_finding, markup=False)
    rec = comp.recommendation
    if rec is not None:
        console.print(f"Recommended l1_alpha: {rec.l1_alpha:.3g} (range {rec.low:.3g}-{rec.high:.3g}), "
                      f"{rec.direction} relative to {rec.reference_l1_alpha:g}; predicted settled L0 "
                      f"{100 * rec.predicted_l0:.3g}%", markup=False, style="bold")
    for w in comp.warnings:
        console.print("warning: " + w, markup=False, style="yellow")


@click.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--target-l0", type=TARGET_L0, default=None,
              help="Target L0 as a fraction (0.05) or percent (5%). Default: the runs' common target_l0.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON on stdout.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write comparison.md, comparison.html, comparison.json and l1_l0.svg here "
                   "(default: a 'comparison' folder beside the runs).")
@click.option("--no-files", is_flag=True, help="Only print; write no report files.")
def compare(runs: tuple[str, ...], target_l0: float | None, as_json: bool, out_dir: Path | None,
            no_files: bool) -> None:
    """Compare runs: the table, the key finding, confounders and the next l1_alpha.

    RUN may be a run directory, a metrics log, a glob, or a folder of runs.

    \b
    Example:
      sae-report compare runs/ --target-l0 0.05
      sae-report compare 'runs/train_*' --target-l0 5% --json
    """
    comp = resolve_comparison(runs, target_l0)
    files: list[Path] = []
    if not no_files:
        from ..compare import write_comparison

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
