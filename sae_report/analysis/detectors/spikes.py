"""Late spikes: a transient excursion in the last part of the run that does not persist.

Each bin in the last ``late_frac`` of the run is judged against a trailing window that ends BEFORE
it (so the spike cannot hide in its own baseline): the baseline is a robust line through that window
(medians of its halves, so a steadily falling curve is not judged against a lagging level). The
excursion must clear all of: the floor (``spike_min_log``/``spike_min_lin``), ``spike_band_mult``
times the trailing 5-95% band, ``spike_noise_z`` times the curve's point-to-point noise (so +-35%
noise over thousands of points does not raise one by chance), and the largest detrended swing of
the stretch before it (one tooth of a sawtooth is not exceptional); for L0, at least
``spike_min_features`` active features per token (quantised jitter is not a spike). Persistence:
it holds for ``spike_min_bins`` bins (each over half the threshold) and comes back within
``spike_max_span`` of the run (otherwise it is a new level, not a spike).
"""

from __future__ import annotations

import math

import numpy as np

from .. import evidence as ev
from ..claims import Claim, difference, ratio
from ..result import Finding, FindingKind
from ..metric_series import Series
from . import Context, cap, finding, label


#: A late spike must exceed every earlier excursion (measured the same way) by this factor.
SPIKE_OVER_PRIOR = 1.2


def _feature_scale(ctx: Context, s: Series) -> float | None:
    """Features per token per unit of the metric (None when not an L0 metric or d_sae unknown)."""
    if s.metric == "l0":
        return 1.0
    if s.metric == "l0_frac" and ctx.d_sae:
        return float(ctx.d_sae)
    return None


def _excursions(s: Series, base_w: float) -> tuple[np.ndarray, np.ndarray, list]:
    """For every bin: its excursion from the robust line through the trailing window before it (0
    where that window is too short; kept only when the trailing median agrees on its sign and size),
    the half-width of the window's 5-95% residual band, and the line's (level, slope, centre) so the
    caller can evaluate it. Vectorised over windows of a fixed number of bins (the bins are evenly
    spaced), so a 500-bin curve costs a few array operations."""
    x, y = s.x, s.y_raw
    n = len(y)
    exc, band = np.zeros(n), np.zeros(n)
    lines: list = [None] * n
    width = float(np.median(np.diff(x))) if n > 1 else 1.0
    k = int(round(base_w / max(width, 1e-12)))
    if n < 7 or k < 5 or k >= n:
        return exc, band, lines
    h = k // 2
    wy = np.lib.stride_tricks.sliding_window_view(y, k)[:-1]  # window ending before bin i = j + k
    wx = np.lib.stride_tricks.sliding_window_view(x, k)[:-1]
    m1, m2 = np.median(wy[:, :h], axis=1), np.median(wy[:, h:], axis=1)
    c1, c2 = np.median(wx[:, :h], axis=1), np.median(wx[:, h:], axis=1)
    slope = np.where(c2 > c1, (m2 - m1) / np.where(c2 > c1, c2 - c1, 1.0), 0.0)
    resid = wy - (m2[:, None] + slope[:, None] * (wx - c2[:, None]))
    q05, q95 = np.percentile(resid, [5, 95], axis=1)
    level = np.median(wy, axis=1)
    idx = np.arange(k, n)
    e = y[idx] - (m2 + slope * (x[idx] - c2))
    sign = np.sign(e)
    exc[idx] = sign * np.minimum(np.abs(e), np.maximum(0.0, (y[idx] - level) * sign))
    band[idx] = (q95 - q05) / 2
    for j, i in enumerate(idx.tolist()):
        lines[i] = (float(m2[j]), float(slope[j]), float(c2[j]))
    return exc, band, lines


def _at(line: tuple[float, float, float], xv: float) -> float:
    m2, slope, c2 = line
    return m2 + slope * (xv - c2)


def _candidate(ctx: Context, s: Series, quiet: list[int]) -> tuple[int, int, float, float] | None:
    """The largest qualifying excursion as (first bin, bin it came back at, sign, size), or None.
    An excursion qualifies only if it is larger than every excursion measured the same way earlier
    in the run (after its first 30%, before its own trailing window): a swing the run has already
    made many times is not a spike."""
    cfg = ctx.cfg
    x, y = s.x, s.y_raw
    n = len(y)
    if n < 20:
        return None
    base_w = cfg.spike_baseline * s.span
    floor = cfg.spike_min_log if s.log else cfg.spike_min_lin
    floor = max(floor, cfg.spike_noise_z * s.noise)
    exc, band, lines = _excursions(s, base_w)
    i = int(np.searchsorted(x, s.t0 + (1 - cfg.late_frac) * s.span))
    early_from = int(np.searchsorted(x, s.t0 + 0.3 * s.span))
    fscale = _feature_scale(ctx, s)
    best = None
    while i < n:
        line = lines[i]
        if line is None:
            i += 1
            continue
        thr = max(floor, cfg.spike_band_mult * band[i])
        prior_end = int(np.searchsorted(x, x[i] - base_w))
        prior = np.abs(exc[early_from:prior_end])
        if len(prior):
            thr = max(thr, SPIKE_OVER_PRIOR * float(np.max(prior)))
        e = exc[i]
        if abs(e) < thr:
            i += 1
            continue
        sign = 1.0 if e > 0 else -1.0
        back_limit = x[i] + cfg.spike_max_span * s.span
        k = i + 1
        while k < n and x[k] <= back_limit and (y[k] - _at(line, x[k])) * sign >= thr / 2:
            k += 1
        came_back = k < n and x[k] <= back_limit
        excused = any(x[i] - base_w <= q <= x[min(k, n - 1)] for q in quiet)
        big_enough = True
        if fscale is not None:
            level = math.exp(_at(line, x[i])) if s.log else _at(line, x[i])
            peak = math.exp(y[i]) if s.log else y[i]
            big_enough = abs(peak - level) * fscale >= cfg.spike_min_features
        if k - i >= cfg.spike_min_bins and came_back and not excused and big_enough:
            if best is None or abs(e) > best[3]:
                best = (i, k, sign, abs(e))
        i = max(k, i + 1)
    return best


def _spike_in(ctx: Context, s: Series, quiet: list[int]) -> Finding | None:
    found = _candidate(ctx, s, quiet)
    if found is None:
        return None
    i, k, sign, _ = found
    x = s.x
    hw = 0.5 * s.span / max(1, len(x))
    c = s.claims
    a, b = float(x[i]) - hw, float(x[k - 1]) + hw
    claims: dict[str, Claim] = {
        "peak": c.stat("max" if sign > 0 else "min", a, b),
        "baseline": c.stat("median", float(x[i]) - ctx.cfg.spike_baseline * s.span, a - 1),
        "after": c.stat("median", float(x[k]) - hw, max(float(x[k]) + hw, float(x[min(k + 2, len(x) - 1)]))),
        "final": c.last(),
    }
    if any(claims[n].value is None for n in ("peak", "baseline", "after")):
        return None
    mid = (claims["peak"].value + claims["baseline"].value) / 2  # type: ignore[operator]
    up = sign > 0
    claims["start"] = c.first_step("above" if up else "below", mid, a, b)
    claims["back"] = c.first_step("below" if up else "above", mid, claims["peak"].step or a, claims["after"].end_step or b)
    if claims["start"].value is None or claims["back"].value is None:
        return None
    claims["duration_steps"] = difference("back", "start", claims)
    claims["rel"] = ratio("peak", "baseline", claims) if s.log else difference("peak", "baseline", claims)
    word = "jumped" if up else "dropped"
    rel = "{rel} its" if s.log else "{rel} from its"
    template = (f"{cap(label(s.metric))} {word} to {{peak}} at step {{peak.step}}, {rel} median of {{baseline}} over the "
                "steps before ({baseline.start_step} to {baseline.end_step}); it passed {start.threshold} at step "
                "{start} and was back past it at step {back}, {duration_steps} steps later, settling at a median of "
                "{after} (steps {after.start_step} to {after.end_step}): a transient, not a new level. The final "
                "value is {final}.")
    e = ev.build(ev.LateSpikeEvidence, claims, direction="up" if up else "down")
    return finding(FindingKind.LATE_SPIKE, s.metric, int(claims["start"].value), int(claims["back"].value), "warn", e,  # type: ignore[arg-type]
                   template, claims)


def late_spike(ctx: Context) -> list[Finding]:
    """The largest transient excursion in the last part of the run, per metric (L0, dead, loss).
    Dead-fraction excursions next to a resample are left to the resampling analysis."""
    out = []
    resamples = [iv.step for iv in ctx.interventions if iv.kind == "resample"]
    for s in (ctx.l0, ctx.series.get("dead_frac"), ctx.loss):
        if s is not None:
            f = _spike_in(ctx, s, resamples if s.metric == "dead_frac" else [])
            if f is not None:
                out.append(f)
    return out
