"""Train the built-in language model, saving checkpoints and residual-stream activations; cached.

``build_lm_series(LMConfig(...))`` trains :class:`~trainer.lm.model.TinyLM` on the pydoc corpus,
and at each of ``n_checkpoints`` steps saves the model (``model.safetensors``) and the residual
stream after block ``layer`` on one fixed set of tokens (``activations.npy``, float32
``[n_tokens, d_model]``, the format ``trainer`` reads with ``data_source="files"``).

Cache layout (``CACHE/lm/<key>/``, the key hashes the config, the corpus and the format version)::

    manifest.json                       written last: its presence means the series is complete
    step_000000150/model.safetensors
    step_000000150/activations.npy

A series is built in a temp folder and renamed into place, so an interrupted build leaves no
half-written cache; a second call with the same config reuses it without touching torch's RNG.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from .corpus import VOCAB_SIZE, fixed_windows, load_corpus, sample_windows

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    """``$SAE_REPORT_CACHE`` or ``$XDG_CACHE_HOME/sae-report`` or ``~/.cache/sae-report``."""
    if os.environ.get("SAE_REPORT_CACHE"):
        return Path(os.environ["SAE_REPORT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "sae-report"


@dataclass(frozen=True)
class LMConfig:
    """The built-in language model, its training and what is recorded at each checkpoint."""

    seed: int = 0
    """Seeds the model's initialisation and the batch order."""
    d_model: int = 64
    """Residual-stream width: the SAEs' ``d_in``."""
    n_layer: int = 3
    """Transformer blocks."""
    n_head: int = 4
    """Attention heads per block (must divide ``d_model``)."""
    ctx: int = 64
    """Context length in bytes."""
    batch_size: int = 32
    """Sequences per training step."""
    steps: int = 1500
    """Training steps of the language model."""
    learning_rate: float = 3e-3
    """AdamW peak learning rate (linear warm-up, cosine decay to 10%)."""
    warmup_steps: int = 50
    """Learning-rate warm-up steps."""
    n_checkpoints: int = 16
    """Checkpoints saved along training (the last one at ``steps``)."""
    spacing: Literal["linear", "log"] = "linear"
    """Checkpoint steps evenly spaced, or geometrically spaced (dense early, like Pythia's)."""
    layer: int = 1
    """Block whose output (residual stream, before the final LayerNorm) is recorded, 0-based."""
    n_act_tokens: int = 65536
    """Token positions recorded per checkpoint (position 0 of each window is skipped)."""
    max_corpus_bytes: int | None = None
    """Use only the first bytes of the corpus (tests); None uses all ~466 kB."""
    threads: int | None = None
    """torch threads while training (None leaves torch's default). Not part of the cache key."""

    def __post_init__(self) -> None:
        if self.spacing not in ("linear", "log"):
            raise ValueError(f"spacing must be 'linear' or 'log', not {self.spacing!r}")
        if not 0 <= self.layer < self.n_layer:
            raise ValueError(f"layer {self.layer} is outside 0..{self.n_layer - 1}")
        if self.n_checkpoints < 2:
            raise ValueError("n_checkpoints must be at least 2 (a series needs two checkpoints)")
        if self.steps < self.n_checkpoints:
            raise ValueError(f"steps ({self.steps}) must be at least n_checkpoints ({self.n_checkpoints})")
        for name in ("d_model", "n_head", "ctx", "batch_size", "n_act_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.ctx < 2:
            raise ValueError("ctx must be at least 2")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_head {self.n_head}")

    @classmethod
    def preset(cls, name: str, **changes) -> "LMConfig":
        """``small`` (the defaults: d_model 64, 3 layers, minutes on a CPU) or ``tiny`` (d_model 16,
        2 layers, a slice of the corpus: seconds; for tests and smoke runs), with field changes."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
        return cls(**{**PRESETS[name], **changes})

    def checkpoint_steps(self) -> list[int]:
        """The training steps at which checkpoints are saved, increasing, last = ``steps``."""
        n, total = self.n_checkpoints, self.steps
        if self.spacing == "linear":
            raw = [round(total * (i + 1) / n) for i in range(n)]
        else:
            raw = [round(s) for s in np.geomspace(max(1.0, total / 2 ** (n - 1)), total, n)]
        out: list[int] = []
        for s in raw:  # strictly increasing even when rounding collides
            out.append(max(int(s), out[-1] + 1 if out else 1))
        out[-1] = total
        return sorted(set(min(s, total) for s in out))

    def cache_key(self, corpus_digest: str) -> str:
        """Hash of everything that changes the series (not ``threads``)."""
        d = asdict(self)
        d.pop("threads")
        blob = json.dumps({"v": FORMAT_VERSION, "corpus": corpus_digest, **d}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: Named sizes of the built-in model (field values over the defaults).
PRESETS: dict[str, dict] = {
    "small": {},
    "tiny": {"d_model": 16, "n_layer": 2, "n_head": 2, "ctx": 32, "batch_size": 16, "steps": 200, "warmup_steps": 10,
             "layer": 1, "n_act_tokens": 8192, "max_corpus_bytes": 100_000},
}


@dataclass(frozen=True)
class LMCheckpoint:
    """One saved checkpoint of the language model."""

    step: int
    """Training step of the language model."""
    tokens_seen: int
    """Training tokens the model had seen at this step."""
    train_loss: float
    """Mean training cross-entropy (nats/byte) over the last steps before the checkpoint."""
    eval_loss: float
    """Held-out cross-entropy (nats/byte)."""
    model_path: Path
    """``model.safetensors`` of this checkpoint."""
    acts_path: Path
    """``activations.npy``: float32 ``[n_tokens, d_model]`` residual stream after block ``layer``."""


@dataclass(frozen=True)
class LMSeries:
    """A trained (or cached) series of language-model checkpoints with their activations."""

    root: Path
    """The cache folder of this series."""
    config: LMConfig
    """The config it was built with."""
    checkpoints: list[LMCheckpoint] = field(default_factory=list)
    """Checkpoints in training order."""
    reused: bool = False
    """True when the series came from the cache."""
    elapsed_s: float = 0.0
    """Seconds spent building (0 when reused)."""

    @property
    def acts_paths(self) -> list[Path]:
        """Activation files in training order: the input of ``sae-report track``."""
        return [c.acts_path for c in self.checkpoints]


def build_lm_series(config: LMConfig | None = None, cache_dir: Path | str | None = None, *,
                    log: Callable[[str], None] | None = None) -> LMSeries:
    """Return the series for ``config``, from the cache when present, else trained now."""
    config = config or LMConfig()
    corpus = load_corpus(max_bytes=config.max_corpus_bytes)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = root / "lm" / config.cache_key(corpus.digest)
    if (final / MANIFEST).exists():
        series = load_series(final)
        if series is not None:
            if log:
                log(f"language model: reusing cached series {final}")
            return series
    t0 = time.perf_counter()
    _remove_stale_builds(final)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        records = _train(config, corpus, tmp, log)
        manifest = {"format_version": FORMAT_VERSION, "config": asdict(config), "corpus_digest": corpus.digest,
                    "checkpoints": records, "elapsed_s": time.perf_counter() - t0}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():  # an incomplete earlier build (no manifest) or a concurrent one
            if (final / MANIFEST).exists():
                shutil.rmtree(tmp, ignore_errors=True)
                return load_series(final) or _fail(final)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    series = load_series(final) or _fail(final)
    return LMSeries(root=series.root, config=series.config, checkpoints=series.checkpoints, reused=False,
                    elapsed_s=time.perf_counter() - t0)


def _remove_stale_builds(final: Path) -> None:
    """Delete ``<key>.tmp-<pid>`` folders left by builds whose process is gone (killed by a signal)."""
    if not final.parent.is_dir():
        return
    for tmp in final.parent.glob(f"{final.name}.tmp-*"):
        try:
            os.kill(int(tmp.name.rsplit("-", 1)[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            continue


def _fail(path: Path) -> LMSeries:
    raise RuntimeError(f"{path / MANIFEST}: unreadable series manifest")


def load_series(root: Path) -> LMSeries | None:
    """Read a complete cached series (None when its manifest or a file is missing)."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        config = LMConfig(**manifest["config"])
        ckpts = [LMCheckpoint(step=int(r["step"]), tokens_seen=int(r["tokens_seen"]), train_loss=float(r["train_loss"]),
                              eval_loss=float(r["eval_loss"]), model_path=root / r["model"], acts_path=root / r["activations"])
                 for r in manifest["checkpoints"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(c.acts_path.exists() and c.model_path.exists() for c in ckpts):
        return None
    return LMSeries(root=root, config=config, checkpoints=ckpts, reused=True)


def _train(config: LMConfig, corpus, out: Path, log: Callable[[str], None] | None) -> list[dict]:
    import torch
    from safetensors.torch import save_file

    from .model import TinyLM

    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        model = TinyLM(vocab=VOCAB_SIZE, d_model=config.d_model, n_layer=config.n_layer, n_head=config.n_head, ctx=config.ctx)
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=config.learning_rate, betas=(0.9, 0.95))
        heldout = torch.from_numpy(sample_windows(corpus.heldout, 64, min(config.ctx, len(corpus.heldout) - 2),
                                                  np.random.default_rng(config.seed + 1)))
        n_windows = math.ceil(config.n_act_tokens / (config.ctx - 1))
        act_ids = torch.from_numpy(fixed_windows(corpus.train, n_windows, config.ctx))
        save_at = set(config.checkpoint_steps())
        records: list[dict] = []
        recent: list[float] = []
        for step in range(1, config.steps + 1):
            for group in opt.param_groups:
                group["lr"] = _lr(config, step)
            batch = torch.from_numpy(sample_windows(corpus.train, config.batch_size, config.ctx, rng))
            loss = model.loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            recent = (recent + [loss.item()])[-20:]
            if step in save_at:
                records.append(_save_checkpoint(model, config, step, float(np.mean(recent)), heldout, act_ids, out, save_file))
                if log:
                    r = records[-1]
                    log(f"language model step {step}/{config.steps}: train {r['train_loss']:.3f}, "
                        f"held-out {r['eval_loss']:.3f} nats/byte; saved activations")
        return records
    finally:
        torch.set_num_threads(old_threads)


def _lr(config: LMConfig, step: int) -> float:
    if step <= config.warmup_steps:
        return config.learning_rate * step / max(1, config.warmup_steps)
    frac = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _save_checkpoint(model, config: LMConfig, step: int, train_loss: float, heldout, act_ids, out: Path, save_file) -> dict:
    import torch

    name = f"step_{step:09d}"
    folder = out / name
    folder.mkdir(parents=True)
    model.eval()
    with torch.no_grad():
        eval_loss = float(model.loss(heldout))
        chunks = []
        for i in range(0, act_ids.shape[0], 64):
            _, resid = model(act_ids[i:i + 64], capture_layer=config.layer)
            chunks.append(resid[:, 1:, :].reshape(-1, config.d_model))  # skip position 0
        acts = torch.cat(chunks)[: config.n_act_tokens].to(torch.float32).numpy()
    model.train()
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    np.save(folder / "activations.npy", np.ascontiguousarray(acts))
    return {"step": step, "tokens_seen": step * config.batch_size * config.ctx, "train_loss": train_loss,
            "eval_loss": eval_loss, "model": f"{name}/model.safetensors", "activations": f"{name}/activations.npy",
            "n_tokens": int(acts.shape[0]), "d_in": int(acts.shape[1])}
