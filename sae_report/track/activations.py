"""Read activation sources in numpy (no torch): what the trainer reads with ``data_source="files"``.

A source is a ``.npy`` file (memory-mapped), a ``.safetensors`` file (its single tensor, or the one
named ``activations``), or a directory of such shards (read in name order). Arrays are
``[n_tokens, d_in]``. ``.pt`` files need torch and are read only when it is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runlog import RunLogError

SUFFIXES = (".npy", ".safetensors", ".pt")


@dataclass(frozen=True)
class ActivationInfo:
    """Shape of one activation source."""

    path: Path
    """The file or shard directory."""
    n_tokens: int
    """Rows over all shards."""
    d_in: int
    """Columns."""


def shards(path: Path) -> list[Path]:
    """The files of a source: itself, or a directory's activation files in name order."""
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path}: no such activation file or directory")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
        if not files:
            raise RunLogError(f"{path}: no activation shards (.npy, .safetensors, .pt) in the directory")
        return files
    if path.suffix not in SUFFIXES:
        raise RunLogError(f"{path}: not an activation file (expected .npy, .safetensors, .pt or a directory of them)")
    return [path]


def _open(file: Path) -> np.ndarray:
    try:
        if file.suffix == ".npy":
            arr = np.load(file, mmap_mode="r", allow_pickle=False)
        elif file.suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(file))
            if "activations" in tensors:
                arr = tensors["activations"]
            elif len(tensors) == 1:
                arr = next(iter(tensors.values()))
            else:
                raise RunLogError(f"{file}: {len(tensors)} tensors and none named 'activations'")
        else:
            try:
                import torch
            except ImportError:
                raise RunLogError(f"{file}: .pt activations need torch (pip install 'sae-report[train]')") from None
            arr = torch.load(file, map_location="cpu", weights_only=True).float().numpy()
    except RunLogError:
        raise
    except Exception as exc:  # numpy/safetensors/torch raise many types; the message matters
        text = str(exc).strip().splitlines()
        raise RunLogError(f"{file}: not a readable activation file ({text[0][:160] if text else type(exc).__name__})") from None
    if arr.ndim != 2:
        raise RunLogError(f"{file}: activations must be 2-D [n_tokens, d_in], got shape {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise RunLogError(f"{file}: activations must be floating point, got {arr.dtype}")
    return arr


def inspect(path: Path) -> ActivationInfo:
    """Rows and width of a source (checks every shard has the same width)."""
    arrays = [_open(f) for f in shards(path)]
    widths = {a.shape[1] for a in arrays}
    if len(widths) > 1:
        raise RunLogError(f"{path}: shards have different widths {sorted(widths)}")
    return ActivationInfo(path=Path(path), n_tokens=sum(a.shape[0] for a in arrays), d_in=widths.pop())


def load_sample(path: Path, n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows (all when fewer) chosen uniformly without replacement, float32, in file order.

    The same ``seed`` picks the same row positions for sources of equal length, so checkpoints are
    compared on the same tokens when their files line up.
    """
    arrays = [_open(f) for f in shards(path)]
    total = sum(a.shape[0] for a in arrays)
    if total == 0:
        raise RunLogError(f"{path}: no activation rows")
    rows = np.arange(total) if n >= total else np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    out, offset = [], 0
    for a in arrays:
        sel = rows[(rows >= offset) & (rows < offset + a.shape[0])] - offset
        if sel.size:
            out.append(np.asarray(a[sel], dtype=np.float32))
        offset += a.shape[0]
    sample = np.concatenate(out)
    if not np.isfinite(sample).all():
        raise RunLogError(f"{path}: activations contain NaN or inf")
    return sample
