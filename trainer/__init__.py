"""The sae-report SAE trainer (needs torch): ``TrainConfig`` + ``train`` -> a run directory.

    from trainer import TrainConfig, train
    result = train(TrainConfig.from_yaml("examples/writeup_iter2.yaml", ["total_steps=2000"]))
    print(result.run_dir, result.status, result.final_l0_frac)

See docs/trainer.md for every config key, the loss normalisation, resampling and the checkpoint layout.
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .config import ConfigError, TrainConfig
from .data import DataError
from .train import TrainResult, config_from_run, train

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
