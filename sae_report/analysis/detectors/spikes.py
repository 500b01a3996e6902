"""Late spikes: a transient excursion in the last part of the run that does not persist.

Each bin in the last ``late_frac`` of the run is judged against a trailing window that ends BEFORE
it (so the spike cannot hide in its own baseline): the baseline is a robust line through that window
(medians of its halves, so a steadily falling curve is not judged against a lagging level), the
noise band the 5-95% half-width of the window's residuals about that line. Persistence rule: the excursion must hold for ``spike_min_bins``
bins (hysteresis: the first over the threshold, the next still over half of it; one logged point
alone is a glitch) and come back under half the threshold within ``spike_max_span`` of the run
(otherwise it is a new level, not a spike).
"""

from __future__ import annotations

import math

import numpy as np

from ..result import Finding, FindingKind
from ..series import Series
from . import Context, fmt_step, fmt_value, label


def _trailing_line(tx: np.ndarray, ty: np.ndarray):
    """Robust line through a trailing window (medians of its two halves), so a steadily falling
    curve is not judged against a lagging median. Returns (baseline at x, residuals)."""
    h = len(ty) // 2
    m1, m2 = float(np.median(ty[:h])), float(np.median(ty[h:]))
    c1, c2 = float(np.median(tx[:h])), float(np.median(tx[h:]))
    slope = (m2 - m1) / (c2 - c1) if c2 > c1 else 0.0

    def at(xv: float) -> float:
        return m2 + slope * (xv - c2)

    return at, ty - (m2 + slope * (tx - c2))


def _spike_in(ctx: Context, s: Series, quiet: list[int] = ()) -> Finding | None:  # type: ignore[assignment]
    """The largest transient excursion of ``s`` late in the run. Candidates whose trailing window
    or own span holds a step of ``quiet`` are skipped (for the dead fraction: resample events,
    whose drops and returns are resampling dynamics, reported by the resampling analysis)."""
    cfg = ctx.cfg
    x, y = s.x, s.y_raw
    n = len(y)
    if n < 20:
        return None
    base_w = cfg.spike_baseline * s.span
    floor = cfg.spike_min_log if s.log else cfg.spike_min_lin
    start_at = s.t0 + (1 - cfg.late_frac) * s.span
    i = int(np.searchsorted(x, start_at))
    lo_idx = np.searchsorted(x, x - base_w)
    best: Finding | None = None
    while i < n:
        a = int(lo_idx[i])
        trail = y[a:i]
        if len(trail) < 5:
            i += 1
            continue
        base_at, resid = _trailing_line(x[a:i], trail)
        base = base_at(x[i])
        q05, q95 = np.percentile(resid, [5, 95])
        thr = max(floor, cfg.spike_band_mult * (q95 - q05) / 2)
        e = y[i] - base
        if abs(e) < thr:
            i += 1
            continue
        sign = 1.0 if e > 0 else -1.0
        back_limit = x[i] + cfg.spike_max_span * s.span
        k = i + 1
        while k < n and x[k] <= back_limit and (y[k] - base_at(x[k])) * sign >= thr / 2:
            k += 1
        held = k - i  # bins from the first one over the threshold until it falls under half of it
        came_back = k < n and x[k] <= back_limit
        excused = any(x[i] - base_w <= q <= x[min(k, n - 1)] for q in quiet)
        if held >= cfg.spike_min_bins and came_back and not excused:
            seg = y[i:k]
            p = i + int(np.argmax(seg * sign))
            peak, level, after = s.to_value(float(y[p])), s.to_value(base_at(x[p])), s.to_value(float(y[k]))
            final = float(s.value[-1])
            word = "jumped" if sign > 0 else "dropped"
            rel = (f"{peak / level:.1f}x its trailing level" if s.log
                   else f"{abs(peak - level) * 100:.1f} points from its trailing level" if s.metric.endswith("_frac")
                   else f"{abs(peak - level):.3g} from its trailing level")
            f = Finding(
                kind=FindingKind.LATE_SPIKE, metric=s.metric, step=int(x[i]), end_step=int(x[k]), severity="warn",
                evidence={"peak": peak, "peak_step": int(x[p]), "baseline": level, "after": after, "final": final,
                          "direction": "up" if sign > 0 else "down", "duration_steps": int(x[k] - x[i])},
                coincides_with=None,
                explanation=(f"{label(s.metric)} {word} to {fmt_value(s.metric, peak)} at step {fmt_step(x[p])} ({rel}, "
                             f"{fmt_value(s.metric, level)}) and came back to {fmt_value(s.metric, after)} within "
                             f"{fmt_step(x[k] - x[i])} steps: a transient, not a new level. The final value is "
                             f"{fmt_value(s.metric, final)}."))
            if best is None or abs(math.log(peak / level) if s.log and level > 0 else peak - level) > abs(
                    math.log(best.evidence["peak"] / best.evidence["baseline"]) if s.log and best.evidence["baseline"] > 0
                    else best.evidence["peak"] - best.evidence["baseline"]):
                best = f
        i = max(k, i + 1)
    return best


def late_spike(ctx: Context) -> list[Finding]:
    """The largest transient excursion in the last part of the run, per metric (L0, dead, loss).
    Dead-fraction excursions next to a resample event are left to the resampling analysis."""
    out = []
    resamples = [e.step for e in ctx.events if e.kind == "resample"]
    for s in (ctx.l0, ctx.series.get("dead_frac"), ctx.loss):
        if s is not None:
            f = _spike_in(ctx, s, resamples if s.metric == "dead_frac" else [])
            if f is not None:
                out.append(f)
    return out
