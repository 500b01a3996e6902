"""`sae-report fixtures`: write synthetic runs with known phases, to try the analyzer without training."""

from __future__ import annotations

from pathlib import Path

import click

from ..fixtures import SCENARIOS, WRITEUP_RUNS, scenario_table, write_run


@click.command(epilog="Scenarios:\n\n\b\n" + scenario_table())
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scenario", "scenarios", multiple=True, type=click.Choice(sorted(SCENARIOS)),
              help="Scenario to write (repeatable). Default: the write-up's three runs.")
@click.option("--steps", type=click.IntRange(min=10), default=None, help="Total steps (default: the scenario's own).")
@click.option("--rows", type=click.IntRange(min=10), default=2000, show_default=True, help="Logged rows per run.")
@click.option("--seed", type=int, default=0, show_default=True, help="Noise seed.")
def fixtures(out_dir: Path, scenarios: tuple[str, ...], steps: int | None, rows: int, seed: int) -> None:
    """Write synthetic runs with known phases into OUT_DIR (one run directory each).

    The curves follow the write-up's runs and the seed charts: collapse, recovery, oscillation,
    late spike, dormancy, plateau, secondary rise, divergence, resampling thrash.

    \b
    Example:
      sae-report fixtures demo/                  # train_0314574b, train_05555a4b, train_e01c6183
      sae-report analyze demo/train_e01c6183
      sae-report recommend demo/ --target-l0 0.05
    """
    names = scenarios or tuple(WRITEUP_RUNS)
    for i, name in enumerate(names):
        run = write_run(out_dir, name, steps=steps, seed=seed + i, rows=rows)
        click.echo(f"{run.run_dir}  ({name}: {SCENARIOS[name].description})")
