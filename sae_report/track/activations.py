"""SAE-Track's view of activation sources: their shape and a seeded sample of rows, read with the
run format's one reader (``sae_report.runlog.activations``: .npy, .safetensors, .pt, or a folder
of shards, as ``data_source: files`` reads them). No torch unless a shard needs it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runlog import RunLogError
from ..runlog.activations import open_source


@dataclass(frozen=True)
class ActivationInfo:
    """Shape of one activation source."""

    path: Path
    """The file or shard directory."""
    n_tokens: int
    """Rows over all shards."""
    d_in: int
    """Columns."""


def inspect(path: Path) -> ActivationInfo:
    """Rows and width of a source (checks every shard has the same width)."""
    shards = open_source(path)
    return ActivationInfo(path=Path(path), n_tokens=sum(s.n for s in shards), d_in=shards[0].d_in)


def load_sample(path: Path, n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows (all when fewer) chosen uniformly without replacement, float32, in file order.

    The same ``seed`` picks the same row positions for sources of equal length, so checkpoints are
    compared on the same tokens when their files line up.
    """
    shards = open_source(path)
    total = sum(s.n for s in shards)
    rows = np.arange(total) if n >= total else np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    out, offset = [], 0
    for s in shards:
        sel = rows[(rows >= offset) & (rows < offset + s.n)] - offset
        if sel.size:
            block = s.read(int(sel[0]), int(sel[-1]) + 1)  # one contiguous read per shard, then the rows
            out.append(np.asarray(block[sel - sel[0]], dtype=np.float32))
        offset += s.n
    sample = np.concatenate(out)
    if not np.isfinite(sample).all():
        raise RunLogError(f"{path}: activations contain NaN or inf")
    return sample
