"""Cut the run into named phases ("Initial collapse 0-20K", "Recovery & instability 20K-50K",
"Oscillation with late spike 50K-100K") from the findings of one metric.

Boundaries come from the findings (collapse trough, recovery end, oscillation start, plateau
edges, divergence onset, ...), are snapped to a round grid (1% of the run), and segments shorter
than 5% of the run are merged into their neighbour. Each segment is named by the findings that
cover most of it; where none does, by its trend ("Rise", "Decline", "Settled").
"""

from __future__ import annotations

import math

import numpy as np

from .detectors import Context
from .result import Finding, FindingKind, Phase
from .series import Series

K = FindingKind
_MIN_PHASE = 0.05
_MERGE_SHORT = 0.08  # a short stretch with only a trend name joins the phase before it
_GENERIC = ("Settled", "Rise", "Decline", "Slow decay")


def _nice_unit(span: float) -> float:
    raw = span / 100
    if raw <= 1:
        return 1.0
    e = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * e:
            return m * e
    return 10 * e


def _end(f: Finding) -> int:
    return f.end_step if f.end_step is not None else f.step


def _cuts(s: Series, fs: list[Finding]) -> list[float]:
    by = {k: [f for f in fs if f.kind == k] for k in K}
    cuts: list[float] = []
    col = by[K.COLLAPSE]
    if col:
        c = col[0]
        if s.frac(c.step) > 0.3:
            cuts.append(c.step)
        cuts.append(_end(c))
    elif by[K.SPARSIFICATION]:
        cuts.append(_end(by[K.SPARSIFICATION][0]))
    for f in by[K.DORMANCY]:
        cuts.append(_end(f))
    rec = by[K.RECOVERY]
    osc = by[K.OSCILLATION]
    if rec:
        r_end = _end(rec[0])
        later_osc = [o.step for o in osc if o.step >= rec[0].step]
        cuts.append(max([r_end, *later_osc[:1]]))
    else:
        cuts.extend(o.step for o in osc)
    for f in by[K.PLATEAU]:
        cuts.extend([f.step, _end(f)])
    for f in by[K.SECONDARY_RISE] + by[K.DIVERGED]:
        cuts.append(f.step)
    return cuts


def _name(s: Series, a: float, b: float, fs: list[Finding], first: bool) -> str:
    def covers(f: Finding, share: float = 0.5) -> bool:
        inter = min(_end(f), b) - max(f.step, a)
        return inter >= share * (b - a) or (f.end_step is None and a <= f.step <= b)

    def inside(kind: K) -> bool:
        return any(f.kind == kind and a <= f.step <= b for f in fs)

    has = {k: any(f.kind == k and covers(f) for f in fs) for k in K}
    if has[K.DIVERGED]:
        return "Divergence"
    if first and any(f.kind == K.COLLAPSE and f.step <= b and _end(f) <= b + 0.02 * s.span for f in fs):
        return "Initial collapse"
    if any(f.kind == K.COLLAPSE and covers(f) for f in fs):
        return "Collapse"
    if has[K.RECOVERY] or any(f.kind == K.RECOVERY and a <= f.step <= a + 0.02 * s.span for f in fs):
        partial = any(f.kind == K.RECOVERY and f.evidence.get("partial") for f in fs)
        unstable = has[K.OSCILLATION] or partial or _unstable(s, a, b)
        return "Recovery & instability" if unstable else "Recovery"
    if has[K.DORMANCY]:
        return "Dormancy"
    if has[K.SECONDARY_RISE]:
        return "Secondary rise"
    if has[K.OSCILLATION]:
        return "Oscillation with late spike" if inside(K.LATE_SPIKE) else "Oscillation"
    if has[K.PLATEAU]:
        return "Plateau"
    if first and any(f.kind == K.SPARSIFICATION for f in fs):
        return "Sparsification"
    trend = _trend(s, a, b)
    if trend == 0:
        base = "Settled"
    elif trend > 0:
        steep = s.metric == "dead_frac" and _change(s, a, b) >= 0.1
        base = "Rapid accumulation" if steep else "Rise"
    else:
        base = "Slow decay" if s.metric.startswith("l0") else "Decline"
    if inside(K.LATE_SPIKE):
        base += " with late spike"
    if any(f.kind == K.NOT_CONVERGED and _end(f) >= b - 0.02 * s.span for f in fs) and base in ("Slow decay", "Rise", "Decline"):
        base += " (not converged)"
    return base


def _seg(s: Series, a: float, b: float) -> np.ndarray:
    return s.y_raw[(s.x >= a) & (s.x <= b)]


def _trend(s: Series, a: float, b: float) -> int:
    seg = _seg(s, a, b)
    if len(seg) < 4:
        return 0
    q = max(1, len(seg) // 4)
    change = float(np.median(seg[-q:]) - np.median(seg[:q]))
    if abs(change) < 0.1 * s.scale:
        return 0
    return 1 if change > 0 else -1


def _change(s: Series, a: float, b: float) -> float:
    seg = _seg(s, a, b)
    return float(np.max(seg) - np.min(seg)) if len(seg) else 0.0


def _unstable(s: Series, a: float, b: float) -> bool:
    seg = _seg(s, a, b)
    if len(seg) < 6:
        return False
    resid = np.diff(seg)
    return float(np.std(resid)) > (0.1 if s.log else 0.01)


def phases_for(ctx: Context, s: Series, findings: list[Finding]) -> list[Phase]:
    """Named spans of the run on metric ``s``."""
    if len(s.x) < 10:
        return []
    fs = [f for f in findings if f.metric == s.metric or f.kind == K.DIVERGED]
    unit = _nice_unit(ctx.span)
    cuts = sorted({round(c / unit) * unit for c in _cuts(s, fs) if ctx.t0 < c < ctx.t1})
    bounds = [float(ctx.t0)]
    for c in cuts:
        if (c - bounds[-1]) >= _MIN_PHASE * ctx.span and (ctx.t1 - c) >= _MIN_PHASE * ctx.span:
            bounds.append(c)
    bounds.append(float(ctx.t1))
    phases: list[Phase] = []
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        name = _name(s, a, b, fs, first=i == 0)
        short = (b - a) < _MERGE_SHORT * ctx.span and name.split(" (")[0] in _GENERIC
        if phases and (phases[-1].name == name or short):
            phases[-1] = Phase(phases[-1].name, s.metric, phases[-1].start_step, int(b))
        else:
            phases.append(Phase(name, s.metric, int(a), int(b)))
    return phases


def cut_phases(ctx: Context, findings: list[Finding]) -> list[Phase]:
    """Phases on L0 (when logged), plus phases on the dead-feature metric when it has a story of
    its own (a secondary rise or a dead-feature collapse)."""
    out: list[Phase] = []
    if ctx.l0 is not None:
        out.extend(phases_for(ctx, ctx.l0, findings))
    d = ctx.dead
    story = {K.SECONDARY_RISE, K.COLLAPSE}
    if d is not None and (ctx.l0 is None or any(f.metric == d.metric and f.kind in story for f in findings)):
        out.extend(phases_for(ctx, d, findings))
    if not out and ctx.loss is not None:
        out.extend(phases_for(ctx, ctx.loss, findings))
    return out
