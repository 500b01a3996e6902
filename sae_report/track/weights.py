"""Read SAE checkpoints with ``safetensors.numpy`` (no torch) and run the SAE forward in numpy.

A checkpoint is ``sae.safetensors`` holding ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec`` (the names
SAELens and our trainer use; ``encoder.weight``/``decoder.weight`` style names are accepted too).
Orientation is normalised here: ``W_enc`` is ``[d_in, d_sae]`` and ``W_dec`` is ``[d_sae, d_in]``
whichever way the file stores them (decided from ``b_enc``'s length, i.e. ``d_sae``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runlog import CHECKPOINTS_DIR, RunLogError

WEIGHTS_FILE = "sae.safetensors"
_STEP_RE = re.compile(r"^step_(\d+)$")
_ALIASES = {
    "W_enc": ("W_enc", "encoder.weight", "enc.weight", "W_e"),
    "b_enc": ("b_enc", "encoder.bias", "enc.bias", "b_e"),
    "W_dec": ("W_dec", "decoder.weight", "dec.weight", "W_d"),
    "b_dec": ("b_dec", "decoder.bias", "dec.bias", "b_d", "pre_bias"),
}


@dataclass(frozen=True)
class SAEWeights:
    """One SAE's parameters as float32 numpy arrays in a fixed orientation."""

    W_enc: np.ndarray
    """Encoder ``[d_in, d_sae]``."""
    b_enc: np.ndarray
    """Encoder bias ``[d_sae]``."""
    W_dec: np.ndarray
    """Decoder ``[d_sae, d_in]``: row i is feature i's direction."""
    b_dec: np.ndarray
    """Decoder bias ``[d_in]`` (subtracted from the input before encoding)."""
    path: Path
    """The file read."""
    input_scale: float = 1.0
    """Factor the trainer multiplied inputs by (``input_scale`` in the checkpoint's ``config.json``):
    apply it to raw activations before ``encode``."""

    @property
    def d_sae(self) -> int:
        return int(self.b_enc.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.b_dec.shape[0])

    def unit_decoder(self) -> np.ndarray:
        """Decoder rows scaled to unit norm (a zero row stays zero)."""
        norms = np.linalg.norm(self.W_dec, axis=1, keepdims=True)
        return self.W_dec / np.where(norms > 0, norms, 1.0)

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Feature activations ``relu((x - b_dec) @ W_enc + b_enc)``, ``[n, d_sae]``."""
        return np.maximum((x - self.b_dec) @ self.W_enc + self.b_enc, 0.0)

    def decode(self, f: np.ndarray) -> np.ndarray:
        """Reconstruction ``f @ W_dec + b_dec``."""
        return f @ self.W_dec + self.b_dec


def load_weights(path: Path) -> SAEWeights:
    """Read ``sae.safetensors`` (or a checkpoint folder / run directory holding one)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    file = find_weights_file(Path(path))
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunLogError(f"{file}: not a readable safetensors file ({str(exc).splitlines()[0][:160]})") from None
    found: dict[str, np.ndarray] = {}
    for key, names in _ALIASES.items():
        hit = next((n for n in names if n in tensors), None)
        if hit is None:
            raise RunLogError(f"{file}: no {key} tensor (has {', '.join(sorted(tensors)) or 'none'})")
        found[key] = np.asarray(tensors[hit], dtype=np.float32)
    d_sae, d_in = found["b_enc"].shape[0], found["b_dec"].shape[0]
    scale = checkpoint_config(file.parent).get("input_scale")
    scale = float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale > 0 else 1.0
    return SAEWeights(W_enc=_orient(found["W_enc"], (d_in, d_sae), file, "W_enc"), b_enc=found["b_enc"],
                      W_dec=_orient(found["W_dec"], (d_sae, d_in), file, "W_dec"), b_dec=found["b_dec"], path=file,
                      input_scale=scale)


def _orient(w: np.ndarray, shape: tuple[int, int], file: Path, name: str) -> np.ndarray:
    if w.shape == shape:
        return np.ascontiguousarray(w)
    if w.shape == shape[::-1]:
        return np.ascontiguousarray(w.T)
    raise RunLogError(f"{file}: {name} has shape {list(w.shape)}, expected {list(shape)} or its transpose")


def find_weights_file(path: Path) -> Path:
    """The weights file for a file, a checkpoint folder, or a run directory (its last checkpoint)."""
    if path.is_file():
        return path
    if (path / WEIGHTS_FILE).is_file():
        return path / WEIGHTS_FILE
    ckpt = last_checkpoint(path)
    if ckpt is not None:
        return ckpt / WEIGHTS_FILE
    raise RunLogError(f"{path}: no {WEIGHTS_FILE} (not a checkpoint folder or a run directory with checkpoints)")


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of each ``checkpoints/step_N`` holding weights, in step order."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and (p / WEIGHTS_FILE).is_file()]
    return sorted(out)


def last_checkpoint(run_dir: Path) -> Path | None:
    """``checkpoints/final`` when present, else the highest ``step_N``; None when there is none."""
    final = Path(run_dir) / CHECKPOINTS_DIR / "final"
    if (final / WEIGHTS_FILE).is_file():
        return final
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1][1] if dirs else None


def checkpoint_config(ckpt_dir: Path) -> dict:
    """The checkpoint's ``config.json`` ({} when absent or unreadable)."""
    try:
        return json.loads((Path(ckpt_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
