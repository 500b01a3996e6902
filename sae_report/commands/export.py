"""`sae-report export`: a trained SAE written as a SAELens SAE folder (torch imported only here)."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import click

INSTALL_HINT = "export needs torch: pip install 'sae-report[train]'"


class InputProblem(click.ClickException):
    """Unusable input (no checkpoint, a corrupt one, a variant without export): one line, exit 2."""

    exit_code = 2


@click.command(short_help="Save a trained SAE as a SAELens SAE folder.")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), default=None,
              help="Folder to write (default: CHECKPOINT/saelens). An earlier export there is replaced.")
@click.option("--checkpoint", "checkpoint", default=None, metavar="NAME",
              help="final or step_N (default: final, else the newest checkpoint).")
@click.option("--format", "fmt", type=click.Choice(["saelens"]), default="saelens", show_default=True,
              help="Output format.")
def export(run: Path, out: Path | None, checkpoint: str | None, fmt: str) -> None:
    """Save the SAE of RUN (a run directory or a checkpoint folder) in SAELens'
    format: cfg.json + sae_weights.safetensors, loaded by SAELens 6 with
    sae_lens.SAE.load_from_disk(FOLDER).

    The input scale used in training is folded into the weights, so the folder
    reads raw activations. Training already writes checkpoints/final/saelens/.

    \b
    Examples:
      sae-report export runs/my_run
      sae-report export runs/my_run --checkpoint step_2000 --out sae_2000/
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        try:
            import torch  # noqa: F401
        except ImportError:
            click.echo(f"Error: {INSTALL_HINT}", err=True)
            raise click.exceptions.Exit(1)
        from sae_report.runlog import LockHeldError, lock_folder
        from trainer.checkpoint import CheckpointError, checkpoint_name, find_checkpoint
        from trainer.export import EXPORT_DIR, ExportError, export_run

        target = out
        try:
            source = _checkpoint_dir(run, checkpoint, find_checkpoint, checkpoint_name, CheckpointError)
            target = out if out is not None else source / EXPORT_DIR
            lock = None
            if (run / "config.yaml").is_file() and _inside(target, run):
                lock = lock_folder(run, command="sae-report export")  # one writer of a run at a time
            try:
                done = export_run(source, target)
            finally:
                if lock is not None:
                    lock.release()
        except (CheckpointError, ExportError) as exc:
            raise InputProblem(str(exc)) from None
        except LockHeldError as exc:
            raise click.ClickException(f"{exc}; or write elsewhere with --out DIR") from None
        except OSError as exc:
            where = exc.filename or target
            raise click.ClickException(f"{where}: cannot write ({exc.strerror or exc})") from None
    except KeyboardInterrupt:
        click.echo("Error: export interrupted; nothing written (an earlier export is as it was)", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    click.echo(f"wrote {done.path} (SAELens {done.architecture} SAE from sae_variant {done.variant}, "
               f"d_in {done.d_in}, d_sae {done.d_sae}, float32)")
    click.echo(f"input scale {done.input_scale:.6g} folded into the weights: it reads raw activations")
    if done.hook_name or done.model_name:
        click.echo(f"model {done.model_name or '?'}, hook {done.hook_name or '?'}")
    click.echo(f'load with: sae_lens.SAE.load_from_disk("{done.path}")')


def _checkpoint_dir(run: Path, name: str | None, find_checkpoint, checkpoint_name, error) -> Path:  # type: ignore[no-untyped-def]
    """The checkpoint folder to export: RUN itself, RUN/checkpoints/NAME, final, else the newest."""
    if not run.exists():
        raise error(f"{run}: no such run directory or checkpoint")
    if (run / "cfg.json").is_file() and not (run / "sae.safetensors").is_file():
        raise error(f"{run}: already a SAELens SAE folder (export reads a run directory or one of its checkpoints)")
    root = run / "checkpoints"
    if name is None:
        if (root / "final" / "sae.safetensors").is_file():
            return root / "final"
        return find_checkpoint(run)
    if (run / "sae.safetensors").is_file() or not root.is_dir():
        raise error(f"{run}: --checkpoint {name} needs a run directory (one with checkpoints/)")
    m = re.fullmatch(r"(?:step_)?(\d+)", name.strip())
    folder = root / (checkpoint_name(int(m.group(1))) if m else name.strip())
    if not (folder / "sae.safetensors").is_file() or folder.parent != root:
        have = sorted(p.name for p in root.iterdir() if (p / "sae.safetensors").is_file())
        raise error(f"{folder}: no such checkpoint (there: {', '.join(have) or 'none'})")
    return folder


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
