"""End-of-run statistics written to ``RUN/stats/`` and the true-feature recovery for synthetic data.

- ``feature_freq.npy``  float64 [d_sae]: fraction of training tokens each feature fired on, over the
  last one to two dead windows of training (the log-density histogram people expect).
- ``feature_density/step_NNNNNNNN.npy``  float64 [d_sae]: fraction of the tokens of the
  ``density_every`` steps up to step N each feature fired on (one file per interval; the logged
  density columns are ``density_summary`` of it).
- ``input_sample.npy``  float32 [stats_sample, d_in]: normalised input tokens (the per-neuron chart).
- ``input_dims.csv``    ``dim,mean,std,absmax,outlier`` over a larger sample; ``outlier`` is true
  when the dimension's RMS sqrt(mean^2 + std^2) exceeds ``outlier_factor`` x the median RMS.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch

from sae_report.runlog import STATS_DIR, atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class Recovery:
    """How well the SAE's decoder recovered the synthetic ground-truth features."""

    mmcs: float
    """Mean over true features of the max cosine similarity with any decoder row."""
    frac_above_09: float
    """Fraction of true features with a decoder row at cosine similarity > 0.9."""


def _save_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def write_feature_freq(run_dir: Path, counts: torch.Tensor, tokens: int) -> np.ndarray:
    freq = counts.double().cpu().numpy() / max(tokens, 1)
    _save_npy(Path(run_dir) / STATS_DIR / "feature_freq.npy", freq)
    return freq


#: Densities at or below which a feature counts in ``density_below_*`` (strictly below), and above which it is dense.
DENSITY_THRESHOLDS = (1e-5, 1e-6)
DENSE_ABOVE = 0.1
#: Added before log10 so that a feature that never fired counts as log10(1e-10) = -10 (SAELens' rule).
LOG10_EPS = 1e-10


def density_summary(freq: np.ndarray) -> dict[str, float]:
    """The density columns from per-feature firing densities (fraction of tokens):
    ``density_below_1e-5`` / ``density_below_1e-6``: share of features with density < 1e-5 / 1e-6
    (features that never fired included); ``mean_log10_density``: mean over features of
    log10(density + 1e-10); ``dense_features``: number of features with density > 0.1."""
    freq = np.asarray(freq, dtype=np.float64)
    n = max(freq.size, 1)
    return {"density_below_1e-5": float((freq < 1e-5).sum() / n), "density_below_1e-6": float((freq < 1e-6).sum() / n),
            "mean_log10_density": float(np.log10(freq + LOG10_EPS).mean()) if freq.size else float("nan"),
            "dense_features": float((freq > DENSE_ABOVE).sum())}


def write_feature_density(run_dir: Path, step: int, freq: np.ndarray) -> Path:
    path = Path(run_dir) / STATS_DIR / "feature_density" / f"step_{step:08d}.npy"
    _save_npy(path, np.asarray(freq, dtype=np.float64))
    return path


def write_input_stats(run_dir: Path, sample: torch.Tensor, big_sample: torch.Tensor, outlier_factor: float) -> int:
    """Write input_sample.npy and input_dims.csv; return the number of outlier dimensions."""
    stats = Path(run_dir) / STATS_DIR
    _save_npy(stats / "input_sample.npy", sample.float().cpu().numpy())
    x = big_sample.double()
    mean, std, absmax = x.mean(0), x.std(0, unbiased=False), x.abs().max(0).values
    rms = (mean ** 2 + std ** 2).sqrt()
    outlier = rms > outlier_factor * rms.median()
    frame = pl.DataFrame({
        "dim": np.arange(x.shape[1]), "mean": mean.cpu().numpy(), "std": std.cpu().numpy(),
        "absmax": absmax.cpu().numpy(), "outlier": outlier.cpu().numpy(),
    })
    buf = io.StringIO()
    frame.write_csv(buf)
    atomic_write_text(stats / "input_dims.csv", buf.getvalue())
    return int(outlier.sum())


@torch.no_grad()
def feature_recovery(W_dec: torch.Tensor, true_features: torch.Tensor) -> Recovery:
    """Max cosine similarity of each true feature with the decoder rows, averaged."""
    dec = W_dec / W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    best = torch.cat([(chunk @ dec.t()).max(dim=1).values for chunk in true_features.split(4096)])
    return Recovery(mmcs=float(best.mean()), frac_above_09=float((best > 0.9).double().mean()))
