"""The sae-report SAE trainer (needs torch): ``TrainConfig`` + ``train`` -> a run directory.

    from trainer import TrainConfig, train
    result = train(TrainConfig.from_yaml("examples/writeup_iter2.yaml", ["total_steps=2000"]))
    print(result.run_dir, result.status, result.final_l0_frac)

See docs/trainer.md for every config key, the loss normalisation, resampling and the checkpoint layout.
"""

from .config import ConfigError, TrainConfig

#: Names that need torch, loaded on first use, so that ``trainer.config`` (every key, its type, default
#: and docstring) imports without torch: the analyzer and the command line read it.
_LAZY = {"Checkpoint": "checkpoint", "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint",
         "DataError": "data", "TrainResult": "loop", "config_from_run": "loop", "train": "loop"}

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "config_from_run",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "Checkpoint",
    "load_checkpoint",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trainer' has no attribute {name!r}")
