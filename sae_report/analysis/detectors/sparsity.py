"""L0 detectors: normal sparsification, collapse (an SAE that ends broken; an undershoot far below
the settled level and the target; dead features surging past most of the dictionary), and the
recovery after a collapse. Judged on the binned log-scale curve, told with claims on raw values."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import evidence as ev
from ..claims import Claim, ratio
from ..result import Finding, FindingKind
from ..metric_series import Series
from . import Context, finding, window


#: A level (a trough, a recovered level) is a median over enough points that its noise stays below
#: this on the log scale (0.2: the median cannot fake a 2.5x undershoot) ...
LEVEL_NOISE = 0.2
#: ... but over no more than this many points.
MAX_LEVEL_POINTS = 200
#: A recovery starts where L0 is this share of the way up from the trough (log scale).
CLIMB_SHARE = 0.1


@dataclass(frozen=True)
class Trough:
    """The deepest undershoot of L0 that the run climbed back from (bin indices of ``Series.y``)."""

    index: int
    """Bin index of the trough."""
    start_index: int
    """Bin where L0 last crossed down through the settled level before the trough."""
    y: float
    """Trough level (working scale)."""
    settled: float
    """Settled level: median of the second half (working scale)."""


def settled_level(s: Series) -> float:
    """Median of the second half of the binned curve (working scale)."""
    second = s.y_raw[(s.x - s.t0) >= 0.5 * s.span]
    return float(np.median(second if len(second) else s.y_raw))


def point_noise(ctx: Context, s: Series) -> float:
    """Robust point-to-point noise of the raw values on the working scale (log for L0), from at most
    ~200K evenly strided points."""
    key = ("point_noise", s.metric)
    if key not in ctx.cache:
        v = s.value[:: max(1, len(s.value) // 200_000)]
        if s.log:
            v = np.log(v[v > 0])
        d = np.diff(v)
        ctx.cache[key] = float(1.4826 * np.median(np.abs(d)) / math.sqrt(2)) if len(d) > 2 else 0.0
    return ctx.cache[key]


def min_points(ctx: Context, s: Series) -> int:
    """Logged points a level is measured over: enough that the median's noise (about 1.25 sigma /
    sqrt(n)) stays under ``LEVEL_NOISE`` on the working scale."""
    sigma = point_noise(ctx, s)
    return int(min(MAX_LEVEL_POINTS, max(3, math.ceil((1.25 * sigma / LEVEL_NOISE) ** 2))))


def _lowest_window(s: Series, centre: float, half_width: float, n: int) -> tuple[float, float]:
    """The span the trough level is measured over: ``n`` consecutive logged points (at least
    ``half_width`` each side when the log is dense) holding the trough, placed where their median is
    lowest, so a steep fall into a trough a few rows wide does not lift the level."""
    lo, hi = window(s, centre, half_width, n)
    st, v = s.step, s.value
    a = int(np.searchsorted(st, np.int64(math.ceil(lo))))
    b = int(np.searchsorted(st, np.int64(math.floor(hi)), side="right"))
    m = b - a
    i = int(np.clip(np.searchsorted(st, np.int64(round(centre))), 0, len(st) - 1))
    if m < 1 or m > 64:
        return lo, hi
    best, best_med = (lo, hi), float(np.median(v[a:b]))
    for k in range(max(0, i - m + 1), min(i, len(st) - m) + 1):
        med = float(np.median(v[k:k + m]))
        if med < best_med:
            best, best_med = (float(st[k]), float(st[k + m - 1])), med
    return best


def trough_claims(ctx: Context, s: Series, tr: Trough) -> dict[str, Claim] | None:
    """The settled level and the trough (a median over enough logged points around the trough bin)
    as claims; None when the raw values do not bear out the undershoot the binned curve showed."""
    key = ("trough", s.metric)
    if key in ctx.cache:
        return ctx.cache[key]
    c = s.claims
    lo, hi = _lowest_window(s, float(s.x[tr.index]), _half_width(ctx, s), min_points(ctx, s))
    claims: dict[str, Claim] | None = {"settled": _settled(ctx, s), "trough": c.stat("median", lo, hi)}
    st, tv = claims["settled"].value, claims["trough"].value  # type: ignore[index]
    if st is None or tv is None or tv <= 0 or st / tv < ctx.cfg.collapse_undershoot:
        claims = None
    ctx.cache[key] = claims
    return claims


def find_trough(ctx: Context, s: Series) -> Trough | None:
    """The collapse trough of ``s`` per the config's rules (confirmed on the raw values), or None."""
    tr = _find_trough(ctx, s)
    return tr if tr is not None and trough_claims(ctx, s, tr) is not None else None


def _find_trough(ctx: Context, s: Series) -> Trough | None:
    cfg = ctx.cfg
    if len(s.y) < 10 or not s.log or ctx.architecture.fixed_l0:
        return None  # (TopK / BatchTopK: k sets L0, which cannot undershoot)
    settled = settled_level(s)
    usable = np.flatnonzero((s.x - s.t0) <= 0.9 * s.span)
    if len(usable) < 5:
        return None
    i = int(usable[np.argmin(s.y[usable])])
    y_min = float(s.y[i])
    after_vals = s.y_raw[i + 1:]
    if len(after_vals) < 3:
        return None
    under = math.log(cfg.collapse_undershoot)
    if settled - y_min < under or float(np.median(after_vals)) - y_min < math.log(cfg.collapse_recover_ratio):
        return None
    target = ctx.target_for(s)
    if target is not None and math.log(target) - y_min < under:
        return None
    above = np.flatnonzero(s.y[:i] >= settled)
    start = int(above[-1]) + 1 if len(above) else 0
    return Trough(index=i, start_index=min(start, i), y=y_min, settled=settled)


def _half_width(ctx: Context, s: Series) -> float:
    """Half-width of the windows levels are measured over: a bin or the smoothing width."""
    bin_w = s.span / max(1, len(s.x))
    return max(bin_w, 0.5 * ctx.cfg.smooth_frac * s.span)


def _settled(ctx: Context, s: Series) -> Claim:
    return s.claims.stat("median", ctx.half, ctx.t1)


def broken(ctx: Context) -> dict[str, Claim] | None:
    """Claims showing the SAE ends broken: L0 below ``broken_l0`` active features per token, or
    explained variance below ``broken_ev``, as medians over the last ``broken_tail`` of the run."""
    if "broken" in ctx.cache:
        return ctx.cache["broken"]
    cfg = ctx.cfg
    a, b = ctx.t1 - cfg.broken_tail * ctx.span, ctx.t1
    claims: dict[str, Claim] = {}
    count = ctx.series.get("l0")
    if count is not None and len(count.step):
        claims["l0_tail"] = count.claims.stat("median", a, b)
        frac = ctx.series.get("l0_frac")
        if frac is not None:
            claims["l0_frac_tail"] = frac.claims.stat("median", a, b)
    evs = ctx.series.get("explained_variance")
    if evs is not None and len(evs.step):
        claims["ev_tail"] = evs.claims.stat("median", a, b)
    low_l0 = "l0_tail" in claims and claims["l0_tail"].value is not None and claims["l0_tail"].value < cfg.broken_l0
    low_ev = "ev_tail" in claims and claims["ev_tail"].value is not None and claims["ev_tail"].value < cfg.broken_ev
    ctx.cache["broken"] = claims if (low_l0 or low_ev) else None
    return ctx.cache["broken"]


def sparsification(ctx: Context) -> list[Finding]:
    """L0 falls from its dense start by ``sparsification_ratio`` or more (info)."""
    s = ctx.l0
    if s is None or len(s.y) < 5:
        ctx.skip("sparsification", "no L0 metric (l0, l0_frac or an alias) with enough points")
        return []
    if broken(ctx) is not None:
        return []  # not the normal way an SAE becomes sparse: the collapse finding says what it is
    c = s.claims
    start = c.first()
    if start.value is None or not math.isfinite(start.value) or start.value <= 0:
        start = c.stat("median", ctx.t0, ctx.t0 + 0.01 * ctx.span)
    claims = {"start": start, "settled": _settled(ctx, s)}
    if claims["settled"].value is None or start.value is None or claims["settled"].value <= 0:
        return []
    if start.value / claims["settled"].value < ctx.cfg.sparsification_ratio:
        return []
    knee = _knee(s, settled_level(s))
    lo, hi = window(s, knee, _half_width(ctx, s))
    claims["level"] = c.stat("median", lo, hi)
    if claims["level"].value is None or claims["level"].value <= 0:
        return []
    claims["fall"] = ratio("start", "level", claims)
    claims["reached"] = c.first_step("below", 1.5 * claims["level"].value, ctx.t0, hi)
    reached = claims["reached"].value
    collapse_after = find_trough(ctx, s) is not None
    where = "at step {start.step}" if start.stat == "first" else "(median of steps {start.start_step} to {start.end_step})"
    tail = (" It then fell further, into a collapse (below)." if collapse_after
            else " This is the normal way an SAE becomes sparse, not a collapse.")
    template = (f"L0 fell from {{start}} {where} to a median of {{level}} over steps {{level.start_step}} to "
                "{level.end_step} ({fall} lower), first dropping below {reached.threshold} at step {reached}; the "
                f"second half of the run settled at a median of {{settled}}.{tail}")
    return [finding(FindingKind.SPARSIFICATION, s.metric, int(start.step if start.step is not None else ctx.t0),
                    int(reached) if reached is not None else int(hi), "info",
                    ev.build(ev.SparsificationEvidence, claims), template, claims)]


def _knee(s: Series, settled: float) -> float:
    """Where the steep early fall of L0 ends: the curve reaches 1.5x its settled level, or its fall
    over the next 2% of the run drops below a tenth of the steepest fall, whichever is first."""
    reach = np.flatnonzero(s.y <= settled + math.log(1.5))
    end = float(s.x[reach[0]]) if len(reach) else float(s.x[-1])
    w = s.bins_of(0.02)
    if len(s.y) > 2 * w:
        fall = s.y[:-w] - s.y[w:]
        top = int(np.argmax(fall))
        slow = np.flatnonzero(fall[top:] < 0.1 * fall[top])
        if len(slow) and fall[top] > 0:
            end = min(end, float(s.x[top + int(slow[0])]))
    return end


def _ended_collapsed(ctx: Context, claims: dict[str, Claim]) -> Finding:
    metric = "l0" if "l0_tail" in claims else "explained_variance"
    parts = []
    first = claims.get("l0_tail") or claims["ev_tail"]
    if "l0_tail" in claims:
        frac = " ({l0_frac_tail} of the dictionary)" if "l0_frac_tail" in claims else ""
        parts.append(f"L0 was a median of {{l0_tail}} active features per token{frac}")
    if "ev_tail" in claims:
        parts.append("explained variance a median of {ev_tail}")
    low_l0 = "l0_tail" in claims and claims["l0_tail"].value is not None and claims["l0_tail"].value < ctx.cfg.broken_l0
    judgment = ("far below one feature per token, so most tokens are reconstructed by no feature at all"
                if low_l0 else "the SAE reconstructs almost nothing")
    template = (f"The SAE ended collapsed: over the end of the run (steps {{{list(claims)[0]}.start_step}} to "
                f"{{{list(claims)[0]}.end_step}}) {' and '.join(parts)}: {judgment}. It is not usable, whatever path "
                f"it took there.")
    e = ev.CollapseEvidence(mode="ended_collapsed", trough=None, settled=None, undershoot=None, target=None,
                            dead_frac_at_trough=None, l0_per_token=claims["l0_tail"].value if "l0_tail" in claims else None,
                            explained_variance=claims["ev_tail"].value if "ev_tail" in claims else None,
                            dead_from=None, dead_peak=None)
    step = _first_collapsed_step(ctx, claims)
    return finding(FindingKind.COLLAPSE, metric, step if step is not None else int(first.start_step or ctx.t0),
                   ctx.t1, "fail", e, template, claims)


def _first_collapsed_step(ctx: Context, claims: dict[str, Claim]) -> int | None:
    """Where L0 first went below the broken level (None when only explained variance tells)."""
    count = ctx.series.get("l0")
    if count is None or "l0_tail" not in claims:
        return None
    below = np.flatnonzero(count.y < math.log(ctx.cfg.broken_l0)) if count.log else np.zeros(0, dtype=int)
    return int(count.x[below[0]]) if len(below) else None


def collapse(ctx: Context) -> list[Finding]:
    """The SAE ends broken; or L0 undershoots far below the settled level and the target, then climbs
    back; or dead features surge past most of the dictionary."""
    dead_sae = broken(ctx)
    if dead_sae is not None:
        return [_ended_collapsed(ctx, dead_sae)]
    s = ctx.l0
    if s is not None:
        tr = find_trough(ctx, s)
        if tr is not None:
            return [_undershoot(ctx, s, tr)]
    d = ctx.series.get("dead_frac")
    if d is None:
        if s is None:
            ctx.skip("collapse", "no L0 or dead-feature metric in the log")
        return []
    return _dead_surge(ctx, d)


def _undershoot(ctx: Context, s: Series, tr: Trough) -> Finding:
    c = s.claims
    claims: dict[str, Claim] = dict(trough_claims(ctx, s, tr) or {})
    lo, hi = claims["trough"].start_step, claims["trough"].end_step
    claims["undershoot"] = ratio("settled", "trough", claims)
    claims["start"] = c.first_step("below", claims["settled"].value, float(s.x[tr.start_index]) - _half_width(ctx, s), hi)  # type: ignore[arg-type]
    target = ctx.target_claim()
    tgt = ""
    if target is not None:
        claims["target"] = target
        tgt = " and far below the target ({target})"
    dead = ctx.series.get("dead_frac")
    tail = ""
    if dead is not None:
        claims["dead"] = dead.claims.stat("max", lo, hi)
        if claims["dead"].value is not None:
            tail = ", with up to {dead} of the dictionary dead there"
    template = ("L0 fell below its second-half median ({settled}) at step {start} and on to a median of {trough} over "
                f"steps {{trough.start_step}} to {{trough.end_step}}, {{undershoot}} below that level{tgt}{tail}: a "
                "collapse, more than normal sparsification.")
    e = ev.CollapseEvidence(mode="undershoot", trough=claims["trough"].value, settled=claims["settled"].value,
                            undershoot=claims["undershoot"].value, target=target.value if target else None,
                            dead_frac_at_trough=claims["dead"].value if "dead" in claims else None,
                            l0_per_token=None, explained_variance=None, dead_from=None, dead_peak=None)
    start = claims["start"].value
    return finding(FindingKind.COLLAPSE, s.metric, int(start) if start is not None else int(lo), int(hi), "warn", e,
                   template, claims)


def _dead_surge(ctx: Context, d: Series) -> list[Finding]:
    k = d.bins_of(ctx.cfg.collapse_dead_span)
    if len(d.y) <= k:
        return []
    prior_min = np.array([np.min(d.y[max(0, i - k):i]) if i else d.y[0] for i in range(len(d.y))])
    hit = np.flatnonzero((d.y - prior_min >= ctx.cfg.collapse_dead_surge) & (d.y >= ctx.cfg.collapse_dead_level))
    if not len(hit):
        return []
    i = int(hit[0])
    j0 = max(0, i - k) + int(np.argmin(d.y[max(0, i - k):i])) if i else 0
    peak_i = i + int(np.argmax(d.y[i:i + k + 1]))
    hw = d.span / max(1, len(d.x))
    claims = {"dead_from": d.claims.stat("min", float(d.x[j0]) - hw, float(d.x[j0]) + hw),
              "dead_peak": d.claims.stat("max", float(d.x[peak_i]) - hw, float(d.x[peak_i]) + hw)}
    if claims["dead_from"].value is None or claims["dead_peak"].value is None:
        return []
    template = ("Dead features surged from {dead_from} of the dictionary at step {dead_from.step} to {dead_peak} at "
                "step {dead_peak.step}: most of the dictionary stopped firing.")
    e = ev.CollapseEvidence(mode="dead_surge", trough=None, settled=None, undershoot=None, target=None,
                            dead_frac_at_trough=None, l0_per_token=None, explained_variance=None,
                            dead_from=claims["dead_from"].value, dead_peak=claims["dead_peak"].value)
    return [finding(FindingKind.COLLAPSE, d.metric, int(claims["dead_from"].step or d.x[j0]),
                    int(claims["dead_peak"].step or d.x[peak_i]), "warn", e, template, claims)]


def recovery(ctx: Context) -> list[Finding]:
    """After an L0 undershoot collapse, L0 climbs back by ``recovery_ratio`` or more (partial when it
    stays below the target's ok band). Dated where it starts climbing, not at the trough."""
    s = ctx.l0
    if s is None or broken(ctx) is not None:
        return []
    tr = find_trough(ctx, s)
    if tr is None:
        return []
    after_y = s.y[tr.index + 1:]
    if not np.any(after_y >= tr.y + math.log(ctx.cfg.recovery_ratio)):
        return []
    near = np.flatnonzero(after_y >= tr.settled - math.log(1.15))
    j = tr.index + 1 + (int(near[0]) if len(near) else int(np.argmax(after_y)))
    hw = _half_width(ctx, s)
    c = s.claims
    trough = (trough_claims(ctx, s, tr) or {})["trough"]
    t_hi = float(trough.end_step)  # type: ignore[arg-type]
    r_lo, r_hi = window(s, float(s.x[j]), hw, min_points(ctx, s))
    r_lo = max(r_lo, t_hi + 1)
    claims: dict[str, Claim] = {"trough": trough, "recovered": c.stat("median", r_lo, r_hi)}
    lo_v, hi_v = claims["trough"].value, claims["recovered"].value
    if lo_v is None or hi_v is None or lo_v <= 0 or hi_v / lo_v < ctx.cfg.recovery_ratio:
        return []
    claims["ratio"] = ratio("recovered", "trough", claims)
    # Where it starts climbing: the last bin still within CLIMB_SHARE of the way up (log scale), then
    # the first logged value past that level.
    share = math.log(hi_v / lo_v) * CLIMB_SHARE
    # the last bin still at the trough (within half that share): noise above it does not date it
    low_bins = np.flatnonzero(s.y[tr.index:j + 1] <= tr.y + share / 2)
    j0 = tr.index + (int(low_bins[-1]) if len(low_bins) else 0)
    claims["climb"] = c.first_step("above", lo_v * math.exp(share), float(s.x[j0]), r_hi)
    target = ctx.target_claim()
    partial = target is not None and ctx.target_l0 is not None and hi_v < ctx.target_for(s) * ctx.cfg.target_ok_band[0]  # type: ignore[operator]
    note = ""
    if partial and target is not None:
        claims["target"] = target
        note = ", still below the target ({target})"
    template = ("L0 climbed back from a median of {trough} (steps {trough.start_step} to {trough.end_step}) to "
                "{recovered} (steps {recovered.start_step} to {recovered.end_step}), {ratio} higher; it started "
                f"climbing at step {{climb}}, first rising above {{climb.threshold}}{note}.")
    e = ev.build(ev.RecoveryEvidence, claims, partial=bool(partial))
    climb = claims["climb"].value
    return [finding(FindingKind.RECOVERY, s.metric, int(climb) if climb is not None else int(t_hi), int(r_hi), "info",
                    e, template, claims)]
