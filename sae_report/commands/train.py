"""`sae-report train`: train an SAE (torch, imported only here) and optionally report on it."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

INSTALL_HINT = "the trainer needs torch: pip install 'sae-report[train]'"


class ConfigProblem(click.ClickException):
    """Unusable config or data: one line, exit code 2."""

    exit_code = 2


@click.command(short_help="Train an SAE and write a run directory (metrics, checkpoints).")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key (YAML value), e.g. --set l1_alpha=0.04. Repeatable.")
@click.option("--out", "out_dir", default="runs", show_default=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory the run directory train_<8 hex>/ is created in.")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path),
              help="Continue this run directory from its newest checkpoint (its config, plus --set).")
@click.option("--report", is_flag=True, help="Analyze the run right after training and write its report.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or progress lines (warnings still show).")
@click.option("--print-config", is_flag=True,
              help="Print the resolved config (CONFIG or --resume RUN, plus --set, defaults filled in) as YAML "
                   "and exit; trains nothing.")
@click.option("--list-keys", is_flag=True, help="List every config key with its type, default and meaning, and exit.")
def train(config: Path | None, overrides: tuple[str, ...], out_dir: Path, resume: Path | None, report: bool,
          quiet: bool, print_config: bool, list_keys: bool) -> None:
    """Train a sparse autoencoder and write a run directory (metrics, events, checkpoints, stats).

    Without CONFIG, trains the built-in default: a small SAE on synthetic activations with known
    features (about a minute on a laptop CPU). Config keys: --list-keys.

    On a terminal a progress bar shows step/total, ETA, L0, dead %, loss and tokens/s; with stderr
    redirected (SLURM, nohup) a plain line every 10% of the run and at least once a minute.

    \b
    Examples:
      sae-report train --report
      sae-report train my_config.yaml --set l1_alpha=0.04
      sae-report train --set data_source=files --set data_path=acts/
      sae-report train my_config.yaml --print-config > resolved.yaml
      sae-report train --resume runs/my_run
    """
    # Ctrl-C / SIGTERM while torch loads (a second or so) are held until it has loaded, then end the
    # command with one line: an import cut short by KeyboardInterrupt can leave the interpreter
    # exiting by SIGINT whatever we catch. The trainer installs its own handlers.
    held: list[int] = []
    previous = _hold_signals(held)
    try:
        try:
            import torch  # noqa: F401
        except ImportError:
            click.echo(f"Error: {INSTALL_HINT}", err=True)
            raise click.exceptions.Exit(1)
        from trainer import CheckpointError, ConfigError, DataError, TrainConfig, config_from_run
        from trainer import train as run_training
        from trainer.distributed import PeerLostError, env_world
        from trainer.loop import LockHeldError, ResumeChangeError, RunLogError, RunWriteError, resolve_config

        if list_keys:
            click.echo(_list_keys(TrainConfig))
            return
        if resume is not None and config is not None:
            raise click.UsageError("give either CONFIG or --resume RUN (a resumed run keeps its own config)")
        try:
            if resume is not None:
                if not resume.is_dir():
                    raise ConfigError(f"{resume}: no such run directory")
                cfg = config_from_run(resume, overrides)
            else:
                cfg = TrainConfig.from_yaml(config, overrides)
            if print_config:
                click.echo(_config_yaml(resolve_config(cfg), config, resume), nl=False)
                return
            if held:
                raise KeyboardInterrupt
            result = run_training(cfg, out_dir, resume=resume, progress=not quiet)
        except ResumeChangeError as exc:  # one line, prefixed with where the change came from
            raise ConfigProblem(f"{_origin(exc.key, overrides, resume)}: {exc}") from None
        except (ConfigError, DataError, CheckpointError, RunLogError) as exc:
            if env_world()[1] != 0:  # torchrun: every rank found the same problem; rank 0 says it
                raise click.exceptions.Exit(ConfigProblem.exit_code) from None
            raise ConfigProblem(str(exc)) from None
        except (LockHeldError, RunWriteError, PeerLostError) as exc:
            raise click.ClickException(str(exc)) from None
        except (OSError, RuntimeError, MemoryError) as exc:  # CUDA out of memory...: never a traceback
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise click.ClickException(f"training failed: {type(exc).__name__}: {first}") from None
    except KeyboardInterrupt as exc:  # before the first step, or a second Ctrl-C: one line, what is on disk
        message = getattr(exc, "message", None) or "interrupted before training started; nothing written"
        click.echo(f"Error: {message}", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        _restore_signals(previous)

    if env_world()[1] != 0:  # torchrun: rank 0 reports; the other ranks only set the exit code
        if not result.already_completed and result.status in ("interrupted", "diverged"):
            _leave_group_process(130 if result.status == "interrupted" else 1)
        _leave_group_process(0)
    if result.already_completed:
        rebuilt = "; summary.json rebuilt from the log (it was missing or out of date)" if result.summary_rebuilt else ""
        unused = [k for k in dict.fromkeys(o.split("=", 1)[0].strip() for o in overrides) if k != "total_steps"]
        note = (f" (not applied: {', '.join(unused)}; raise total_steps above {result.steps} to train further)"
                if unused else "")
        click.echo(f"run already completed at step {result.steps}{rebuilt}; nothing {'else ' if rebuilt else ''}to do{note}")
        if report:
            _report_or_interrupt(result.run_dir)
        if env_world()[0] > 1:
            _leave_group_process(0)
        return
    click.echo(f"{result.status}: {result.steps} steps, {result.tokens:,} tokens in {result.elapsed_s:.1f} s "
               f"({result.tokens_per_s:,.0f} tokens/s)")
    click.echo(f"run directory: {result.run_dir}")
    if result.status == "interrupted":
        click.echo(f"resume with: sae-report train --resume {result.run_dir}")
    if result.status == "diverged":
        click.echo("the loss became non-finite: training stopped (see events.ndjson, 'nonfinite')", err=True)
    if report:
        _report_or_interrupt(result.run_dir)
    code = 130 if result.status == "interrupted" else 1 if result.status == "diverged" else 0
    if env_world()[0] > 1:
        _leave_group_process(code)
    if code:
        raise click.exceptions.Exit(code)


def _leave_group_process(code: int) -> None:
    """End a torchrun rank now that its run is on disk (every file written, the process group left):
    flush, then ``os._exit``, skipping the interpreter's teardown, where gloo's threads can abort the
    process after a clean run ("terminate called without an active exception", seen about once in 40
    two-rank runs on CPU), which torchrun reports as a failed job."""
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _config_yaml(cfg, config: Path | None, resume: Path | None) -> str:  # noqa: ANN001 - TrainConfig
    """``--print-config``: the resolved keys as YAML that ``sae-report train FILE`` reads back."""
    import yaml

    source = f"--resume {resume}" if resume is not None else (str(config) if config is not None else "the defaults")
    head = [f"# sae-report train --print-config: {source} with --set applied, every key resolved",
            "# train it with: sae-report train THIS_FILE"]
    if cfg.device == "auto":
        head.append("# device auto: cuda when torch sees a GPU, else cpu")
    if not cfg.threads:
        head.append("# threads 0: as many CPU threads as there are free cores at the start")
    body = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None, width=100)
    return "\n".join(head) + "\n" + body


def _type_name(hint) -> str:  # noqa: ANN001 - a typing hint
    """``float``, ``int | None``, ``standard | april2024``, ``dict[int, float] | None``."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    return getattr(hint, "__name__", str(hint))


def _list_keys(config_class) -> str:  # noqa: ANN001 - TrainConfig
    """``--list-keys``: every key with its type and default on one line, its docstring wrapped below."""
    import dataclasses
    import shutil
    import textwrap
    import typing

    from trainer.docs_keys import field_docs

    width = max(40, min(shutil.get_terminal_size((80, 24)).columns, 100) - 1)
    docs, hints = field_docs(), typing.get_type_hints(config_class)
    out: list[str] = []
    for f in dataclasses.fields(config_class):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = "null" if default is None else ("true" if default is True else "false" if default is False else default)
        out.append(f"{f.name}: {_type_name(hints[f.name])} = {shown}")
        out.extend(textwrap.wrap(docs.get(f.name, ""), width, initial_indent="    ", subsequent_indent="    ",
                                 break_on_hyphens=False))
    out.append("")
    out.extend(textwrap.wrap("Set a key in a CONFIG YAML file or with --set KEY=VALUE (the value is read as YAML). "
                             "Other tools' names for these keys are accepted too (SAELens lr, l1_coefficient, ...): "
                             "see docs/trainer.md.", width))
    return "\n".join(out)


def _hold_signals(held: list[int]) -> dict[int, object]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict[int, object]) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)  # type: ignore[arg-type]


def _origin(key: str | None, overrides: tuple[str, ...], resume: Path | None) -> str:
    """Where a refused resume change came from: the ``--set`` that asked for it, else config.yaml."""
    for item in reversed(overrides):
        if item.split("=", 1)[0].strip() == key:
            return f"--set {item}"
    return str(Path(resume) / "config.yaml") if resume is not None else "config"


def _report_or_interrupt(run_dir: Path) -> None:
    try:
        _report(run_dir)
    except KeyboardInterrupt:
        click.echo(f"Error: interrupted while writing the report; {run_dir} is as training left it "
                   f"(write the report with: sae-report analyze {run_dir})", err=True)
        raise click.exceptions.Exit(130) from None


def _report(run_dir: Path) -> None:
    """Analyze the run with the pipeline (as `sae-report analyze RUN`)."""
    from sae_report.console import print_summary
    from sae_report.pipeline import OutputError, analyze_path
    from sae_report.runlog import RunLogError

    try:
        result = analyze_path(run_dir, command=f"sae-report analyze {run_dir}")
    except (RunLogError, OutputError) as exc:
        raise click.ClickException(f"the run was trained, but its report failed: {exc}") from None
    print_summary(result.analysis, files=result.files, notes=result.notes)

