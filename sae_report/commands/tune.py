"""`sae-report tune`: train -> analyze -> recommend -> train until the settled L0 hits the target."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from .options import TARGET_L0, slot_options
from .compare import InputError


def _progress(event: str, camp, it) -> None:
    """One line per event: planned, training, result, end."""
    n = len(camp.iterations)
    if event == "plan" and it is not None:
        why = it.why if len(it.why) < 220 else it.why[:217] + "..."
        click.echo(f"[{it.index}/{camp.max_runs}] {camp.coefficient} {it.l1_alpha:.3g}: {why}")
    elif event == "start" and it is not None:
        verb = "resuming" if (camp.out_dir / it.run_id / "checkpoints").exists() else "training"
        where = f" on {it.device}" if it.device else ""
        log = f" (log: {camp.out_dir / it.run_id / 'train.log'})" if camp.where else ""  # a child's output
        click.echo(f"[{it.index}/{camp.max_runs}] {verb} {camp.out_dir / it.run_id}{where} ...{log}")
    elif event == "lengthen" and it is not None:
        x = it.lengthened[-1]
        how = "resuming from its checkpoint" if x.get("resumed", True) else "training it afresh"
        click.echo(f"[{it.index}/{camp.max_runs}] warning: total_steps {int(x['from']):,} is too short for L0 to "
                   f"settle ({it.unsettled}); lengthening {it.run_id} to {int(x['to']):,} steps ({how}; "
                   f"--max-steps {camp.max_steps:,})")
    elif event == "done" and it is not None:
        r = it.row or {}
        s = r.get("settled_l0")
        took = f" in {it.train_seconds:.0f} s" if it.train_seconds is not None else " (reused)"
        if s and getattr(it, "unsettled", ""):
            steps = f" at step {int(r['steps']):,}" if r.get("steps") else ""
            click.echo(f"[{it.index}/{camp.max_runs}] {it.run_id}: L0 not settled{steps} (second-half median "
                       f"{100 * s:.3g}%; {it.unsettled}){took}")
        elif s:
            mark = "within tolerance" if it.within else ("above target" if s > camp.target_l0 else "below target")
            click.echo(f"[{it.index}/{camp.max_runs}] {it.run_id}: settled L0 {100 * s:.3g}% "
                       f"({100 * s / camp.target_l0:.0f}% of target, {mark}){took}")
        else:
            click.echo(f"[{it.index}/{camp.max_runs}] {it.run_id}: no usable L0 ({r.get('excluded') or it.status})")
    elif event == "end":
        click.echo(f"{camp.message} ({n} run{'s' if n != 1 else ''})")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.command(short_help="Tune l1_alpha (or l0_coefficient) to reach a target L0.")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target-l0", type=TARGET_L0, required=True, help="Target L0: a fraction (0.05), a percent (5%) or a count of features (32).")
@click.option("--tolerance", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1, show_default=True,
              help="Relative tolerance on the settled L0 (0.1 = within 10% of the target).")
@click.option("--max-runs", type=click.IntRange(min=1), default=None,
              help="Run budget, counting runs already in --out (default: 5; with N runs at once, 3 rounds' "
                   "worth: 3 x N, at least 5).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/tune"),
              show_default=True, help="Campaign folder: one run per iteration, campaign.json, campaign.md/.html.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Longest a run may be lengthened to when its L0 has not settled (default: 4x total_steps; "
                   "total_steps itself: never lengthen, stop and say how many steps are needed).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@slot_options
@click.option("--progress/--no-progress", "show_progress", default=False,
              help="Show the trainer's progress bar inside each run (one run at a time only).")
def tune(config: Path | None, target_l0: float, tolerance: float, max_runs: int | None, out_dir: Path,
         max_steps: int | None, overrides: tuple[str, ...], devices: str, parallel: int | None,
         show_progress: bool) -> None:
    """Tune the sparsity coefficient until the settled L0 is within tolerance.

    CONFIG is a training config YAML (default: the trainer's defaults). Each iteration trains a run
    in --out, reads its settled L0 (second-half median), and fits the next l1_alpha (a JumpReLU
    SAE's l0_coefficient; a TopK SAE has none: k sets its L0). A run whose L0
    still trends through its second half is not settled: it is lengthened (up to --max-steps) and
    never taken as the answer. With --devices / --parallel, each round trains several runs at once
    in child processes (output in RUN/train.log): the recommendation and points across its
    interval, so a round brackets the target. Stop it any time (Ctrl-C); the same command resumes
    from what is on disk.

    \b
    Examples:
      sae-report tune --target-l0 0.05 --out runs/tune5   # synthetic data
      sae-report tune my.yaml --target-l0 5% --set total_steps=1000 --max-runs 6
      sae-report tune my.yaml --target-l0 32 --devices cuda:0,cuda:1
    """
    if config is not None and not config.exists():
        raise InputError(f"{config}: no such config file")
    try:
        from trainer import CheckpointError, DataError
        from trainer.config import ConfigError
        from trainer.loop import RunWriteError
    except ImportError:
        raise click.ClickException("tune needs the trainer: pip install 'sae-report[train]'") from None
    from ..runlog import LockHeldError
    from ..tune import TuneError
    from ..tune import tune as run_tune

    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM as Ctrl-C (the trainer checkpoints)
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        camp = run_tune(config, target_l0, tolerance=tolerance, max_runs=max_runs, out_dir=out_dir,
                        overrides=overrides, progress=_progress, trainer_progress=show_progress,
                        max_steps=max_steps, devices=devices.split(",") if devices else (), parallel=parallel)
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    except (TuneError, LockHeldError, RunWriteError, CheckpointError, DataError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo(f"\nInterrupted. Run the same command again to resume from {out_dir}.", err=True)
        raise SystemExit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    click.echo(f"report: {out_dir / 'campaign.md'} and {out_dir / 'campaign.html'}")
    if camp.status == "interrupted":
        click.echo(f"Interrupted. Run the same command again to resume from {out_dir}.", err=True)
        raise SystemExit(130)
    best = camp.best_iteration()
    if best is not None:
        click.echo(f"final choice: {best.run_id} ({camp.coefficient} {best.l1_alpha:.3g}, settled L0 "
                   f"{100 * best.row['settled_l0']:.3g}%); config in {out_dir / 'best_config.yaml'}")
    if camp.status != "reached":
        raise SystemExit(1)
