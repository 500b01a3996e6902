"""Where activations come from: a synthetic generator with known features, or cached activation files.

Both sources are stateless functions of the step: ``batch(step)`` always returns the same tokens
for the same (data seed, step), so a resumed run sees exactly the data order of an uninterrupted one
and the checkpoint only needs the step ("data position" = ``(step) * batch_size`` tokens).

Input normalisation: every token is multiplied by one constant ``scale`` so that E||x|| = sqrt(d_in)
on a sample of the data (Anthropic, April 2024). The factor is recorded in ``config.yaml``
(``input_scale``) and in every checkpoint.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sae_report.runlog.activations import ActivationError, open_source


class DataError(ValueError):
    """Unusable activation data. ``str()`` is one line naming the file."""


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class SyntheticData:
    """Tokens x = sum of a few of ``n_features`` random unit directions in R^d_in (superposition:
    n_features > d_in), with power-law firing frequencies, lognormal magnitudes, a constant offset,
    Gaussian noise and optional outlier dimensions. ``true_features`` [n_features, d_in] is the ground truth."""

    kind = "synthetic"

    def __init__(self, *, d_in: int, n_features: int, active: float, power: float, noise: float,
                 outlier_dims: int, outlier_scale: float, mean_norm: float, magnitude_sigma: float, seed: int, batch_size: int, device: torch.device) -> None:
        self.d_in, self.n_features, self.batch_size, self.device, self.seed = d_in, n_features, batch_size, device, seed
        self.active, self.power, self.noise = active, power, noise
        g = torch.Generator().manual_seed(_seed(seed, 1))
        feats = torch.randn(n_features, d_in, generator=g)
        self.true_features = (feats / feats.norm(dim=1, keepdim=True)).to(device)
        # Firing probability p_i ~ (i+1)^-power, scaled so that sum_i p_i = active (clipped at 1).
        w = torch.arange(1, n_features + 1, dtype=torch.float64) ** -power
        p = w * active / w.sum()
        for _ in range(50):  # redistribute the mass clipped at 1
            p = torch.clamp(p, max=1.0)
            short = active - p.sum()
            free = p < 1.0
            if short <= 1e-9 or not free.any():
                break
            p[free] += short * w[free] / w[free].sum()
        self.probs = p.to(torch.float32).to(device)
        # Outlier dimensions: a large positive offset with spread, like LLM "massive activations".
        self.sigma = magnitude_sigma
        energy = active * math.exp(2 * magnitude_sigma ** 2)  # E||sparse part||^2 (lognormal: E[m^2] = e^{2 s^2})
        typical_std = math.sqrt(energy / d_in)
        perm = torch.randperm(d_in, generator=g)[:outlier_dims]
        self.outlier_dims = sorted(perm.tolist())
        self.outlier_size = outlier_scale * typical_std
        # A constant offset shared by all tokens (real activations have a large mean; b_dec absorbs
        # it), with norm mean_norm x the RMS norm of the sparse part.
        direction = torch.randn(d_in, generator=g)
        self.mean_norm = mean_norm
        self.offset = (direction / direction.norm() * mean_norm * math.sqrt(energy)).to(device)
        self.scale = 1.0

    def _make(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(seed)
        dev = self.device
        # Sparse sampling: feature i fires on Binomial(n, p_i) tokens drawn at random, so the cost is
        # proportional to the ~n * active firings, not to n * n_features.
        counts = torch.binomial(torch.full((self.n_features,), float(n), device=dev), self.probs, generator=g).long()
        feat = torch.repeat_interleave(torch.arange(self.n_features, device=dev), counts)
        tok = torch.randint(0, n, (feat.numel(),), generator=g, device=dev)
        # magnitude ~ lognormal(0, sigma): most firings small, a few large (a gentle L0-vs-l1_alpha slope)
        mags = torch.randn(feat.numel(), 1, generator=g, device=dev).mul_(self.sigma).exp_()
        x = torch.zeros(n, self.d_in, device=dev)
        x.index_add_(0, tok, mags * self.true_features[feat])
        if self.mean_norm > 0:
            x += self.offset
        if self.noise > 0:
            x += self.noise * torch.randn(n, self.d_in, generator=g, device=dev)
        if self.outlier_dims:
            k = len(self.outlier_dims)
            spread = 1.0 + 0.5 * torch.randn(n, k, generator=g, device=dev)
            x[:, self.outlier_dims] += self.outlier_size * spread.abs()
        return x.mul_(self.scale) if self.scale != 1.0 else x

    def batch(self, step: int) -> torch.Tensor:
        """The batch of training step ``step`` (1-based), already normalised."""
        return self._make(self.batch_size, _seed(self.seed, 2, step))

    def sample(self, n: int, stream: int = 0) -> torch.Tensor:
        """``n`` tokens from a stream separate from training (stream 0: normalisation, 1: stats, ...)."""
        out = [self._make(min(8192, n - i), _seed(self.seed, 3, stream, i)) for i in range(0, n, 8192)]
        return torch.cat(out)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "synthetic", "d_in": self.d_in, "n_features": self.n_features, "mean_active": self.active, "magnitude_sigma": self.sigma, "mean_norm": self.mean_norm,
            "power": self.power, "noise": self.noise, "outlier_dims": self.outlier_dims,
            "outlier_size": round(self.outlier_size, 6), "seed": self.seed,
        }


class FileData:
    """Cached activations from one file or a directory of shards, shuffled through a buffer.

    Each epoch the shards are cut into blocks of ``block_tokens`` contiguous tokens; the blocks are
    put in a seeded random order; consecutive groups of blocks fill a buffer of ``buffer_tokens``,
    whose rows are shuffled with a seed of (epoch, buffer). Batches are read off the buffers in order.
    Reads are contiguous (memory-mapped .npy stays cheap) and the order is a function of the step.
    """

    kind = "files"

    def __init__(self, path: str | Path, *, seed: int, batch_size: int, buffer_tokens: int, block_tokens: int,
                 device: torch.device) -> None:
        root = Path(path)
        try:  # the run format's one reader of activation files (sae_report.runlog.activations)
            self.shards = open_source(root, framework="pt")
        except ActivationError as exc:
            raise DataError(str(exc)) from None
        self.root = root
        self.d_in = self.shards[0].d_in
        self.n_tokens = sum(s.n for s in self.shards)
        self.seed, self.batch_size, self.device = seed, batch_size, device
        self.blocks = [(i, a, min(a + block_tokens, s.n)) for i, s in enumerate(self.shards) for a in range(0, s.n, block_tokens)]
        self.blocks_per_buffer = max(1, buffer_tokens // block_tokens)
        self.scale = 1.0
        self._epoch_cache: tuple[int, list[list[int]], np.ndarray] | None = None
        self._buffer_cache: tuple[tuple[int, int], torch.Tensor] | None = None

    def _epoch(self, epoch: int) -> tuple[list[list[int]], np.ndarray]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            order = np.random.default_rng(_seed(self.seed, 4, epoch)).permutation(len(self.blocks))
            groups = [order[i:i + self.blocks_per_buffer].tolist() for i in range(0, len(order), self.blocks_per_buffer)]
            sizes = np.array([sum(self.blocks[b][2] - self.blocks[b][1] for b in g) for g in groups])
            self._epoch_cache = (epoch, groups, np.concatenate([[0], np.cumsum(sizes)]))
        return self._epoch_cache[1], self._epoch_cache[2]

    def _buffer(self, epoch: int, index: int) -> torch.Tensor:
        if self._buffer_cache is None or self._buffer_cache[0] != (epoch, index):
            groups, _ = self._epoch(epoch)
            parts = [torch.as_tensor(self.shards[s].read(a, b)) for s, a, b in (self.blocks[k] for k in groups[index])]
            buf = torch.cat(parts) if len(parts) > 1 else parts[0]
            perm = torch.from_numpy(np.random.default_rng(_seed(self.seed, 5, epoch, index)).permutation(len(buf)))
            # The shuffled buffer moves to the device once; batches are then slices of it.
            host = buf[perm].contiguous()
            if self.device.type == "cuda":
                # From pinned memory the copy is a DMA the host does not wait for; it is queued on
                # the current stream, so the step's kernels that read the buffer run after it.
                dev = host.pin_memory().to(self.device, non_blocking=True)
            else:
                dev = host.to(self.device)
            self._buffer_cache = ((epoch, index), dev)
        return self._buffer_cache[1]

    def rows(self, start: int, n: int) -> torch.Tensor:
        """``n`` consecutive tokens of the shuffled stream starting at token ``start`` (unscaled, on the device)."""
        out: list[torch.Tensor] = []
        while n > 0:
            epoch, r = divmod(start, self.n_tokens)
            _, bounds = self._epoch(epoch)
            idx = int(np.searchsorted(bounds, r, side="right") - 1)
            buf = self._buffer(epoch, idx)
            off = r - int(bounds[idx])
            take = min(n, len(buf) - off)
            out.append(buf[off:off + take])
            start, n = start + take, n - take
        return torch.cat(out) if len(out) > 1 else out[0]

    def batch(self, step: int) -> torch.Tensor:
        """The batch of training step ``step`` (1-based), normalised, on the device."""
        x = self.rows((step - 1) * self.batch_size, self.batch_size)
        return x * self.scale if self.scale != 1.0 else x

    def sample(self, n: int, stream: int = 0) -> torch.Tensor:
        """``n`` tokens read at a seeded offset of the stream (stream 0: normalisation, 1: stats)."""
        n = min(n, self.n_tokens)
        start = 0 if stream == 0 else int(np.random.default_rng(_seed(self.seed, 6, stream)).integers(self.n_tokens))
        x = self.rows(start, n).to(self.device)
        return x * self.scale if self.scale != 1.0 else x

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "files", "path": str(self.root), "shards": [s.path.name for s in self.shards][:50],
            "n_shards": len(self.shards), "n_tokens": self.n_tokens, "d_in": self.d_in,
            "shuffle_block_tokens": self.blocks[0][2] - self.blocks[0][1] if self.blocks else 0,
            "blocks_per_buffer": self.blocks_per_buffer, "seed": self.seed,
        }


def normalisation_scale(source: SyntheticData | FileData, n: int = 16384) -> float:
    """The constant that makes E||x|| = sqrt(d_in) on ``n`` tokens of ``source`` (before scaling)."""
    x = source.sample(n, stream=0)
    mean_norm = float(x.norm(dim=1).mean())
    if not math.isfinite(mean_norm) or mean_norm <= 0:
        raise DataError(f"cannot normalise the input: mean token norm is {mean_norm}")
    return math.sqrt(source.d_in) / mean_norm
