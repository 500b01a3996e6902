"""The run directory's names and constants, its error type, and atomic JSON-safe writes."""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import polars as pl

SCHEMA_VERSION = 1

#: Per-step metric columns, in file order. ``step`` is an integer, everything else Float64.
METRIC_COLUMNS: tuple[str, ...] = (
    "step",
    "tokens",
    "loss",
    "mse",
    "l1",
    "l1_alpha",
    "aux_loss",
    "l0_coefficient",
    "k",
    "lr",
    "l0",
    "l0_frac",
    "dead",
    "dead_frac",
    "explained_variance",
    "l2_ratio",
    "density_below_1e-5",
    "density_below_1e-6",
    "mean_log10_density",
    "dense_features",
    "ce_loss_clean",
    "ce_loss_with_sae",
    "ce_loss_ablated",
    "ce_loss_score",
    "grad_norm",
    "elapsed_s",
)

#: Event kinds the trainer writes. Readers keep unknown kinds as they are.
EVENT_KINDS: tuple[str, ...] = (
    "start",
    "resample",
    "lr_change",
    "l1_change",
    "k_change",
    "checkpoint",
    "nonfinite",
    "resume",
    "config_change",
    "interrupt",
    "end",
)

#: Event kinds that are interventions a finding may coincide with.
INTERVENTION_KINDS: tuple[str, ...] = ("resample", "lr_change", "l1_change", "resume")

CONFIG_FILE = "config.yaml"
METRICS_DIR = "metrics"
EVENTS_FILE = "events.ndjson"
SUMMARY_FILE = "summary.json"
STATS_DIR = "stats"
CHECKPOINTS_DIR = "checkpoints"

_PART_RE = re.compile(r"^part-(\d+)\.(parquet|csv)$")
_METRIC_SCHEMA = {c: (pl.Int64 if c == "step" else pl.Float64) for c in METRIC_COLUMNS}


class RunLogError(Exception):
    """A run directory or log file that cannot be used. The message is one line naming the file."""


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp makes 0600; a report is meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Make numpy scalars, paths, tuples and non-finite floats JSON-safe (non-finite -> string)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    if isinstance(value, Path):
        return str(value)
    return value


def finite_float(value: Any) -> float | None:
    """``value`` as a finite float (config values, parsed cells), else None; booleans are not numbers."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


