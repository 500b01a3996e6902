"""Shape detectors: dormancy at the start, plateaus, oscillation, a secondary rise after a plateau,
and a trend still running at the end (not converged)."""

from __future__ import annotations

import math

import numpy as np

from ..result import Finding, FindingKind
from ..series import Series, robust_std, rolling_median, runs_of, slice_steps
from . import Context, fmt_step, fmt_value, label


def _shape_series(ctx: Context) -> list[Series]:
    return [s for s in (ctx.l0, ctx.dead) if s is not None and len(s.y) >= 10]


def dormancy(ctx: Context) -> list[Finding]:
    """The dead-feature metric stays at its start value for ``dormancy_min_span`` of the run or more."""
    d = ctx.dead
    if d is None:
        ctx.skip("dormancy", "no dead-feature metric (dead, dead_frac or an alias) in the log")
        return []
    if len(d.y) < 10:
        return []
    tol = max(ctx.cfg.dormancy_tol * d.scale, 1e-9)
    moved = np.flatnonzero(np.abs(d.y - d.y[0]) > tol)
    if not len(moved):
        return []  # flat all run: a plateau, not dormancy
    end = float(d.x[max(0, int(moved[0]) - 1)])
    if d.frac(end) < ctx.cfg.dormancy_min_span:
        return []
    v0 = d.to_value(float(d.y[0]))
    window = ctx.config.get("dead_window")
    is_window = isinstance(window, (int, float)) and window > 0 and end - d.t0 <= 1.5 * float(window)
    why = (f" This matches the dead window ({fmt_step(window)} steps) filling: no feature can count as dead before it "
           f"has had that long to fire." if is_window else "")
    return [Finding(
        kind=FindingKind.DORMANCY, metric=d.metric, step=int(d.step[0]), end_step=int(end), severity="info",
        evidence={"value": v0, "span_frac": d.frac(end), "dead_window": window if is_window else None},
        coincides_with=None,
        explanation=(f"{label(d.metric)} stayed at {fmt_value(d.metric, v0)} for the first {fmt_step(end - d.t0)} steps "
                     f"({d.frac(end):.0%} of the run).{why}"))]


def _plateaus(ctx: Context, s: Series) -> list[tuple[int, int]]:
    tol = ctx.cfg.plateau_tol * s.scale
    n = len(s.y)
    reach = np.zeros(n, dtype=np.int64)
    for i in range(n):
        seg = s.y[i:]
        rng = np.maximum.accumulate(seg) - np.minimum.accumulate(seg)
        over = np.flatnonzero(rng > tol)
        reach[i] = i + (int(over[0]) - 1 if len(over) else len(seg) - 1)
    taken = np.zeros(n, dtype=bool)
    found: list[tuple[int, int]] = []
    order = np.argsort(-(s.x[reach] - s.x), kind="stable")
    for i in order:
        j = int(reach[i])
        if s.frac(s.x[j]) - s.frac(s.x[i]) < ctx.cfg.plateau_min_span:
            break
        if taken[i:j + 1].any():
            free = runs_of(~taken[i:j + 1])
            if not free:
                continue
            a, b = max(free, key=lambda r: r[1] - r[0])
            i, j = i + a, i + b
            if s.frac(s.x[j]) - s.frac(s.x[i]) < ctx.cfg.plateau_min_span:
                continue
        taken[i:j + 1] = True
        found.append((int(i), int(j)))
    return sorted(found)


def plateau(ctx: Context) -> list[Finding]:
    """Flat within ``plateau_tol`` of the metric's range for ``plateau_min_span`` of the run."""
    out = []
    for s in _shape_series(ctx):
        for i, j in _plateaus(ctx, s):
            if i == 0 and s is ctx.dead:
                continue  # a flat start of the dead curve is dormancy
            level = s.to_value(float(np.median(s.y_raw[i:j + 1])))
            lo, hi = s.to_value(float(np.min(s.y[i:j + 1]))), s.to_value(float(np.max(s.y[i:j + 1])))
            out.append(Finding(
                kind=FindingKind.PLATEAU, metric=s.metric, step=int(s.x[i]), end_step=int(s.x[j]), severity="info",
                evidence={"level": level, "low": lo, "high": hi, "span_frac": s.frac(s.x[j]) - s.frac(s.x[i])},
                coincides_with=None,
                explanation=(f"{label(s.metric)} stayed flat at about {fmt_value(s.metric, level)} (between "
                             f"{fmt_value(s.metric, lo)} and {fmt_value(s.metric, hi)}) from step {fmt_step(s.x[i])} "
                             f"to {fmt_step(s.x[j])}.")))
    return out


def secondary_rise(ctx: Context) -> list[Finding]:
    """After a plateau, the dead-feature metric climbs again and ends above the plateau."""
    d = ctx.dead
    if d is None or len(d.y) < 10:
        return []
    out = []
    for i, j in _plateaus(ctx, d):
        if j >= len(d.y) - 3:
            continue
        level = float(np.median(d.y_raw[i:j + 1]))
        tail = d.y[j + 1:]
        end_level = float(np.median(d.y_raw[-max(3, len(d.y) // 50):]))
        rise = end_level - level
        if rise < ctx.cfg.secondary_rise_min * max(d.scale, 0.2 if d.metric == "dead_frac" else 0.0) \
                or np.mean(tail > level) < 0.8:
            continue
        a, b = d.to_value(level), d.to_value(end_level)
        extra = ""
        if d.metric == "dead_frac" and ctx.d_sae:
            extra = f" (+{(b - a) * ctx.d_sae:,.0f} features)"
        out.append(Finding(
            kind=FindingKind.SECONDARY_RISE, metric=d.metric, step=int(d.x[j]), end_step=int(d.x[-1]), severity="warn",
            evidence={"plateau_level": a, "final_level": b, "rise": b - a},
            coincides_with=None,
            explanation=(f"After the plateau, {label(d.metric).lower()} started rising again at step {fmt_step(d.x[j])}: from "
                         f"{fmt_value(d.metric, a)} to {fmt_value(d.metric, b)} by the end{extra}. Features are "
                         f"dying again late in the run (look for an lr or l1_alpha schedule change there).")))
    return out


def oscillation(ctx: Context) -> list[Finding]:
    """Large detrended swings over ``osc_min_span`` of the run, well above the point-to-point noise."""
    cfg = ctx.cfg
    out = []
    for s in _shape_series(ctx):
        k = s.bins_of(cfg.osc_window)
        if len(s.y_raw) < 2 * k or k < 5:
            continue
        trend = rolling_median(s.y_raw, k | 1)
        r = s.y_raw - trend
        pad = np.concatenate([np.full(k // 2, np.nan), r, np.full(k - 1 - k // 2, np.nan)])
        win = np.lib.stride_tricks.sliding_window_view(pad, k)
        med = np.nanmedian(win, axis=1)
        amp = 1.4826 * np.nanmedian(np.abs(win - med[:, None]), axis=1)
        dr = np.concatenate([[np.nan], np.diff(r)])
        padd = np.concatenate([np.full(k // 2, np.nan), dr, np.full(k - 1 - k // 2, np.nan)])
        wind = np.lib.stride_tricks.sliding_window_view(padd, k)
        dmed = np.nanmedian(wind, axis=1)
        noise = 1.4826 * np.nanmedian(np.abs(wind - dmed[:, None]), axis=1) / math.sqrt(2)
        floor = cfg.osc_min_amp_log if s.log else cfg.osc_min_amp_lin
        mask = (amp >= floor) & (amp >= cfg.osc_noise_mult * noise)
        for i, j in runs_of(mask):
            if s.frac(s.x[j]) - s.frac(s.x[i]) < cfg.osc_min_span:
                continue
            seg = r[i:j + 1]
            crossings = int(np.sum(np.diff(np.sign(seg[seg != 0])) != 0))
            if crossings < cfg.osc_min_crossings:
                continue
            vals = s.value[slice_steps(s.step, s.x[i], s.x[j])]
            a = float(np.median(amp[i:j + 1]))
            swing = f"+-{(math.exp(a) - 1) * 100:.0f}%" if s.log else f"+-{fmt_value(s.metric, a)}"
            out.append(Finding(
                kind=FindingKind.OSCILLATION, metric=s.metric, step=int(s.x[i]), end_step=int(s.x[j]), severity="warn",
                evidence={"amplitude": a, "amplitude_scale": "log" if s.log else "linear", "crossings": crossings,
                          "mean": float(np.mean(vals)) if len(vals) else None,
                          "std": float(np.std(vals)) if len(vals) else None},
                coincides_with=None,
                explanation=(f"{label(s.metric)} swung {swing} around its trend from step {fmt_step(s.x[i])} to "
                             f"{fmt_step(s.x[j])} ({crossings} crossings) instead of settling.")))
    return out


def not_converged(ctx: Context) -> list[Finding]:
    """The metric still trends over the last ``converge_window`` of the run."""
    cfg = ctx.cfg
    out = []
    for s in [*_shape_series(ctx), *([ctx.loss] if ctx.loss is not None and len(ctx.loss.y) >= 10 else [])]:
        f = (s.x - s.t0) / s.span
        a = s.y_raw[(f >= 1 - cfg.converge_window) & (f < 1 - cfg.converge_window / 2)]
        b = s.y_raw[f >= 1 - cfg.converge_window / 2]
        if len(a) < 3 or len(b) < 3:
            continue
        change = float(np.median(b) - np.median(a))
        se = math.sqrt(robust_std(a) ** 2 / len(a) + robust_std(b) ** 2 / len(b)) * 1.25
        floor = cfg.converge_min_log if s.log else cfg.converge_min_lin
        if abs(change) < floor or abs(change) < cfg.converge_noise_mult * se:
            continue
        va, vb = s.to_value(float(np.median(a))), s.to_value(float(np.median(b)))
        word = "falling" if change < 0 else "rising"
        start = s.t0 + (1 - cfg.converge_window) * s.span
        out.append(Finding(
            kind=FindingKind.NOT_CONVERGED, metric=s.metric, step=int(start), end_step=int(s.x[-1]), severity="warn",
            evidence={"from": va, "to": vb, "change": vb - va, "ratio": vb / va if va else None,
                      "window_frac": cfg.converge_window},
            coincides_with=None,
            explanation=(f"{label(s.metric)} was still {word} at the end: {fmt_value(s.metric, va)} -> {fmt_value(s.metric, vb)} "
                         f"over the last {cfg.converge_window:.0%} of the run. It has not converged; a longer run "
                         f"would end elsewhere.")))
    return out
