"""The built-in language model for SAE-Track: a small byte-level transformer trained on Python's
own documentation (``pydoc_data.topics``), with checkpoints and residual-stream activations.

    from trainer.lm import LMConfig, build_lm_series
    series = build_lm_series(LMConfig(steps=1500, n_checkpoints=8))
    series.acts_paths   # one activations.npy per checkpoint, in training order
"""

from .checkpoints import LMCheckpoint, LMConfig, LMSeries, build_lm_series, default_cache_dir, load_series

__all__ = ["LMCheckpoint", "LMConfig", "LMSeries", "build_lm_series", "default_cache_dir", "load_series"]
