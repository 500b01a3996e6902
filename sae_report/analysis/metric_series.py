"""One metric as the detectors see it: raw finite points, non-finite steps, and a binned, smoothed
curve on the metric's working scale (log for L0 and loss, linear for fractions).

Everything here is vectorised numpy: a 10M-row log costs one pass per metric plus ``bins`` medians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl

from .claims import ClaimMaker
from .config import AnalyzerConfig

#: Metrics judged on a log scale (ratio-scale quantities spanning orders of magnitude).
LOG_METRICS = frozenset({"l0", "l0_frac", "loss", "mse", "l1"})


@dataclass(frozen=True)
class Series:
    """A metric prepared for the detectors."""

    metric: str
    """Canonical metric name."""
    log: bool
    """True when ``y`` is the natural log of the metric."""
    step: np.ndarray
    """Steps of the finite raw values (int64, ascending)."""
    value: np.ndarray
    """Finite raw values (float64)."""
    nonfinite_step: np.ndarray
    """Steps where the metric was NaN or +-inf (int64)."""
    x: np.ndarray
    """Bin centres as steps (float64); only bins holding points."""
    y: np.ndarray
    """Per-bin median on the working scale, smoothed by a rolling median."""
    y_raw: np.ndarray
    """Per-bin median on the working scale, unsmoothed."""
    t0: int
    """First logged step of the run (all metrics)."""
    t1: int
    """Last logged step of the run."""
    noise: float
    """Point-to-point noise of the binned curve (robust std of lag-1 differences / sqrt 2)."""
    scale: float
    """Robust range of ``y`` over the run (1st to 99th percentile), never below a small floor."""
    all_step: np.ndarray
    """Steps of every logged (non-null) value, NaN/inf included (int64, ascending)."""
    all_value: np.ndarray
    """Every logged value, NaN/inf included (float64)."""

    @cached_property
    def claims(self) -> ClaimMaker:
        """Claims about this metric, computed from its raw logged values."""
        return ClaimMaker(self.metric, self.all_step, self.all_value, all_finite=not len(self.nonfinite_step))

    @property
    def span(self) -> int:
        return max(1, self.t1 - self.t0)

    def frac(self, step: float) -> float:
        """Position of ``step`` as a fraction of the run."""
        return (step - self.t0) / self.span

    def steps_of(self, frac: float) -> float:
        """Length of ``frac`` of the run, in steps."""
        return frac * self.span

    def to_value(self, y: float) -> float:
        """Working scale -> metric units."""
        return float(np.exp(y)) if self.log else float(y)

    def bins_of(self, frac: float) -> int:
        """How many bins (at least 1) cover ``frac`` of the run."""
        if len(self.x) < 2:
            return 1
        width = (self.x[-1] - self.x[0]) / max(1, len(self.x) - 1)
        return max(1, int(round(frac * self.span / max(width, 1e-12))))


def robust_std(a: np.ndarray) -> float:
    """1.4826 x median absolute deviation (0 for fewer than 2 values)."""
    a = a[np.isfinite(a)]
    if len(a) < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(a - np.median(a))))


def rolling_median(y: np.ndarray, k: int) -> np.ndarray:
    """Centred rolling median of odd width ``k`` (edges use the available points)."""
    n = len(y)
    if k <= 1 or n < 3:
        return y.copy()
    k = min(k | 1, n if n % 2 else n - 1)
    h = k // 2
    pad = np.concatenate([np.full(h, np.nan), y, np.full(h, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(pad, k)
    return np.nanmedian(win, axis=1)


def bin_medians(step: np.ndarray, val: np.ndarray, t0: int, t1: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-width step bins over [t0, t1]: (mean step, median value) of the non-empty bins."""
    if len(step) <= bins:
        return step.astype(np.float64), val.astype(np.float64)
    g = (pl.DataFrame({"s": step, "v": val})
         .with_columns(((pl.col("s") - t0) * bins // (t1 - t0 + 1)).alias("b"))
         .group_by("b").agg(pl.col("s").mean(), pl.col("v").median()).sort("b"))
    return g.get_column("s").to_numpy().astype(np.float64), g.get_column("v").to_numpy().astype(np.float64)


def bin_all(frame: pl.DataFrame, metrics: list[str], t0: int, t1: int, bins: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-bin (mean step, median of the finite values) of every metric in one polars pass.

    Metrics logged at other cadences are binned on their own steps (nulls and non-finite values
    are left out of both the centre and the median). Short logs are not binned at all."""
    if not metrics:
        return {}
    if frame.height <= bins:
        out = {}
        for m in metrics:
            sub = frame.select("step", m).filter(pl.col(m).is_finite())
            out[m] = (sub.get_column("step").to_numpy().astype(np.float64), sub.get_column(m).to_numpy().astype(np.float64))
        return out
    out = {}
    slow = []
    for m in metrics:
        fast = _chunk_medians(frame, m, bins)
        if fast is None:
            slow.append(m)
        else:
            out[m] = fast
    if not slow:
        return out
    metrics = slow
    width = t1 - t0 + 1
    aggs = []
    for m in metrics:
        ok = pl.col(m).is_finite()
        aggs += [pl.col("step").filter(ok).mean().alias(f"x\x00{m}"), pl.col(m).filter(ok).median().alias(f"v\x00{m}")]
    g = (frame.lazy().select("step", *metrics)
         .with_columns(((pl.col("step") - t0) * bins // width).alias("_bin"))
         .group_by("_bin").agg(aggs).sort("_bin").collect())
    for m in metrics:
        x = g.get_column(f"x\x00{m}").to_numpy()
        v = g.get_column(f"v\x00{m}").to_numpy()
        keep = np.isfinite(x) & np.isfinite(v)
        out[m] = (x[keep].astype(np.float64), v[keep].astype(np.float64))
    return out


def _chunk_medians(frame: pl.DataFrame, metric: str, bins: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Fast path for an evenly logged metric: ``bins`` equal-count chunks of its finite points
    (equal-width bins when the logging is even), medians by one 2-D partition over at most ~256
    evenly strided points per chunk (the median of a dense chunk barely moves; a 10M-row log costs
    what a 128K-row one does). None when the logging is uneven (chunk widths differ by more than
    1.5x), so the caller bins by step."""
    step, val, _ = _raw(frame, metric)
    n = len(step)
    if n < 4 * bins:
        return None
    k = n // bins
    m = k * bins
    edges = step[0:m:k]
    widths = np.diff(np.append(edges, step[m - 1]))
    med_w = float(np.median(widths))
    if med_w <= 0 or float(widths.max()) > 1.5 * med_w or float(widths.min()) < med_w / 1.5:
        return None
    stride = max(1, k // 256)  # a chunk's median from at most ~256 evenly strided points
    ys = np.median(val[:m].reshape(bins, k)[:, ::stride], axis=1)
    xs = step[:m].reshape(bins, k).mean(axis=1)
    if n > m:  # the few leftover points join the last chunk's neighbourhood as one more bin
        xs = np.append(xs, step[m:].mean())
        ys = np.append(ys, np.median(val[m:]))
    return xs.astype(np.float64), ys.astype(np.float64)


def logged(frame: pl.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of every non-null cell of ``metric`` (NaN/inf included), without copying
    when nothing is missing."""
    col = frame.get_column(metric)
    if col.null_count():
        sub = frame.select("step", metric).filter(pl.col(metric).is_not_null())
        step, val = sub.get_column("step").to_numpy(), sub.get_column(metric).to_numpy()
    else:
        step, val = frame.get_column("step").to_numpy(), col.to_numpy()
    return step.astype(np.int64, copy=False), val.astype(np.float64, copy=False)


def _raw(frame: pl.DataFrame, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(finite steps, finite values, non-finite steps) without copying when nothing is missing."""
    step, val = logged(frame, metric)
    fin = np.isfinite(val)
    if fin.all():
        return step, val, np.zeros(0, dtype=np.int64)
    return step[fin], val[fin], step[~fin]


def prepare(frame: pl.DataFrame, metric: str, cfg: AnalyzerConfig, t0: int, t1: int,
            d_sae: int | None = None, binned: tuple[np.ndarray, np.ndarray] | None = None) -> Series | None:
    """Build the ``Series`` of ``metric`` (None when the column is absent or has no finite value).
    ``binned``: this metric's entry of ``bin_all`` (computed here when not given)."""
    if metric not in frame.columns:
        return None
    all_step, all_val = logged(frame, metric)
    fin = np.isfinite(all_val)
    if fin.all():
        step, val, nonfinite = all_step, all_val, np.zeros(0, dtype=np.int64)
    else:
        step, val, nonfinite = all_step[fin], all_val[fin], all_step[~fin]
    if len(step) == 0:
        if len(nonfinite) == 0:
            return None
        empty = np.zeros(0)
        return Series(metric, metric in LOG_METRICS, step, val, nonfinite, empty, empty, empty, t0, t1, 0.0, 1.0,
                      all_step, all_val)
    log = metric in LOG_METRICS
    x, vb = binned if binned is not None else bin_all(frame, [metric], t0, t1, cfg.bins)[metric]
    if log:
        pos = vb[vb > 0]
        floor = float(pos.min()) / 2 if len(pos) else 1e-12
        yb = np.log(np.maximum(vb, floor))
    else:
        yb = vb
    width = max(1.0, (t1 - t0) / max(1, len(x)))
    k = max(1, int(round(cfg.smooth_frac * (t1 - t0) / width)))
    y = rolling_median(yb, k)
    noise = robust_std(np.diff(yb)) / np.sqrt(2) if len(yb) > 2 else 0.0
    if len(y):
        lo, hi = np.percentile(y, [1, 99])
        scale = float(hi - lo)
    else:
        scale = 0.0
    # Range floor: a curve that barely moves must not have its noise judged as structure.
    if log:
        floor_scale = 0.05
    elif metric.endswith("_frac"):
        floor_scale = 0.1
    elif metric == "dead":
        floor_scale = 0.1 * (d_sae or (float(np.max(np.abs(val))) if len(val) else 1.0))
    else:
        floor_scale = 0.1 * (float(np.max(np.abs(val))) if len(val) else 1.0)
    return Series(metric, log, step, val, nonfinite, x, y, yb, t0, t1, float(noise), max(scale, floor_scale),
                  all_step, all_val)


def slice_steps(step: np.ndarray, lo: float, hi: float) -> slice:
    """Index range of the sorted int64 ``step`` with lo <= step <= hi (O(log n), no float copy)."""
    a = int(np.searchsorted(step, np.int64(math.ceil(lo)), side="left"))
    b = int(np.searchsorted(step, np.int64(math.floor(hi)), side="right"))
    return slice(a, max(a, b))


def window_mask(s: Series, lo_frac: float, hi_frac: float) -> np.ndarray:
    """Bins whose centre lies in [lo_frac, hi_frac] of the run."""
    f = (s.x - s.t0) / s.span
    return (f >= lo_frac) & (f <= hi_frac)


def runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as (first index, last index) pairs."""
    if not len(mask):
        return []
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.diff(m.astype(np.int8))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))
