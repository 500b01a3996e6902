"""Activation files, read one way by the trainer (``data_source: files``) and by SAE-Track.

A source is a ``.npy`` file (memory-mapped), a ``.safetensors`` file (its single tensor, or the one
named ``activations``), a ``.pt`` / ``.pth`` file (a tensor, or a dict with one tensor or one named
``activations``; needs torch), or a directory of such shards (read in name order). Arrays are float
``[n_tokens, d_in]`` (fp16, bf16, fp32, fp64). ``open_shard`` reads only the header: rows come from
``Shard.read(start, stop)`` as float32, numpy (``framework="numpy"``) or torch (``"pt"``: bf16
safetensors and .pt shards read without a numpy copy). Every problem is one ``ActivationError``
line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from .schema import RunLogError

#: File suffixes of activation shards.
SHARD_SUFFIXES = (".npy", ".safetensors", ".pt", ".pth")
_FLOAT_SAFETENSORS = ("F16", "BF16", "F32", "F64")


class ActivationError(RunLogError):
    """An activation source that cannot be read (the message names the file)."""


@dataclass(frozen=True)
class Shard:
    """One activation file, opened lazily."""

    path: Path
    """The file."""
    n: int
    """Rows (tokens)."""
    d_in: int
    """Columns."""
    read: Callable[[int, int], Any]
    """``read(start, stop)``: rows ``[start, stop)`` as float32 (numpy or torch, per ``open_shard``)."""


def shard_files(path: str | Path) -> list[Path]:
    """The files of a source: itself, or a directory's activation files in name order."""
    root = Path(path)
    if not root.exists():
        raise ActivationError(f"{root}: no such file or directory")
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in SHARD_SUFFIXES and p.is_file())
        if not files:
            raise ActivationError(f"{root}: no activation shards ({', '.join(SHARD_SUFFIXES)}) in the directory")
        return files
    if root.suffix.lower() not in SHARD_SUFFIXES:
        raise ActivationError(f"{root}: not an activation file ({', '.join(SHARD_SUFFIXES)}) or directory")
    return [root]


def open_shard(path: Path, framework: Literal["numpy", "pt"] = "numpy") -> Shard:
    """Open one activation file (its header; rows are read by ``Shard.read``)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, ok = arr.shape, np.issubdtype(arr.dtype, np.floating)
            if framework == "pt":
                import torch

                reader = lambda a, b, arr=arr: torch.from_numpy(np.array(arr[a:b], dtype=np.float32))  # noqa: E731
            else:
                reader = lambda a, b, arr=arr: np.array(arr[a:b], dtype=np.float32)  # noqa: E731
        elif suffix == ".safetensors":
            from safetensors import safe_open

            fh = safe_open(str(path), framework="pt" if framework == "pt" else "numpy")
            names = list(fh.keys())
            name = names[0] if len(names) == 1 else ("activations" if "activations" in names else None)
            if name is None:
                raise ActivationError(f"{path}: holds tensors {names}; name the activations tensor 'activations'")
            sl = fh.get_slice(name)
            shape = tuple(sl.get_shape())
            ok = sl.get_dtype() in _FLOAT_SAFETENSORS
            if framework == "pt":
                import torch

                reader = lambda a, b, sl=sl: sl[a:b].to(torch.float32)  # noqa: E731
            elif sl.get_dtype() == "BF16":
                raise ActivationError(f"{path}: bfloat16 activations need torch (pip install 'sae-report[train]')")
            else:
                reader = lambda a, b, sl=sl: np.asarray(sl[a:b], dtype=np.float32)  # noqa: E731
        else:
            try:
                import torch
            except ImportError:
                raise ActivationError(f"{path}: .pt activations need torch (pip install 'sae-report[train]')") from None
            obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
            if isinstance(obj, dict):
                tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
                if len(tensors) == 1:
                    obj = next(iter(tensors.values()))
                elif "activations" in tensors:
                    obj = tensors["activations"]
                else:
                    raise ActivationError(f"{path}: holds {sorted(tensors)}; name the activations tensor 'activations'")
            if not isinstance(obj, torch.Tensor):
                raise ActivationError(f"{path}: expected a tensor [n_tokens, d_in], got {type(obj).__name__}")
            shape, ok = tuple(obj.shape), obj.is_floating_point()
            if framework == "pt":
                reader = lambda a, b, t=obj: t[a:b].to(torch.float32)  # noqa: E731
            else:
                reader = lambda a, b, t=obj: t[a:b].to(torch.float32).numpy()  # noqa: E731
    except ActivationError:
        raise
    except Exception as exc:  # numpy/safetensors/torch raise many types; one line is what matters
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ActivationError(f"{path}: cannot read activations ({msg})") from None
    if len(shape) != 2 or not ok:
        raise ActivationError(f"{path}: expected a 2-D float array [n_tokens, d_in], got shape {list(shape)}")
    if shape[0] == 0:
        raise ActivationError(f"{path}: holds no tokens")
    return Shard(path, int(shape[0]), int(shape[1]), reader)


def open_source(path: str | Path, framework: Literal["numpy", "pt"] = "numpy") -> list[Shard]:
    """Every shard of a source, checked to have one width."""
    shards = [open_shard(p, framework) for p in shard_files(path)]
    widths = {s.d_in for s in shards}
    if len(widths) > 1:
        detail = ", ".join(f"{s.path.name}: {s.d_in}" for s in shards[:4])
        raise ActivationError(f"{path}: shards have different widths ({detail})")
    return shards


__all__ = ["SHARD_SUFFIXES", "ActivationError", "Shard", "open_shard", "open_source", "shard_files"]
