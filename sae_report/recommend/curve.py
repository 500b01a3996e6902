"""The curve machinery of the l1_alpha fit (pure numpy): a run's point, grouping runs by l1_alpha,
the monotone (isotonic) fit, slopes, the monotone cubic (PCHIP) and its root, and rounding that
never crosses a run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Noise floor for log L0 of a run (about 3%): no run's settled level is known better than this.
NOISE_FLOOR = 0.03


@dataclass(frozen=True)
class RunPoint:
    """One run's place on the l1_alpha/L0 curve."""

    run_id: str
    """Run id (``train_05555a4b``)."""
    l1_alpha: float
    """The run's l1_alpha (> 0)."""
    l0: float
    """Settled L0 as a fraction of the dictionary (second-half median), > 0."""
    noise: float = 0.0
    """Standard error of ``log(l0)`` (from the second-half spread); 0 when unknown."""


def pava_decreasing(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted isotonic regression with a non-increasing constraint (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [weighted mean, weight, count]
    for yi, wi in zip(np.asarray(y, float), np.asarray(w, float)):
        blocks.append([yi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:  # violates non-increasing
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    out: list[float] = []
    for m, _, c in blocks:
        out.extend([m] * int(c))
    return np.asarray(out)


def weighted_slope(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float | None:
    """Weighted least-squares slope of y on x (None with fewer than two distinct x)."""
    if len(x) < 2 or np.ptp(x) <= 0:
        return None
    xm = np.average(x, weights=w)
    ym = np.average(y, weights=w)
    sxx = float(np.sum(w * (x - xm) ** 2))
    return float(np.sum(w * (x - xm) * (y - ym)) / sxx) if sxx > 0 else None


def round_sig(v: float, digits: int = 3) -> float:
    return float(f"{v:.{digits}g}")


def round_inside(v: float, lo: float, hi: float) -> float:
    """``v`` with the fewest significant digits (3 or more) that keep it strictly inside (lo, hi)."""
    for digits in range(3, 16):
        r = round_sig(v, digits)
        if lo < r < hi:
            return r
    return v


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson derivatives of the monotone cubic through (x, y) (as scipy's PCHIP)."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    d = np.zeros(n)
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])

    def end(h0: float, h1: float, d0: float, d1: float) -> float:
        v = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(v) != np.sign(d0):
            return 0.0
        if np.sign(d0) != np.sign(d1) and abs(v) > 3 * abs(d0):
            return 3 * d0
        return float(v)

    if n == 2:
        d[:] = delta[0]
    else:
        d[0] = end(h[0], h[1], delta[0], delta[1])
        d[-1] = end(h[-1], h[-2], delta[-1], delta[-2])
    return d


def pchip_root(x: np.ndarray, y: np.ndarray, a: int, b: int, level: float) -> float:
    """Where the monotone cubic through (x, y) crosses ``level`` between points a and b (bisection)."""
    d = pchip_slopes(x, y)
    xa, xb, ya, yb, da, db = x[a], x[b], y[a], y[b], d[a], d[b]
    h = xb - xa

    def f(t: float) -> float:
        t2, t3 = t * t, t * t * t
        return ((2 * t3 - 3 * t2 + 1) * ya + (t3 - 2 * t2 + t) * h * da + (-2 * t3 + 3 * t2) * yb
                + (t3 - t2) * h * db)

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) > level:  # still above the target: the root is further right
            lo = mid
        else:
            hi = mid
    return float(xa + h * (lo + hi) / 2)


@dataclass(frozen=True)
class Grouped:
    """Runs grouped by l1_alpha (repeats averaged), in ascending l1_alpha, with the monotone fit."""

    x: np.ndarray
    """log l1_alpha, ascending, distinct."""
    y: np.ndarray
    """Weighted mean log settled L0 per x."""
    w: np.ndarray
    """Weights (1 / noise^2, summed over repeats)."""
    noise: np.ndarray
    """Standard error of y."""
    ids: list[list[str]]
    """Run ids per x."""
    fit: np.ndarray
    """Isotonic (non-increasing) fit of y."""
    l1: list[float]
    """The l1_alpha values as given (not exp(log))."""


def group(runs: Sequence[RunPoint]) -> Grouped:
    """Group runs by l1_alpha and fit the monotone curve."""
    order = sorted(runs, key=lambda r: r.l1_alpha)
    xs: list[float] = []
    members: list[list[RunPoint]] = []
    for r in order:
        lx = math.log(r.l1_alpha)
        if xs and abs(lx - xs[-1]) < 1e-9:
            members[-1].append(r)
        else:
            xs.append(lx)
            members.append([r])
    ys, ws, ns, ids = [], [], [], []
    for group in members:
        sig = np.array([max(r.noise, NOISE_FLOOR) for r in group])
        wi = 1.0 / sig**2
        yi = np.array([math.log(r.l0) for r in group])
        ys.append(float(np.average(yi, weights=wi)))
        ws.append(float(wi.sum()))
        # repeated runs: the scatter between them is evidence of noise too
        spread = float(np.std(yi, ddof=1) / math.sqrt(len(yi))) if len(yi) > 1 else 0.0
        ns.append(max(float(1.0 / math.sqrt(wi.sum())), spread))
        ids.append([r.run_id for r in group])
    x, y, w = np.array(xs), np.array(ys), np.array(ws)
    return Grouped(x=x, y=y, w=w, noise=np.array(ns), ids=ids, fit=pava_decreasing(y, w),
                    l1=[group[0].l1_alpha for group in members])

