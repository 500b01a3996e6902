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

import errno
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
    try:
        _save_tensors({k: v.detach().float().contiguous().cpu() for k, v in sae.state_tensors().items()}, tmp / "sae.safetensors")
        _save_tensors(optimizer_tensors(sae, optimizer), tmp / "optimizer.safetensors")
        _save_tensors({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp / "state.safetensors")
        (tmp / "config.json").write_text(json.dumps(to_jsonable(config), indent=2, allow_nan=False) + "\n")
        (tmp / "state.json").write_text(json.dumps(to_jsonable(meta), indent=2) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk: the previous checkpoints stay as they were
        raise
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    if final:
        _link_copy(target, root / "final")
    if keep > 0:
        periodic = sorted(p for p in root.iterdir() if _STEP_RE.match(p.name))
        for old in periodic[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``safetensors.torch.save_file``, with its I/O failures as ``OSError`` naming ``path``
    (safetensors reports a full disk as ``SafetensorError: ... (os error 28)``)."""
    try:
        save_file(tensors, str(path))
    except OSError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        m = re.search(r"os error (\d+)", text)
        code = int(m.group(1)) if m else errno.EIO
        raise OSError(code, os.strerror(code) if m else text, str(path)) from None


def ensure_final(run_dir: Path, ckpt: Path) -> Path:
    """``checkpoints/final`` as a copy of ``ckpt`` (a run killed between its last checkpoint and
    the link); returns it."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    final = root / "final"
    try:
        same = json.loads((final / "state.json").read_text()).get("step") == json.loads((ckpt / "state.json").read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        same = False
    if not same or not (final / "sae.safetensors").is_file():
        _link_copy(ckpt, final)
    return final


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
    for name in getattr(sae, "PARAM_NAMES", PARAM_NAMES):  # + a JumpReLU SAE's threshold
        for key, value in optimizer.state.get(getattr(sae, name), {}).items():
            if isinstance(value, torch.Tensor):
                out[f"{name}.{key}"] = value.detach().contiguous().cpu()
    return out


def load_optimizer_state(sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         source: str) -> None:
    """Put saved Adam state back (shapes checked against the parameters)."""
    for name in getattr(sae, "PARAM_NAMES", PARAM_NAMES):  # + a JumpReLU SAE's threshold
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
        except (OSError, ValueError, TypeError, AttributeError, OverflowError):
            m = _STEP_RE.match(p.name)
            step = int(m.group(1)) if m else -1
        return step, 0 if p.name == "final" else 1  # prefer step_* when equal (same content)

    return max(candidates, key=step_of)


def load_checkpoint(path: Path, *, optimizer: bool = True) -> Checkpoint:
    """Read a checkpoint directory (or the newest checkpoint of a run directory). Anything
    unreadable (a corrupt or truncated file, bad JSON, a missing or non-finite weight) is a
    one-line ``CheckpointError`` naming the file.

    A SAELens SAE folder (``cfg.json`` + ``sae_weights.safetensors``, or either file's path) is
    read by ``trainer.export.read_saelens``: its weights in SAELens' names and units, which
    ``trainer.export.prepare_init`` maps into a run. ``optimizer=False`` skips the Adam state."""
    path = Path(path)
    if path.name in ("cfg.json", "sae_weights.safetensors") and path.is_file():
        path = path.parent
    if not (path / "sae.safetensors").is_file() and (path / "cfg.json").is_file():
        from .export import read_saelens

        return read_saelens(path)
    ckpt = find_checkpoint(path)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for name in ("sae.safetensors", "optimizer.safetensors", "state.safetensors"):
        f = ckpt / name
        if name == "optimizer.safetensors" and not optimizer:
            tensors[name] = {}
            continue
        if name != "sae.safetensors" and not f.exists():
            tensors[name] = {}
            continue
        try:
            tensors[name] = load_file(str(f))
        except Exception as exc:  # SafetensorError (corrupt header, truncated data), OSError
            raise CheckpointError(f"{f}: unreadable checkpoint file ({_first_line(exc)})") from None
    meta: dict[str, Any] = {}
    for name in ("config.json", "state.json"):
        f = ckpt / name
        if not f.exists():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{f}: unreadable checkpoint file ({_first_line(exc)})") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{f}: unreadable checkpoint file (not a JSON object)")
        meta.update(data)
    weights = tensors["sae.safetensors"]
    f = ckpt / "sae.safetensors"
    for name, dims in (("W_enc", 2), ("b_enc", 1), ("W_dec", 2), ("b_dec", 1)):
        t = weights.get(name)
        if t is None:
            raise CheckpointError(f"{f}: missing tensor {name}")
        if t.dim() != dims or not t.is_floating_point():
            raise CheckpointError(f"{f}: {name} must be a {dims}-D float tensor, got {t.dim()}-D {t.dtype}")
        if not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{f}: {name} holds NaN or inf values (a corrupt checkpoint)")
    for key in ("step", "tokens"):
        v = meta.get(key, 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise CheckpointError(f"{ckpt / 'state.json'}: {key} must be a non-negative integer, got {v!r}")
    return Checkpoint(ckpt, weights, tensors["optimizer.safetensors"], tensors["state.safetensors"], meta)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__
