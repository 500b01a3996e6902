"""`sae-report harvest`: write a model's activations on a text dataset to safetensors shards.

The shards are what ``data_source: files`` reads, so one harvest serves a whole sweep. torch and
transformers are imported only when the command runs.
"""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import click


class InputProblem(click.ClickException):
    """Unusable config, model or data: one line, exit 2."""

    exit_code = 2


def _count(value: str) -> int:
    """``1000000``, ``1_000_000``, ``250K``, ``10M``, ``1.5B`` -> an int (a ValueError otherwise)."""
    m = re.fullmatch(r"\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([kKmMbBgG]?)\s*", value)
    if not m:
        raise ValueError(value)
    mult = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9}[m.group(2).lower()]
    return int(float(m.group(1).replace("_", "")) * mult)


@click.command(short_help="Write a model's activations on a text dataset to shards.")
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key (YAML value), e.g. --set hookpoint=layers.6. Repeatable.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the shards and harvest.json (a rerun with the same settings continues it).")
@click.option("--tokens", "tokens", default=None, metavar="N",
              help="Activation vectors to write, e.g. 2M (default: total_steps x batch_size of the config).")
@click.option("--shard-tokens", default="256K", show_default=True, metavar="N", help="Vectors per shard file.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default="float32", show_default=True,
              help="Precision of the stored activations.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def harvest(config: Path | None, overrides: tuple[str, ...], out: Path, tokens: str | None, shard_tokens: str,
            dtype: str, quiet: bool) -> None:
    """Run a model on a text dataset and write the activations at a hookpoint to safetensors shards
    that `sae-report train --set data_source=files --set data_path=OUT` reads.

    CONFIG holds the model keys of a training config (data_source: model, model, hookpoint, dataset,
    text_column, context_size, ...); other keys are ignored. The model runs only up to the hookpoint;
    special tokens and padding are left out; the vectors are shuffled as training would read them and
    are not normalised (training scales them). Nothing is downloaded: the model is a local folder, a
    name in the local Hugging Face cache, or an installed package that ships one.

    \b
    Examples:
      sae-report harvest my.yaml --out acts/ --tokens 10M
      sae-report harvest --set data_source=model --set model=gpt2 \\
          --set hookpoint=transformer.h.8 --set dataset=texts/ --out acts/
    """
    held: list[int] = []
    previous = _hold_signals(held)
    try:
        try:
            import torch  # noqa: F401
        except ImportError:
            click.echo("Error: harvesting needs torch: pip install 'sae-report[train,models]'", err=True)
            raise click.exceptions.Exit(1)
        from trainer import ConfigError, DataError, TrainConfig
        from trainer.shards import write_shards

        try:
            n_shard = _count(shard_tokens)
        except ValueError:
            raise InputProblem(f"--shard-tokens {shard_tokens}: must be a count like 262144 or 256K") from None
        try:
            cfg = TrainConfig.from_yaml(config, overrides)
            if tokens is None:
                n_tokens = cfg.total_steps * cfg.batch_size
            else:
                try:
                    n_tokens = _count(tokens)
                except ValueError:
                    raise InputProblem(f"--tokens {tokens}: must be a count like 2000000 or 2M") from None
            if n_tokens <= 0 or n_shard <= 0:
                raise InputProblem("--tokens and --shard-tokens must be > 0")
            if held:
                raise KeyboardInterrupt
            _restore_signals(previous)
            previous = _interrupt_on_sigterm()

            def line(i: int, n: int, done: int, rate: float) -> None:
                if not quiet:
                    click.echo(f"shard {i + 1:,}/{n:,}: {done:,} of {n_tokens:,} vectors, {rate:,.0f} vectors/s",
                               err=True)

            result = write_shards(cfg, out, tokens=n_tokens, shard_tokens=n_shard, dtype=dtype, on_shard=line)
        except (ConfigError, DataError) as exc:
            raise InputProblem(str(exc)) from None
        except OSError as exc:
            where = exc.filename or out
            raise click.ClickException(f"{where}: cannot write ({exc.strerror or exc}); the shards already "
                                       "written are kept: run the same command again to continue") from None
        except (RuntimeError, MemoryError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise click.ClickException(f"harvest failed: {type(exc).__name__}: {first}") from None
    except KeyboardInterrupt:
        click.echo(f"Error: interrupted; the complete shards in {out} are kept: run the same command again to "
                   "continue", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        _restore_signals(previous)
    kept = f" ({result.shards - result.written} were there already)" if result.written < result.shards else ""
    click.echo(f"{result.tokens:,} vectors of width {result.d_in} in {result.shards} shards{kept}: {out}")
    if result.written:
        click.echo(f"{result.tokens_per_s:,.0f} vectors/s; train on them with: sae-report train "
                   f"--set data_source=files --set data_path={out}")


def _hold_signals(held: list[int]) -> dict[int, object]:
    """Ctrl-C while torch and transformers load is held, then ends the command with one line."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}


def _interrupt_on_sigterm() -> dict[int, object]:
    """SIGTERM ends the harvest as Ctrl-C does (the complete shards are kept)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    return {signal.SIGTERM: signal.signal(signal.SIGTERM, stop)}


def _restore_signals(previous: dict[int, object]) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)  # type: ignore[arg-type]


__all__ = ["harvest"]
