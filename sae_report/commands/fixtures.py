"""`sae-report fixtures`: write synthetic runs with known phases, to try the analyzer without training."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import click

from ..fixtures import SCENARIOS, WRITEUP_RUNS, write_run


def _scenario_lines(width: int = 78) -> str:
    """One entry per scenario for ``--help``, fitted to 80 columns (descriptions wrapped under
    themselves). Project-internal words of the descriptions (the run ids of the default trio, the
    seed numbers of the charts they were drawn from) are left out."""
    lines = []
    for s in SCENARIOS.values():
        text = re.sub(r"^train_[0-9a-f]{8}: ", "", s.description)
        text = re.sub(r" \(seed \d+\)", "", text).replace("the write-up's run", "writeup")
        lines += textwrap.wrap(f"{s.default_steps:,} steps: {text}", width - 2,
                               initial_indent=f"{s.name:<18} ", subsequent_indent=" " * 19)
    return "\n".join(lines)


@click.command(short_help="Write synthetic runs with known phases (no training needed).",
               epilog="Scenarios:\n\n\b\n" + _scenario_lines())
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(sorted(SCENARIOS)), show_choices=False,
              metavar="NAME",
              help="Scenario to write (repeatable; the names are listed below). Default: writeup, sibling_low "
                   "and sibling_mid.")
@click.option("--steps", type=click.IntRange(min=10), default=None, help="Total steps (default: the scenario's own).")
@click.option("--rows", type=click.IntRange(min=10), default=2000, show_default=True, help="Logged rows per run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")
def fixtures(out_dir: Path, scenarios: tuple[str, ...], steps: int | None, rows: int, seed: int) -> None:
    """Write synthetic runs with known phases into OUT_DIR (one run directory each).

    The curves have the shapes the analyzer looks for: collapse, recovery, oscillation, late spike,
    dormancy, plateau, secondary rise, divergence, resampling thrash. By default three runs of one
    l1_alpha sweep (scenarios writeup, sibling_low and sibling_mid: l1_alpha 0.065, 0.005 and
    0.05), enough for compare and recommend. Each run's folder is printed.

    \b
    Examples:
      sae-report fixtures demo/
      sae-report recommend demo/ --target-l0 0.05
      sae-report fixtures demo/ --scenario clean
      sae-report analyze demo/synthetic_clean
    """
    names = scenarios or tuple(WRITEUP_RUNS)
    for i, name in enumerate(names):
        run = write_run(out_dir, name, steps=steps, seed=seed + i, rows=rows)
        click.echo(f"{run.run_dir}  ({name}: {SCENARIOS[name].description})")
