"""Convergence speed-up of recurrent over fresh initialisation: tokens to reach the same loss.

The target is the fresh SAE's final loss (the median of its last logged points) times
``1 + tolerance``. Each run's loss curve is smoothed with a running median (SAE losses are noisy
batch to batch) and the first logged point at or below the target gives the tokens it needed.
The same is done for explained variance (at or above the fresh SAE's final level minus the
tolerance in absolute terms). Ratio = recurrent tokens / fresh tokens (the paper: under 1/20).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from ..runlog import RunData


@dataclass(frozen=True)
class Curve:
    """One run's metric against training tokens (as logged)."""

    tokens: np.ndarray
    """Training tokens at each logged point (from the ``tokens`` column, else step x batch)."""
    values: np.ndarray
    """The metric at those points (non-finite points dropped)."""


@dataclass(frozen=True)
class SpeedUp:
    """Tokens each initialisation needs to reach the same level on one checkpoint's activations."""

    checkpoint: int
    """Checkpoint index in the series."""
    metric: Literal["loss", "explained_variance"]
    """Metric compared."""
    target: float
    """Level both runs must reach (from the fresh run's final level and the tolerance)."""
    fresh_tokens: int | None
    """Tokens the from-scratch SAE needed (None if its smoothed curve never got there)."""
    recurrent_tokens: int | None
    """Tokens the recurrently initialised SAE needed (None if not within its budget)."""
    recurrent_budget: int
    """Tokens the recurrent run was given."""
    fresh_budget: int
    """Tokens the fresh run was given."""
    fresh_final: float
    """Fresh run's final level."""
    recurrent_final: float
    """Recurrent run's final level."""
    recurrent_run: str = "series"
    """``series`` (the series' own SAE, budget ``fraction``) or ``probe`` (the same start continued
    to a larger budget, so tokens past ``fraction`` can be observed)."""

    @property
    def ratio(self) -> float | None:
        """recurrent / fresh tokens (None when either did not reach the target)."""
        if not self.fresh_tokens or self.recurrent_tokens is None:
            return None
        return self.recurrent_tokens / self.fresh_tokens

    @property
    def ratio_upper_bound(self) -> float | None:
        """When the recurrent run did not get there: its budget / fresh tokens (a lower bound on
        the true ratio, i.e. the speed-up is at most the inverse)."""
        if self.recurrent_tokens is None and self.fresh_tokens:
            return self.recurrent_budget / self.fresh_tokens
        return None


def curve(data: RunData, metric: str) -> Curve:
    """Metric against tokens from a run's metrics (rows where the metric is logged and finite)."""
    frame = data.metrics
    if metric not in frame.columns:
        return Curve(np.zeros(0), np.zeros(0))
    frame = frame.filter(pl.col(metric).is_not_null())
    values = frame[metric].to_numpy().astype(np.float64)
    if "tokens" in frame.columns and frame["tokens"].null_count() == 0:
        tokens = frame["tokens"].to_numpy().astype(np.float64)
    else:
        batch = float(data.config.get("batch_size") or 1)
        tokens = frame["step"].to_numpy().astype(np.float64) * batch
    ok = np.isfinite(values) & np.isfinite(tokens)
    return Curve(tokens[ok], values[ok])


def running_median(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing running median over ``window`` points (shorter at the start)."""
    if window <= 1 or len(values) == 0:
        return values.copy()
    return np.array([np.median(values[max(0, i - window + 1): i + 1]) for i in range(len(values))])


def tokens_to_reach(c: Curve, target: float, *, higher_is_better: bool, window: int) -> int | None:
    """Tokens at the first smoothed point reaching ``target`` (None if never)."""
    if len(c.values) == 0:
        return None
    smooth = running_median(c.values, window)
    hit = smooth >= target if higher_is_better else smooth <= target
    idx = np.flatnonzero(hit)
    return int(c.tokens[idx[0]]) if idx.size else None


def final_level(c: Curve, tail: float = 0.05, min_points: int = 5) -> float:
    """Median of the last ``tail`` fraction of logged points (at least ``min_points``)."""
    n = max(min_points, int(len(c.values) * tail))
    return float(np.median(c.values[-n:])) if len(c.values) else float("nan")


def measure_speedup(fresh: RunData, recurrent: RunData, checkpoint: int, *,
                    metric: Literal["loss", "explained_variance"] = "loss", tolerance: float = 0.01,
                    window: int = 5, recurrent_run: str = "series") -> SpeedUp | None:
    """Compare a fresh and a recurrent run on the same activations (None without the metric)."""
    cf, cr = curve(fresh, metric), curve(recurrent, metric)
    if len(cf.values) == 0 or len(cr.values) == 0:
        return None
    higher = metric == "explained_variance"
    ff = final_level(cf)
    target = ff - tolerance if higher else ff * (1 + tolerance) if ff >= 0 else ff * (1 - tolerance)
    return SpeedUp(checkpoint=checkpoint, metric=metric, target=float(target),
                   fresh_tokens=tokens_to_reach(cf, target, higher_is_better=higher, window=window),
                   recurrent_tokens=tokens_to_reach(cr, target, higher_is_better=higher, window=window),
                   recurrent_budget=int(cr.tokens[-1]), fresh_budget=int(cf.tokens[-1]),
                   fresh_final=ff, recurrent_final=final_level(cr), recurrent_run=recurrent_run)
