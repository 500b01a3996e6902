"""One run of a sweep, in its own process: ``python -m sae_report.sweep.child RUN_DIR [--config
CONFIG] [--set KEY=VALUE]...``.

What ``sae-report train CONFIG --set ... -q`` does, into the named run directory ``RUN_DIR`` (not
``train_<8 hex>``); a run directory that holds a checkpoint is resumed from it, as ``sae-report
train --resume RUN_DIR --set ...`` (only the ``--set`` items device and threads are applied then:
the rest is in its config.yaml); with ``--resume-with-config`` it is resumed with CONFIG and every
``--set`` instead (what ``tune`` does for a run it lengthens: ``trainer.train(config, resume=RUN_DIR)``).
Plain lines only; errors are one ``Error: ...`` line.

Exit codes: 0 completed, 1 diverged or failed, 2 unusable config or data, 130 interrupted (the
trainer checkpointed on SIGINT / SIGTERM).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .plan import has_checkpoint

#: ``--set`` keys applied when a run is resumed (where and how fast it trains).
RESUME_KEYS = ("device", "threads")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sae_report.sweep.child")
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--resume-with-config", action="store_true")
    args = ap.parse_args(argv)
    try:
        from trainer import CheckpointError, ConfigError, DataError, TrainConfig, config_from_run, train
        from trainer.loop import LockHeldError, RunLogError, RunWriteError
    except ImportError as exc:
        print(f"Error: the trainer needs torch: pip install 'sae-report[train]' ({exc})", file=sys.stderr)
        return 1
    run_dir: Path = args.run_dir
    try:
        if has_checkpoint(run_dir):
            print(f"resuming {run_dir} from its newest checkpoint", flush=True)
            if args.resume_with_config:
                config = TrainConfig.from_yaml(args.config, args.sets)
            else:
                config = config_from_run(run_dir, [s for s in args.sets if s.partition("=")[0].strip() in RESUME_KEYS])
            result = train(config, run_dir=run_dir, resume=run_dir, progress=False)
        else:
            result = train(TrainConfig.from_yaml(args.config, args.sets), run_dir=run_dir, progress=False)
    except (ConfigError, DataError, CheckpointError, RunLogError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except (LockHeldError, RunWriteError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # before the first step, or a second signal
        print(f"Error: {getattr(exc, 'message', None) or 'interrupted before training started'}", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, MemoryError) as exc:  # CUDA out of memory...: one line, not a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        print(f"Error: training failed: {type(exc).__name__}: {first}", file=sys.stderr)
        return 1
    if result.already_completed:
        print(f"run already completed at step {result.steps}")
        return 0
    print(f"{result.status}: {result.steps} steps, {result.tokens:,} tokens in {result.elapsed_s:.1f} s "
          f"({result.tokens_per_s:,.0f} tokens/s)")
    if result.status == "diverged":
        print("Error: the loss became non-finite: training stopped (see events.ndjson, 'nonfinite')", file=sys.stderr)
        return 1
    return 130 if result.status == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
