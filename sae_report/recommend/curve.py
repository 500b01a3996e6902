"""The curve machinery of the l1_alpha fit: a run's point, grouping runs by l1_alpha, the monotone
(isotonic) fit, slopes, the monotone cubic (scipy's PCHIP) and its root (Brent's method), and
rounding that never crosses a run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq, isotonic_regression

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
    """Weighted isotonic regression with a non-increasing constraint (scipy's pool adjacent violators)."""
    return np.asarray(isotonic_regression(np.asarray(y, float), weights=np.asarray(w, float), increasing=False).x)


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


def pchip(x: np.ndarray, y: np.ndarray) -> PchipInterpolator:
    """The monotone cubic (Fritsch-Carlson PCHIP) through (x, y), x ascending."""
    return PchipInterpolator(np.asarray(x, float), np.asarray(y, float), extrapolate=False)


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The derivatives of ``pchip(x, y)`` at the points (for drawing the curve piece by piece)."""
    return np.asarray(pchip(x, y).derivative()(np.asarray(x, float)))


def pchip_root(x: np.ndarray, y: np.ndarray, a: int, b: int, level: float) -> float:
    """Where the monotone cubic through (x, y) crosses ``level`` between points a and b (Brent's
    method; the cubic is monotone between them, so there is one crossing)."""
    curve = pchip(x, y)
    xa, xb = float(x[a]), float(x[b])
    fa, fb = float(curve(xa)) - level, float(curve(xb)) - level
    if fa == 0:
        return xa
    if fb == 0 or fa * fb > 0:  # no sign change (a point on the level): the nearer end
        return xb if abs(fb) <= abs(fa) else xa
    return float(brentq(lambda t: float(curve(t)) - level, xa, xb, xtol=1e-14, rtol=1e-12))


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

