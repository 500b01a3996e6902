"""`sae-report import`: convert a W&B / TensorBoard / MLflow / CSV log into a run directory."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from ..ingest import SOURCES, mapped_columns
from ..ingest.convert import (
    ImportWriteError,
    OutputExistsError,
    OutputInsideInputError,
    import_all,
    import_run,
)
from ..runlog import LockHeldError, RunLogError
from .options import map_option

SOURCE_CHOICES = ["auto", "sae-report", *dict.fromkeys(SOURCES)]


@click.command(name="import", short_help="Convert a W&B, TensorBoard, MLflow or CSV log into a run.")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Run directory to write (new or empty; --force replaces an existing one).")
@click.option("--source", type=click.Choice(SOURCE_CHOICES), default="auto", show_default=True,
              help="What wrote PATH; auto detects it.")
@click.option("--run", "run_id", default=None, metavar="ID",
              help="Run to read from a store holding several (W&B dir, MLflow store, TensorBoard logdir).")
@click.option("--all", "all_runs", is_flag=True,
              help="Import every run of the store, each into --out/<run id>/ (a sweep -> sibling runs).")
@click.option("--force", is_flag=True, help="Replace --out (with --all: each run's folder) if it exists.")
@map_option
def import_(path: Path, out: Path, source: str, run_id: str | None, all_runs: bool, force: bool,
            maps: tuple[str, ...]) -> None:
    """Convert the log at PATH into a sae-report run directory at --out (PATH is only read).

    \b
    Examples:
      sae-report import wandb/offline-run-20260101_120000-abc123 --out runs/wb
      sae-report import mlruns --run 571e5588 --out runs/l1_5
      sae-report import mlflow.db --run sweep-3 --out runs/sweep3
      sae-report import tb_logs/ --source tensorboard --out runs/tb
      sae-report import tb_logs/ --map loss/total=loss --out runs/tb
      sae-report import wandb_export.csv --out runs/exported
      sae-report import mlruns --all --out runs/sweep   # runs/sweep/<id>/
    """
    if all_runs and run_id:
        raise click.UsageError("--run and --all exclude each other")
    results = []
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM as Ctrl-C: the temporary folder is removed, --out stays as it was.
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with mapped_columns(maps):
            if all_runs:
                results = import_all(path, out, source=source, force=force)
            else:
                results = [import_run(path, out, source=source, run=run_id, force=force)]
    except RunLogError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    except OutputInsideInputError as exc:
        raise click.UsageError(str(exc)) from None
    except (OutputExistsError, ImportWriteError, LockHeldError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt as exc:
        done = getattr(exc, "done", None) or []
        for result in done:
            _say(result)
        kept = f"{out} is as it was" if not done else f"{len(done)} run(s) written, the others not"
        click.echo(f"Error: import interrupted; {kept} (no temporary folder left)", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    for result in results:
        _say(result)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say(result) -> None:  # noqa: ANN001 - ImportResult
    data = result.data
    sampled = "SAMPLED (not every step)" if data.sampled else "full history"
    click.echo(f"Imported {data.source} run {data.run_id}: {result.rows} rows, "
               f"columns {', '.join(result.columns[1:])}; {sampled}")
    click.echo(f"Wrote {result.run_dir}  (next: sae-report analyze {result.run_dir})")
