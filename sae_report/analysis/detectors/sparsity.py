"""L0 detectors: normal sparsification, collapse (undershoot far below the settled level and the
target, usually with most features dead), and the recovery after a collapse. Log scale."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..result import Finding, FindingKind
from ..series import Series
from . import Context, fmt_step, fmt_value


@dataclass(frozen=True)
class Trough:
    """The deepest undershoot of L0 that the run climbed back from."""

    index: int
    """Bin index of the trough."""
    start_index: int
    """Bin where L0 last crossed down through the settled level before the trough."""
    y: float
    """Trough level (working scale)."""
    settled: float
    """Settled level: median of the second half (working scale)."""
    after: float
    """Median after the trough (working scale)."""


def settled_level(s: Series) -> float:
    """Median of the second half of the run (working scale)."""
    second = s.y_raw[(s.x - s.t0) >= 0.5 * s.span]
    return float(np.median(second if len(second) else s.y_raw))


def find_trough(ctx: Context, s: Series) -> Trough | None:
    """The collapse trough of ``s`` per the config's rules, or None."""
    cfg = ctx.cfg
    if len(s.y) < 10:
        return None
    settled = settled_level(s)
    usable = np.flatnonzero((s.x - s.t0) <= 0.9 * s.span)
    if len(usable) < 5:
        return None
    i = int(usable[np.argmin(s.y[usable])])
    y_min = float(s.y[i])
    after_vals = s.y_raw[i + 1:]
    if len(after_vals) < 3:
        return None
    after = float(np.median(after_vals))
    under = math.log(cfg.collapse_undershoot)
    if settled - y_min < under or after - y_min < math.log(cfg.collapse_recover_ratio):
        return None
    target = ctx.target_for(s)
    if target is not None and math.log(target) - y_min < under:
        return None
    above = np.flatnonzero(s.y[:i] >= settled)
    start = int(above[-1]) + 1 if len(above) else 0
    return Trough(index=i, start_index=min(start, i), y=y_min, settled=settled, after=after)


def _dead_near(ctx: Context, step: float) -> float | None:
    d = ctx.series.get("dead_frac")
    if d is None or not len(d.x):
        return None
    w = 0.03 * ctx.span
    m = np.abs(d.x - step) <= w
    return float(np.max(d.y[m])) if m.any() else None


def sparsification(ctx: Context) -> list[Finding]:
    """L0 falls from its dense start by ``sparsification_ratio`` or more (info)."""
    s = ctx.l0
    if s is None or len(s.y) < 5:
        ctx.skip("sparsification", "no L0 metric (l0, l0_frac or an alias) with enough points")
        return []
    first = s.value[: max(1, min(3, len(s.value)))]
    init = max(float(s.y[0]), float(np.log(max(np.median(first), 1e-300))) if s.log else float(np.median(first)))
    settled = settled_level(s)
    if init - settled < math.log(ctx.cfg.sparsification_ratio):
        return []
    reach = np.flatnonzero(s.y <= settled + math.log(1.5))
    end = float(s.x[reach[0]]) if len(reach) else float(s.x[-1])
    w = s.bins_of(0.02)
    if len(s.y) > 2 * w:
        fall = s.y[:-w] - s.y[w:]  # fall over the next 2% of the run
        top = int(np.argmax(fall))
        slow = np.flatnonzero(fall[top:] < 0.1 * fall[top])
        if len(slow) and fall[top] > 0:
            end = min(end, float(s.x[top + int(slow[0])]))
    a, b = s.to_value(init), s.to_value(settled)
    return [Finding(
        kind=FindingKind.SPARSIFICATION, metric=s.metric, step=int(s.step[0]), end_step=int(end), severity="info",
        evidence={"from": a, "to": b, "ratio": a / b, "reached_step": int(end)},
        coincides_with=None,
        explanation=(f"L0 fell from {fmt_value(s.metric, a)} to about {fmt_value(s.metric, b)} ({a / b:.0f}x) by step "
                     f"{fmt_step(end)}: the normal way an SAE becomes sparse, not a collapse."))]


def collapse(ctx: Context) -> list[Finding]:
    """L0 undershoots far below the settled level and the target, then climbs back; or dead
    features surge past most of the dictionary."""
    s = ctx.l0
    out: list[Finding] = []
    if s is not None:
        tr = find_trough(ctx, s)
        if tr is not None:
            lo, settled = s.to_value(tr.y), s.to_value(tr.settled)
            step = float(s.x[tr.index])
            dead = _dead_near(ctx, step)
            target = ctx.target_for(s)
            ev = {"trough": lo, "trough_step": int(step), "settled": settled, "undershoot": settled / lo,
                  "target": target, "dead_frac_at_trough": dead}
            tail = f" while {dead:.0%} of features were dead" if dead is not None else ""
            tgt = f" and the target ({fmt_value(s.metric, target)})" if target is not None else ""
            out.append(Finding(
                kind=FindingKind.COLLAPSE, metric=s.metric, step=int(s.x[tr.start_index]), end_step=int(step),
                severity="warn", evidence=ev, coincides_with=None,
                explanation=(f"L0 fell to {fmt_value(s.metric, lo)} at step {fmt_step(step)}, {settled / lo:.1f}x below "
                             f"the level the run later settled at ({fmt_value(s.metric, settled)}){tgt}{tail}: "
                             f"a collapse, more than normal sparsification.")))
    d = ctx.series.get("dead_frac")
    if d is None:
        if s is None:
            ctx.skip("collapse", "no L0 or dead-feature metric in the log")
        return out
    if out:
        return out
    k = d.bins_of(ctx.cfg.collapse_dead_span)
    if len(d.y) <= k:
        return out
    prior_min = np.array([np.min(d.y[max(0, i - k):i]) if i else d.y[0] for i in range(len(d.y))])
    hit = np.flatnonzero((d.y - prior_min >= ctx.cfg.collapse_dead_surge) & (d.y >= ctx.cfg.collapse_dead_level))
    if len(hit):
        i = int(hit[0])
        j0 = max(0, i - k) + int(np.argmin(d.y[max(0, i - k):i])) if i else 0
        peak_i = i + int(np.argmax(d.y[i:i + k + 1]))
        out.append(Finding(
            kind=FindingKind.COLLAPSE, metric=d.metric, step=int(d.x[j0]), end_step=int(d.x[peak_i]), severity="warn",
            evidence={"from": float(d.y[j0]), "peak": float(d.y[peak_i]), "peak_step": int(d.x[peak_i])},
            coincides_with=None,
            explanation=(f"Dead features surged from {d.y[j0]:.0%} to {d.y[peak_i]:.0%} of the dictionary between steps "
                         f"{fmt_step(d.x[j0])} and {fmt_step(d.x[peak_i])}: most of the dictionary stopped firing.")))
    return out


def recovery(ctx: Context) -> list[Finding]:
    """After an L0 collapse, L0 climbs back by ``recovery_ratio`` or more (partial when it stays
    below the target)."""
    s = ctx.l0
    if s is None:
        return []
    tr = find_trough(ctx, s)
    if tr is None:
        return []
    after_y = s.y[tr.index + 1:]
    risen = np.flatnonzero(after_y >= tr.y + math.log(ctx.cfg.recovery_ratio))
    if not len(risen):
        return []
    near = np.flatnonzero(after_y >= tr.settled - math.log(1.15))
    j = tr.index + 1 + (int(near[0]) if len(near) else int(np.argmax(after_y)))
    lo, hi = s.to_value(tr.y), s.to_value(float(s.y[j]))
    target = ctx.target_for(s)
    partial = target is not None and hi < target / ctx.cfg.target_ok_band[1]
    dead0, dead1 = _dead_near(ctx, s.x[tr.index]), _dead_near(ctx, s.x[j])
    ev = {"from": lo, "to": hi, "ratio": hi / lo, "partial": partial, "target": target,
          "dead_frac_from": dead0, "dead_frac_to": dead1}
    note = f", still below the target ({fmt_value(s.metric, target)})" if partial else ""
    return [Finding(
        kind=FindingKind.RECOVERY, metric=s.metric, step=int(s.x[tr.index]), end_step=int(s.x[j]), severity="info",
        evidence=ev, coincides_with=None,
        explanation=(f"L0 climbed back from {fmt_value(s.metric, lo)} to {fmt_value(s.metric, hi)} between steps "
                     f"{fmt_step(s.x[tr.index])} and {fmt_step(s.x[j])}{note}."))]
