"""`sae-report sweep`: one training per grid point, one per device slot at once, then `compare`."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from .options import TARGET_L0, slot_options
from .compare import InputError


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.command(short_help="Train one run per grid point (one per device at once), then compare them.")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--grid", "grid", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="A config key and its values (read as YAML, like --set). Repeatable: the cartesian product.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key for every run.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Sweep folder: one run directory per grid point, sweep.json, the comparison.")
@slot_options
@click.option("--target-l0", type=TARGET_L0, default=None,
              help="Target L0 for the comparison (default: the runs' common target_l0).")
def sweep(config: Path | None, grid: tuple[str, ...], overrides: tuple[str, ...], out_dir: Path, devices: str,
          parallel: int | None, target_l0: float | None) -> None:
    """Train one run per point of a grid of config values, then compare them.

    CONFIG is a training config YAML (default: the trainer's defaults). Each run is a normal run
    directory in --out, named by its values (l1_alpha_0.02), trained in its own process; its output
    goes to RUN/train.log. Stop it any time (Ctrl-C: the runs checkpoint); the same command skips
    the finished runs and resumes the others.

    \b
    Examples:
      sae-report sweep my.yaml --grid l1_alpha=0.01,0.02,0.04 \\
          --out runs/sweep --devices cpu --parallel 2
      sae-report sweep --grid l1_alpha=0.01,0.02 \\
          --grid learning_rate=1e-3,3e-3 --out runs/s2 --devices cuda:0,cuda:1
    """
    if config is not None and not config.exists():
        raise InputError(f"{config}: no such config file")
    try:
        from trainer.config import ConfigError
    except ImportError:
        raise click.ClickException("sweep needs the trainer: pip install 'sae-report[train]'") from None
    from ..sweep import SweepError, make_plan, run_sweep

    try:
        plan = make_plan(config, grid, out_dir=out_dir, overrides=overrides, parallel=parallel, target_l0=target_l0,
                         devices=devices.split(",") if devices else ())
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    except SweepError as exc:
        raise click.UsageError(str(exc)) from None
    index = {r.name: i for i, r in enumerate(plan.runs, 1)}
    n = len(plan.runs)

    def progress(event: str, run, info: str) -> None:  # noqa: ANN001 - RunOutcome
        head = f"[{index[run.name]}/{n}] {run.name}"
        if event == "skip":
            click.echo(f"{head}: already {run.status}, skipped")
        elif event == "start":
            where = f" on {run.device}" if run.device else ""
            click.echo(f"{head}: {'resuming from its checkpoint' if run.resumed else 'training'}{where} (log: {info})")
        elif run.status == "failed":
            log = out_dir / run.name / "train.log"
            click.echo(f"{head}: failed: {run.error}" + (f" (log: {log})" if log.exists() else ""))
        else:
            took = f" in {run.seconds:.1f} s" if run.seconds is not None else ""
            click.echo(f"{head}: {run.status}{took}")

    command = "sae-report " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["sweep"] else ""
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM as Ctrl-C (the children checkpoint)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run_sweep(plan, progress, command=command)
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"Interrupted: the runs checkpointed; run the same command again to resume from {out_dir}.",
                   err=True)
        raise SystemExit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    width = max(len(r.name) for r in result.runs)
    for r in result.runs:
        settled = f"settled L0 {100 * r.settled_l0:.3g}%" if r.settled_l0 is not None else "settled L0 -"
        click.echo(f"{r.name:<{width}}  {r.status:<11}  {settled}")
    shown = [str(f) for f in result.comparison_files if f.suffix in (".md", ".html")]
    click.echo(f"comparison: {' and '.join(shown)}" if shown else f"comparison: none ({result.comparison_note})")
    if result.failed:
        raise SystemExit(1)
