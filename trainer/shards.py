"""``sae-report harvest``: a model's activation stream (``trainer/harvest.py``'s ``ModelData``, the
same stream training reads) written to safetensors shards plus ``harvest.json``, which
``data_source: files`` reads; a second call into the same folder continues the first."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .config import ConfigError, TrainConfig
from .data import DataError
from .harvest import ModelData


MANIFEST = "harvest.json"
SHARD_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: What must match for a second ``harvest`` into the same folder to continue the first.
_SAME_HARVEST = ("model_config_sha256", "model_weights", "hookpoint_module", "d_in", "model_dtype", "context_size",
                 "model_batch_size", "layout", "prepend_bos", "exclude_special_tokens", "dataset_fingerprint",
                 "text_column", "shuffle_buffer_tokens", "seed")


@dataclass
class HarvestResult:
    out: Path
    tokens: int
    """Tokens in the folder's shards."""
    shards: int
    written: int
    """Shards written by this call (the others were there from an earlier call)."""
    d_in: int
    seconds: float
    tokens_per_s: float
    """Harvest throughput of this call."""


def shard_name(i: int) -> str:
    return f"acts_{i:06d}.safetensors"


def write_shards(config: TrainConfig, out: str | Path, *, tokens: int, shard_tokens: int = 262_144,
                 dtype: str = "float32", on_shard: Callable[[int, int, int, float], None] | None = None) -> HarvestResult:
    """Harvest ``tokens`` activations of ``config``'s model source into ``out/acts_NNNNNN.safetensors``
    (tensor ``activations`` [n, d_in], shuffled as the trainer would read them, not normalised) and
    ``out/harvest.json``. A folder already holding shards of the same settings is continued (its
    complete shards are kept). ``on_shard(i, n_shards, tokens_done, tokens_per_s)`` after each shard."""
    from safetensors.torch import save_file

    from sae_report.runlog import atomic_write_text

    if config.data_source != "model":
        raise ConfigError("data_source: must be model to harvest (with model, hookpoint and dataset)", "data_source")
    if tokens <= 0 or shard_tokens <= 0:
        raise ConfigError("tokens: must be > 0")
    out = Path(out)
    manifest_path = out / MANIFEST
    previous: dict[str, Any] | None = None
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise DataError(f"{manifest_path}: unreadable; remove the folder or choose another --out") from None
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: holds other files; choose an empty or new folder")
    from .loop import resolve_device

    data_seed = config.data_seed if config.data_seed is not None else config.seed
    model_device = resolve_device(config.device if config.model_device == "auto" else config.model_device)
    data = ModelData(config, seed=data_seed, batch_size=shard_tokens, device=torch.device("cpu"),
                     total_tokens=tokens, model_device=model_device,
                     harvest_threads=torch.get_num_threads() if model_device.type == "cpu" else None)
    try:
        desc = {k: v for k, v in data.describe().items() if k != "normalisation"}
        settings = {k: desc.get(k) for k in _SAME_HARVEST}
        settings.update(shard_tokens=shard_tokens, dtype=dtype)
        done: list[str] = []
        if previous is not None:
            before = previous.get("settings") or {}
            diff = [k for k in settings if json.dumps(before.get(k)) != json.dumps(settings[k])]
            if diff:
                k = diff[0]
                raise DataError(f"{out}: holds a harvest with other settings ({k}: {before.get(k)!r} there, "
                                f"{settings[k]!r} now); choose another --out")
            done = [n for n in previous.get("shards", []) if (out / n).is_file()]
        out.mkdir(parents=True, exist_ok=True)
        n_shards = -(-tokens // shard_tokens)
        start_i = len(done)
        t0 = time.perf_counter()
        written = 0

        def manifest(shards: list[str], complete: bool) -> None:
            total = min(tokens, len(shards) * shard_tokens) if complete else len(shards) * shard_tokens
            body = {"format": "sae-report harvest", "version": 1, "tokens": total, "shards": shards,
                    "shard_tokens": shard_tokens, "dtype": dtype, "d_in": data.d_in, "complete": complete,
                    "settings": settings, "data": desc, "tensor": "activations",
                    "train_with": {"data_source": "files", "data_path": str(out)}}
            atomic_write_text(manifest_path, json.dumps(body, indent=2) + "\n")

        shards = list(done[:n_shards])
        for i in range(start_i, n_shards):
            n = min(shard_tokens, tokens - i * shard_tokens)
            x = data.rows(i * shard_tokens, n).to(SHARD_DTYPES[dtype]).contiguous()
            name = shard_name(i)
            tmp = out / f".{name}.tmp"
            save_file({"activations": x}, str(tmp), metadata={"model": str(desc["model"]),
                                                             "hookpoint": str(desc["hookpoint"]),
                                                             "first_token": str(i * shard_tokens)})
            os.replace(tmp, out / name)
            shards.append(name)
            written += 1
            manifest(shards, complete=i == n_shards - 1)
            if on_shard is not None:
                el = time.perf_counter() - t0
                on_shard(i, n_shards, min(tokens, (i + 1) * shard_tokens), (written * shard_tokens) / el if el else 0.0)
        if not written:
            manifest(shards, complete=True)
        el = time.perf_counter() - t0
        n_written = sum(min(shard_tokens, tokens - i * shard_tokens) for i in range(start_i, n_shards))
        return HarvestResult(out, min(tokens, len(shards) * shard_tokens), len(shards), written, data.d_in, el,
                             n_written / el if el > 0 else 0.0)
    finally:
        data.close()


__all__ = ["HarvestResult", "MANIFEST", "SHARD_DTYPES", "shard_name", "write_shards"]
