"""Resuming with changed settings: what may change, what may not, and how a change is recorded.

A resumed run continues the data stream and the weights of its checkpoint. Settings that fix the
SAE's shape, the data stream (order, tokens per step) or what the dead columns count cannot change
(a one-line ``ResumeChangeError``). Every other change is recorded so the log, ``config.yaml`` and
the report agree:

- a ``config_change`` event (``key``, ``from``, ``to``) per changed key, and an ``l1_change`` /
  ``lr_change`` event when the value in force changes, at the first step trained with the new
  setting (the checkpoint's step + 1, like a schedule milestone);
- ``config.yaml`` rewritten (atomically) with the values now in force, and a ``resumes:`` list
  with one entry per resume that changed something: ``{step, checkpoint, changes: {key: {from,
  to}}}``. An entry at or after the step a later resume starts from is dropped (that stretch was
  re-run), as the reader drops those rows and events.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from sae_report.runlog import to_jsonable

from .config import ConfigError, TrainConfig

_SHAPE = "it fixes the SAE's shape"
_DATA = "it fixes the data stream (order and tokens per step)"
_SYNTH = "it fixes the synthetic data"

#: Keys a resume cannot change, and why.
FIXED_ON_RESUME: dict[str, str] = {
    "d_in": _SHAPE, "d_sae": _SHAPE, "expansion_factor": _SHAPE,
    "sae_variant": "it fixes the SAE's loss and decoder constraint",
    "batch_size": _DATA, "seed": "it fixes the data order and the resampling draws", "data_seed": _DATA,
    "data_source": _DATA, "normalize_input": "it fixes the input scale",
    "shuffle_buffer_tokens": _DATA, "shuffle_block_tokens": _DATA,
    "synth_features": _SYNTH, "synth_active": _SYNTH, "synth_power": _SYNTH, "synth_noise": _SYNTH,
    "synth_magnitude_sigma": _SYNTH, "synth_mean_norm": _SYNTH, "synth_outlier_dims": _SYNTH,
    "synth_outlier_scale": _SYNTH,
    "dead_window": "it fixes what the dead columns count",
    "init_from": "it only applies at the start of a run", "init_optimizer": "it only applies at the start of a run",
}


class ResumeChangeError(ConfigError):
    """A change a resume cannot make; ``str()`` is one line starting with the key."""


def plain(value: Any) -> Any:
    """A value as it reads back from JSON (dict keys as strings), for comparisons."""
    return json.loads(json.dumps(to_jsonable(value)))


def changes_since(checkpoint_config: Mapping[str, Any], resolved: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (value in the checkpoint, value now)}`` for the config keys that differ (keys an
    older checkpoint did not record are not compared)."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in TrainConfig.keys():
        if key in checkpoint_config and key in resolved and plain(checkpoint_config[key]) != plain(resolved[key]):
            out[key] = (plain(checkpoint_config[key]), plain(resolved[key]))
    return out


def check_fixed(changes: Mapping[str, tuple[Any, Any]], run: str) -> None:
    """Refuse the first change of a key in ``FIXED_ON_RESUME``."""
    for key in TrainConfig.keys():
        if key in changes and key in FIXED_ON_RESUME:
            old, new = changes[key]
            raise ResumeChangeError(f"{key}: cannot change when resuming {run} ({_show(old)} in its checkpoint, "
                                    f"{_show(new)} asked; {FIXED_ON_RESUME[key]}); train a new run instead", key)


def _show(value: Any) -> str:
    return "null" if value is None else (repr(value) if isinstance(value, str) else str(value))


def old_config(checkpoint_config: Mapping[str, Any]) -> TrainConfig | None:
    """The TrainConfig the checkpoint was trained with (None when it no longer validates)."""
    try:
        return TrainConfig.from_dict({k: v for k, v in checkpoint_config.items() if k in TrainConfig.keys()},
                                     source="checkpoint", ignore_unknown=True)
    except (ConfigError, TypeError, ValueError):
        return None


def updated_config(raw: Mapping[str, Any], resolved: Mapping[str, Any], *, step: int, checkpoint: str,
                   changes: Mapping[str, tuple[Any, Any]], device: str,
                   data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config.yaml`` after a resume from ``step``: the values now in force, and the history."""
    cfg = dict(raw)
    for key in TrainConfig.keys():
        if key == "device":
            if plain(cfg.get("device_requested", cfg.get("device"))) != plain(resolved["device"]):
                cfg["device_requested"] = resolved["device"]
                cfg["device"] = device
        elif plain(cfg.get(key)) != plain(resolved[key]) or key not in cfg:
            cfg[key] = resolved[key]
    if data is not None and plain(cfg.get("data")) != plain(data):
        cfg["data"] = dict(data)
    history = [r for r in (cfg.get("resumes") or []) if isinstance(r, dict)
               and isinstance(r.get("step"), int) and r["step"] < step]
    if changes:
        history.append({"step": step, "checkpoint": checkpoint,
                        "changes": {k: {"from": a, "to": b} for k, (a, b) in changes.items()}})
    if history:
        cfg["resumes"] = history
    else:
        cfg.pop("resumes", None)
    return cfg


__all__ = ["FIXED_ON_RESUME", "ResumeChangeError", "changes_since", "check_fixed", "old_config", "plain", "updated_config"]
