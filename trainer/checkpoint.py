"""Checkpoints: safetensors + JSON, never pickle.

Layout (``RUN/checkpoints/step_000001000/``, and the last one copied to ``RUN/checkpoints/final/``)::

    sae.safetensors        W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]  (fp32)
    config.json            the resolved TrainConfig + d_in, d_sae, sae_variant, input_scale, step, tokens
    optimizer.safetensors  Adam state: "<param>.exp_avg", "<param>.exp_avg_sq", "<param>.step"
    state.safetensors      trainer state: last_fired [d_sae] (step each feature last fired),
                           fire_count / prev_fire_count [d_sae] (firing counts of the current and
                           previous dead window, for feature_freq.npy)
    state.json             step, tokens, data position, window bookkeeping, elapsed_s

A checkpoint directory is written under a temporary name and renamed into place, so a crash never
leaves a half-written ``step_*`` directory that ``--resume`` would pick.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sae_report.runlog import CHECKPOINTS_DIR, to_jsonable

from .sae import SparseAutoencoder

PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")
_STEP_RE = re.compile(r"^step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (one line naming the directory)."""


@dataclass
class Checkpoint:
    """A checkpoint read back from disk (tensors on the CPU)."""

    path: Path
    """The checkpoint directory."""
    weights: dict[str, torch.Tensor]
    """W_enc, b_enc, W_dec, b_dec."""
    optimizer: dict[str, torch.Tensor]
    """Adam state tensors, keyed '<param>.<field>' (empty when the file is absent)."""
    state: dict[str, torch.Tensor]
    """Trainer state tensors (empty when absent)."""
    meta: dict[str, Any]
    """state.json merged over config.json."""

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))


def checkpoint_name(step: int) -> str:
    return f"step_{step:09d}"


def save_checkpoint(run_dir: Path, step: int, sae: SparseAutoencoder, optimizer: torch.optim.Optimizer,
                    state: dict[str, torch.Tensor], config: dict[str, Any], meta: dict[str, Any],
                    *, final: bool = False, keep: int = 0) -> Path:
    """Write ``checkpoints/step_NNNNNNNNN`` (and ``checkpoints/final`` when ``final``); return its path."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    target = root / checkpoint_name(step)
    tmp = root / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().float().contiguous().cpu() for k, v in sae.state_tensors().items()}, str(tmp / "sae.safetensors"))
    save_file(optimizer_tensors(sae, optimizer), str(tmp / "optimizer.safetensors"))
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp / "state.safetensors"))
    (tmp / "config.json").write_text(json.dumps(to_jsonable(config), indent=2, allow_nan=False) + "\n")
    (tmp / "state.json").write_text(json.dumps(to_jsonable(meta), indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    if final:
        _link_copy(target, root / "final")
    if keep > 0:
        periodic = sorted(p for p in root.iterdir() if _STEP_RE.match(p.name))
        for old in periodic[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _link_copy(src: Path, dst: Path) -> None:
    """dst := a copy of src made of hard links where the filesystem allows (written atomically)."""
    tmp = dst.parent / f".{dst.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in src.iterdir():
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def optimizer_tensors(sae: SparseAutoencoder, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name in PARAM_NAMES:
        for key, value in optimizer.state.get(getattr(sae, name), {}).items():
            if isinstance(value, torch.Tensor):
                out[f"{name}.{key}"] = value.detach().contiguous().cpu()
    return out


def load_optimizer_state(sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         source: str) -> None:
    """Put saved Adam state back (shapes checked against the parameters)."""
    for name in PARAM_NAMES:
        p = getattr(sae, name)
        entries = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == name}
        if not entries:
            raise CheckpointError(f"{source}: no optimizer state for {name}")
        for key in ("exp_avg", "exp_avg_sq"):
            if key in entries and tuple(entries[key].shape) != tuple(p.shape):
                raise CheckpointError(f"{source}: optimizer {name}.{key} has shape {list(entries[key].shape)}, needs {list(p.shape)}")
        optimizer.state[p] = {k: v.to(p.device) for k, v in entries.items()}


def find_checkpoint(path: Path) -> Path:
    """A checkpoint directory itself, or the newest checkpoint of a run directory."""
    path = Path(path)
    if (path / "sae.safetensors").is_file():
        return path
    root = path / CHECKPOINTS_DIR
    candidates = [p for p in root.iterdir() if (p / "sae.safetensors").is_file() and (_STEP_RE.match(p.name) or p.name == "final")] if root.is_dir() else []
    if not candidates:
        raise CheckpointError(f"{path}: no checkpoint (expected sae.safetensors or {CHECKPOINTS_DIR}/step_*/)")

    def step_of(p: Path) -> tuple[int, int]:
        try:
            step = int(json.loads((p / "state.json").read_text()).get("step", -1))
        except (OSError, ValueError):
            m = _STEP_RE.match(p.name)
            step = int(m.group(1)) if m else -1
        return step, 0 if p.name == "final" else 1  # prefer step_* when equal (same content)

    return max(candidates, key=step_of)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint directory (or the newest checkpoint of a run directory)."""
    ckpt = find_checkpoint(path)
    try:
        weights = load_file(str(ckpt / "sae.safetensors"))
        optim = load_file(str(ckpt / "optimizer.safetensors")) if (ckpt / "optimizer.safetensors").exists() else {}
        state = load_file(str(ckpt / "state.safetensors")) if (ckpt / "state.safetensors").exists() else {}
        meta: dict[str, Any] = {}
        for name in ("config.json", "state.json"):
            if (ckpt / name).exists():
                meta.update(json.loads((ckpt / name).read_text()))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{ckpt}: unreadable checkpoint ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None
    return Checkpoint(ckpt, weights, optim, state, meta)
