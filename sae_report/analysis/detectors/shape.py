"""Shape detectors: dormancy at the start, plateaus, oscillation, a secondary rise after a plateau,
and a trend still running at the end (not converged). Judged on the binned curve; every number
they show is a claim on the raw values."""

from __future__ import annotations

import math

import numpy as np

from .. import evidence as ev
from ..claims import Claim, config_claim, difference, ratio
from ..result import Finding, FindingKind
from ..metric_series import Series, robust_std, rolling_median, runs_of
from . import Context, cap, finding, label

#: A dead fraction below this is "no dead features to speak of" (a flat zero is healthy, not a plateau).
DEAD_NEGLIGIBLE = 0.005
#: Autocorrelation a periodic swing reaches at half its period (negative) and at its period.
PERIODIC_NEG = 0.4
PERIODIC_POS = 0.2
#: A secondary rise climbs at least this many times faster than the plateau before it.
RISE_SLOPE_RATIO = 4.0
#: A stretch whose level moved by more than this factor (log metrics) from its first tenth to its
#: last tenth is not flat, whatever the binned curve said.
FLAT_RATIO = 1.25


def _shape_series(ctx: Context) -> list[Series]:
    return [s for s in (ctx.l0, ctx.dead) if s is not None and len(s.y) >= 10]


def dormancy(ctx: Context) -> list[Finding]:
    """No dead feature at all for ``dormancy_min_span`` of the run or more at the start (the dead
    window filling, usually): dated at the first step with a dead feature."""
    d = ctx.dead
    if d is None:
        ctx.skip("dormancy", "no dead-feature metric (dead, dead_frac or an alias) in the log")
        return []
    if len(d.y) < 10:
        return []
    c = d.claims
    claims: dict[str, Claim] = {"start": c.first()}
    if claims["start"].value != 0:
        return []  # dead features from the first step: nothing dormant
    claims["moved"] = c.first_step("above", 0.0, ctx.t0, ctx.t1)
    moved = claims["moved"].value
    if moved is None or d.frac(moved) < ctx.cfg.dormancy_min_span:
        return []  # none dead all run (healthy), or deaths from early on
    window = config_claim("dead_window", ctx.config, unit="count")
    why = ""
    if window.value and window.value > 0 and moved - ctx.t0 <= 1.5 * window.value + d.span / max(1, len(d.x)):
        claims["window"] = window
        why = (" That is the dead window ({window} steps) filling: no feature can count as dead before it has had "
               "that long to fire.")
    template = f"No feature counted as dead from step {{start.step}} until step {{moved}}.{why}"
    e = ev.build(ev.DormancyEvidence, claims)
    return [finding(FindingKind.DORMANCY, d.metric, int(claims["start"].step or ctx.t0), int(moved), "info", e,
                    template, claims)]


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


def _flat_claims(ctx: Context, s: Series, a: float, b: float) -> dict[str, Claim] | None:
    """Median over [a, b] and over its first and last tenth; None when those two differ by more
    than a flat stretch allows (or the stretch is a healthy zero-dead one)."""
    c = s.claims
    tenth = 0.1 * (b - a)
    claims = {"level": c.stat("median", a, b), "first_level": c.stat("median", a, a + tenth),
              "last_level": c.stat("median", b - tenth, b)}
    lv, f, last = claims["level"].value, claims["first_level"].value, claims["last_level"].value
    if lv is None or f is None or last is None:
        return None
    if s.metric.startswith("dead") and (lv / (ctx.d_sae or 1) if s.metric == "dead" else lv) < DEAD_NEGLIGIBLE:
        return None
    if s.log:
        if f <= 0 or last <= 0 or abs(math.log(last / f)) > math.log(FLAT_RATIO):
            return None
    elif abs(last - f) > max(2 * ctx.cfg.plateau_tol * s.scale, 1e-12):
        return None
    return claims


def plateau(ctx: Context) -> list[Finding]:
    """Flat within ``plateau_tol`` of the metric's range for ``plateau_min_span`` of the run."""
    out = []
    for s in _shape_series(ctx):
        spans: list[tuple[float, float]] = []
        for i, j in _plateaus(ctx, s):
            if i == 0 and s is ctx.dead:
                continue  # a flat start of the dead curve is the dead window filling (dormancy)
            a, b = float(s.x[i]), float(s.x[j])
            if _flat_claims(ctx, s, a, b) is None:
                continue
            # two flat stretches side by side at one level are one plateau
            if spans and a - spans[-1][1] <= 3 * s.span / max(1, len(s.x)) and \
                    _flat_claims(ctx, s, spans[-1][0], b) is not None:
                spans[-1] = (spans[-1][0], b)
            else:
                spans.append((a, b))
        for a, b in spans:
            claims = _flat_claims(ctx, s, a, b)
            if claims is None:
                continue
            template = (f"{cap(label(s.metric))} held at a median of {{level}} from step {{level.start_step}} to "
                        "{level.end_step} (a median of {first_level} over its first tenth, {last_level} over its last).")
            out.append(finding(FindingKind.PLATEAU, s.metric, int(a), int(b), "info",
                               ev.build(ev.PlateauEvidence, claims), template, claims))
    return out


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope (0 for fewer than three points)."""
    if len(x) < 3 or float(np.ptp(x)) == 0:
        return 0.0
    return float(np.polyfit(x - x[0], y, 1)[0])


def secondary_rise(ctx: Context) -> list[Finding]:
    """After rising to a plateau, dead features start dying again: the metric climbs past the
    plateau's highest value and ends well above it. A first rise from zero is not one."""
    d = ctx.dead
    if d is None or len(d.y) < 10:
        return []
    out = []
    floor = ctx.cfg.secondary_rise_min * max(d.scale, 0.2 if d.metric == "dead_frac" else 0.0)
    for i, j in _plateaus(ctx, d):
        if i == 0 or j >= len(d.y) - 3:
            continue
        level = float(np.median(d.y_raw[i:j + 1]))
        if level - float(np.min(d.y[:i + 1])) < floor:
            continue  # no accumulation before the plateau: these are the first deaths, not a second wave
        end_level = float(np.median(d.y_raw[-max(3, len(d.y) // 50):]))
        if end_level - level < floor or np.mean(d.y[j + 1:] > level) < 0.8:
            continue
        a, b = float(d.x[i]), float(d.x[j])
        # The plateau must be a flattening between two climbs (fitted slopes): a steady climb with
        # noise on it is one wave, not two.
        slope_in = _slope(d.x[i:j + 1], d.y_raw[i:j + 1])
        slope_out = _slope(d.x[j:], d.y_raw[j:])
        slope_before = _slope(d.x[:i + 1], d.y_raw[:i + 1])
        if min(slope_out, slope_before) < RISE_SLOPE_RATIO * max(slope_in, 0.0):
            continue
        c = d.claims
        claims = {"plateau": c.stat("median", a, b), "plateau_max": c.stat("max", a, b),
                  "final": c.stat("median", ctx.t1 - max(0.02 * ctx.span, d.span / max(1, len(d.x)) * 3), ctx.t1)}
        if any(claims[k].value is None for k in claims):
            continue
        claims["rise"] = difference("final", "plateau", claims)
        claims["start"] = c.first_step("above", claims["plateau_max"].value, b, ctx.t1)  # type: ignore[arg-type]
        claims["cross"] = c.first_step("above", claims["plateau"].value + claims["rise"].value / 2, b, ctx.t1)  # type: ignore[operator]
        if claims["start"].value is None or claims["rise"].value <= 0:  # type: ignore[operator]
            continue
        template = (f"After holding at a median of {{plateau}} from step {{plateau.start_step}} to {{plateau.end_step}}, "
                    f"{label(d.metric)} rose past the plateau's highest value ({{plateau_max}}) at step {{start}} and "
                    "ended at a median of {final} (up {rise}), passing half-way at step {cross}: features are dying "
                    "again late in the run.")
        e = ev.build(ev.SecondaryRiseEvidence, claims)
        out.append(finding(FindingKind.SECONDARY_RISE, d.metric, int(claims["start"].value), ctx.t1, "warn", e,  # type: ignore[arg-type]
                           template, claims))
    return out[:1]


def periodic(r: np.ndarray) -> bool:
    """True when ``r`` swings with a period: its autocorrelation falls to ``-PERIODIC_NEG`` or below at
    some lag and rises to ``PERIODIC_POS`` or above at twice that lag (white noise does neither)."""
    r = r[np.isfinite(r)]
    n = len(r)
    if n < 12:
        return False
    r = r - np.mean(r)
    var = float(np.dot(r, r))
    if var <= 0:
        return False
    acf = np.array([float(np.dot(r[:-k], r[k:])) / var for k in range(1, n // 3 + 1)])
    for lag in range(2, len(acf) // 2 + 1):
        if acf[lag - 1] <= -PERIODIC_NEG and acf[2 * lag - 1] >= PERIODIC_POS:
            return True
    return False


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
        # A swing sampled a few times per period looks like noise point to point; its autocorrelation
        # tells it apart (strongly negative at half a period, positive again at a full one).
        for i, j in runs_of(amp >= floor):
            if not mask[i:j + 1].all() and periodic(r[i:j + 1]):
                mask[i:j + 1] = True
        for i, j in runs_of(mask):
            if s.frac(s.x[j]) - s.frac(s.x[i]) < cfg.osc_min_span:
                continue
            seg = r[i:j + 1]
            if int(np.sum(np.diff(np.sign(seg[seg != 0])) != 0)) < cfg.osc_min_crossings:
                continue
            a, b = float(s.x[i]), float(s.x[j])
            c = s.claims
            claims = {"mean": c.stat("mean", a, b), "std": c.stat("std", a, b), "low": c.quantile(0.1, a, b),
                      "high": c.quantile(0.9, a, b)}
            if claims["mean"].value is None or not claims["mean"].value:
                continue
            claims["cv"] = ratio("std", "mean", claims, unit="pct")
            template = (f"From step {{mean.start_step}} to {{mean.end_step}} {label(s.metric)} swung around a mean of "
                        "{mean} with a standard deviation of {std} ({cv} of the mean) instead of settling; most of its "
                        "values lay between {low} and {high}.")
            out.append(finding(FindingKind.OSCILLATION, s.metric, int(a), int(b), "warn",
                               ev.build(ev.OscillationEvidence, claims), template, claims))
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
        w0 = ctx.t1 - cfg.converge_window * ctx.span
        mid = ctx.t1 - cfg.converge_window / 2 * ctx.span
        c = s.claims
        claims = {"early": c.stat("median", w0, math.ceil(mid) - 1), "late": c.stat("median", mid, ctx.t1)}
        if claims["early"].value is None or claims["late"].value is None:
            continue
        moved = claims["late"].value - claims["early"].value
        if moved == 0 or (moved > 0) != (change > 0):
            continue  # the raw medians must say what the binned curve said
        claims["ratio"] = ratio("late", "early", claims)
        word = "falling" if change < 0 else "rising"
        template = (f"{cap(label(s.metric))} was still {word} at the end: a median of {{early}} over steps "
                    "{early.start_step} to {early.end_step}, then {late} over steps {late.start_step} to "
                    "{late.end_step}. It has not converged; a longer run would end elsewhere.")
        out.append(finding(FindingKind.NOT_CONVERGED, s.metric, int(w0), ctx.t1, "warn",
                           ev.build(ev.NotConvergedEvidence, claims), template, claims))
    return out
