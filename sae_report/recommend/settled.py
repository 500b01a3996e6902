"""The settled level of a metric: a robust estimate over the second half of a run (pure numpy).

The write-up's final 2.18% hid a 4.66% spike at step 90K and a 2.25% second-half mean; a single
last point is not what a run "achieved". The settled level is the median of the second half (by
step), its noise the scatter of block medians, and the half is called unstable when it swings
(coefficient of variation above ``UNSTABLE_CV``) or drifts: its first and last block medians lie
beyond ``DRIFT_RATIO`` apart, or the block medians move steadily one way (a straight line through
their logs explains at least ``TREND_R2`` of their scatter) by at least ``TREND_LOG`` (natural log,
the threshold the analyzer's ``not_converged`` finding uses). A drifting half is still trending: a
longer run would settle elsewhere, so its median is not what the run achieves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Second-half coefficient of variation above which a run's L0 is flagged as too unstable to trust.
UNSTABLE_CV = 0.4
#: Ratio between the first and last fifth of the second half above which the level is still drifting.
DRIFT_RATIO = 1.5
#: A steady move of the block medians by at least this much (natural log: 0.15 = 16%) is a trend
#: (the analyzer's ``converge_min_log``, so a run is "not converged" by one measure in both places).
TREND_LOG = 0.15
#: ... when a straight line through the logs of the block medians explains at least this share of
#: their variance (a steady move, not noise).
TREND_R2 = 0.8
#: Blocks the second half is cut into for the noise estimate.
BLOCKS = 5
#: Fewest finite points in the second half for a settled estimate.
MIN_POINTS = 3


@dataclass(frozen=True)
class Settled:
    """The settled level of one metric."""

    median: float
    """Median over the second half (by step): the settled level."""
    mean: float
    """Mean over the second half."""
    std: float
    """Standard deviation over the second half."""
    final: float
    """Last finite value."""
    final_step: int
    """Step of the last finite value."""
    noise: float
    """Standard error of log(median) from the scatter of block medians (0 when not measurable)."""
    n: int
    """Finite points in the second half."""
    unstable: bool
    """True when the second half swings or drifts too much for the level to be trusted."""
    reason: str
    """Why it is unstable ("" when stable)."""
    drifting: bool = False
    """True when the second half still trends one way (a longer run would settle elsewhere): the
    part of ``unstable`` that more steps can fix (a swing is not)."""
    first_block: float | None = None
    """Median of the first fifth of the second half (None with too few points)."""
    last_block: float | None = None
    """Median of the last fifth of the second half (None with too few points)."""


def settled_level(steps: np.ndarray, values: np.ndarray, span: tuple[float, float] | None = None) -> Settled | None:
    """Settled level of a positive metric; None when fewer than ``MIN_POINTS`` usable points.

    ``span``: the judged steps ``(t0, t1)`` (the log's first step to its last before a divergence),
    so the second half starts where the analyzer's does (``t0 + (t1 - t0) / 2``) and the settled
    L0 of ``compare`` is the ``second_half_median`` of ``analyze``; default: the metric's own first
    and last finite steps."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(steps) & np.isfinite(values)
    steps, values = steps[ok], values[ok]
    if len(values) == 0:
        return None
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    t0, t1 = span if span is not None else (steps[0], steps[-1])
    mid = t0 + max(1.0, t1 - t0) / 2 if span is not None else t0 + (t1 - t0) / 2
    half = values[(steps >= mid) & (steps <= t1)]
    if len(half) < MIN_POINTS:
        return None
    med = float(np.median(half))
    mean = float(np.mean(half))
    std = float(np.std(half))
    positive = half[half > 0]
    noise = 0.0
    reason = ""
    drifting = False
    first = last = None
    if len(positive) >= 2 * BLOCKS:
        blocks = np.array_split(positive, BLOCKS)
        bmed = np.array([np.median(b) for b in blocks])
        first, last = float(bmed[0]), float(bmed[-1])
        noise = float(np.std(np.log(bmed), ddof=1) / math.sqrt(BLOCKS))
        drift = float(bmed[-1] / bmed[0]) if bmed[0] > 0 else math.inf
        if drift > DRIFT_RATIO or drift < 1 / DRIFT_RATIO or _trend(np.log(bmed)):
            drifting = True
            word = "falling" if drift < 1 else "rising"
            reason = (f"still drifting ({word}): the second half moved from {bmed[0]:.4g} to {bmed[-1]:.4g} "
                      f"({drift:.2f}x)")
    elif len(positive) >= 2:
        noise = float(np.std(np.log(positive), ddof=1) / math.sqrt(len(positive)))
    cv = std / mean if mean > 0 else math.inf
    if cv > UNSTABLE_CV:
        swing = f"second half swings (std {std:.4g} = {cv:.0%} of its mean {mean:.4g})"
        reason = f"{swing}; {reason}" if reason else swing
    return Settled(median=med, mean=mean, std=std, final=float(values[-1]), final_step=int(steps[-1]),
                   noise=noise, n=int(len(half)), unstable=bool(reason), reason=reason, drifting=drifting,
                   first_block=first, last_block=last)


def _trend(logs: np.ndarray) -> bool:
    """A steady move of the block medians (logs) by at least ``TREND_LOG`` over the second half."""
    x = np.arange(len(logs), dtype=float)
    x -= x.mean()
    y = logs - logs.mean()
    sxx, syy = float(x @ x), float(y @ y)
    if sxx == 0 or syy == 0:
        return False
    slope = float(x @ y) / sxx
    r2 = slope * slope * sxx / syy
    return abs(slope) * (len(logs) - 1) >= TREND_LOG and r2 >= TREND_R2
