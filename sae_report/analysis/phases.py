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

from .claims import Claim, difference, ratio
from .detectors import Context
from .result import Finding, FindingKind, Phase
from .metric_series import Series

K = FindingKind
_MIN_PHASE = 0.05
_MERGE_SHORT = 0.08  # a short stretch with only a trend name joins the phase before it
_GENERIC = ("Settled", "Rise", "Decline", "Slow decay")
#: A phase whose level moved by more than this factor (log metrics) is not "Settled".
_FLAT_RATIO = 1.25
#: ... or by more than this much (fractions: dead features).
_FLAT_LIN = 0.05


def _family(metric: str) -> str:
    """``l0`` and ``l0_frac`` are one family, as are ``dead`` and ``dead_frac``."""
    return metric[:-5] if metric.endswith("_frac") else metric


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
        cuts.append(_sparsified(s, by[K.SPARSIFICATION][0]))
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


#: Share of a phase a finding must cover to name it (default one half).
_SHARE = {K.OSCILLATION: 0.4, K.RECOVERY: 0.4}
#: Sparsification ends where L0 first comes within this factor of its settled level ...
_SETTLE_RATIO = 1.25
#: ... when that happens within this fraction of the run; later, it ends at the steep fall's knee
#: (a slow decay follows, as in the 001 curve).
_SETTLE_BY = 0.35


def _sparsified(s: Series, f: Finding) -> float:
    """Where the sparsification phase ends: L0 near its settled level, or the knee of the fall."""
    second = s.y_raw[(s.x - s.t0) >= 0.5 * s.span]
    if not len(second):
        return float(_end(f))
    near = np.flatnonzero(s.y <= float(np.median(second)) + math.log(_SETTLE_RATIO))
    if len(near) and s.frac(s.x[near[0]]) <= _SETTLE_BY:
        return float(s.x[near[0]])
    return float(_end(f))


def _name(s: Series, a: float, b: float, fs: list[Finding], first: bool, last: bool) -> str:
    def covers(f: Finding, share: float = 0.5) -> bool:
        inter = min(_end(f), b) - max(f.step, a)
        return inter >= share * (b - a) or (f.end_step is None and a <= f.step <= b)

    def inside(kind: K) -> bool:
        return any(f.kind == kind and a <= f.step <= b for f in fs)

    has = {k: any(f.kind == k and covers(f, _SHARE.get(k, 0.5)) for f in fs) for k in K}
    if has[K.DIVERGED]:
        return "Divergence"
    if first and any(f.kind == K.COLLAPSE and f.step <= b and _end(f) <= b + 0.02 * s.span for f in fs):
        return "Initial collapse"
    if any(f.kind == K.COLLAPSE and covers(f) for f in fs):
        return "Collapse"
    if has[K.RECOVERY] or any(f.kind == K.RECOVERY and a <= f.step <= (a + b) / 2 for f in fs):
        partial = any(f.kind == K.RECOVERY and f.evidence.partial for f in fs)
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
    if last and any(f.kind == K.NOT_CONVERGED for f in fs) and base in ("Slow decay", "Rise", "Decline"):
        base += " (not converged)"
    return base


def _seg(s: Series, a: float, b: float) -> np.ndarray:
    return s.y_raw[(s.x >= a) & (s.x <= b)]


def level_claims(s: Series, a: float, b: float) -> dict[str, Claim]:
    """Medians of the first and last tenth of [a, b] (at least three logged points each) and their
    change: what a phase's trend name is judged on."""
    c = s.claims
    tenth = max(0.1 * (b - a), 0.0)
    i0 = int(np.searchsorted(s.step, np.int64(math.ceil(a))))
    i1 = int(np.searchsorted(s.step, np.int64(math.floor(b)), side="right")) - 1
    a_end = max(a + tenth, float(s.step[min(i0 + 2, len(s.step) - 1)]) if len(s.step) else a)
    b_start = min(b - tenth, float(s.step[max(i1 - 2, 0)]) if len(s.step) else b)
    claims = {"start_level": c.stat("median", a, a_end), "end_level": c.stat("median", b_start, b)}
    if claims["start_level"].value is None or claims["end_level"].value is None:
        return {}
    if s.log and claims["start_level"].value > 0:
        claims["change"] = ratio("end_level", "start_level", claims)
    elif not s.log:
        claims["change"] = difference("end_level", "start_level", claims)
    return claims


def _trend(s: Series, a: float, b: float) -> int:
    """+1 rising, -1 falling, 0 flat, judged on the raw medians of the phase's ends."""
    claims = level_claims(s, a, b)
    ch = claims.get("change")
    if ch is None or ch.value is None:
        return 0
    if s.log:
        if ch.value <= 0:
            return -1
        r = math.log(ch.value)
        return 0 if abs(r) < math.log(_FLAT_RATIO) else (1 if r > 0 else -1)
    limit = _FLAT_LIN * (1.0 if s.metric.endswith("_frac") else max(s.scale / 0.1, 1e-12))
    return 0 if abs(ch.value) < limit else (1 if ch.value > 0 else -1)


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
    fs = [f for f in findings if _family(f.metric) == _family(s.metric)]
    div = next((f for f in findings if f.kind == K.DIVERGED and f.severity == "fail"), None)
    unit = _nice_unit(ctx.span)
    end = float(ctx.t1)
    if div is not None:
        end = min(end, float(div.step))
    cuts = sorted({round(c / unit) * unit for c in _cuts(s, fs) if ctx.t0 < c < end})
    bounds = [float(ctx.t0)]
    for c in cuts:
        if (c - bounds[-1]) >= _MIN_PHASE * ctx.span and (end - c) >= _MIN_PHASE * ctx.span:
            bounds.append(c)
    bounds.append(end)
    spans: list[tuple[str, float, float]] = []
    for i in range(len(bounds) - 1):
        a, b = bounds[i], bounds[i + 1]
        name = _name(s, a, b, fs, first=i == 0, last=i == len(bounds) - 2 and div is None)
        short = (b - a) < _MERGE_SHORT * ctx.span and name.split(" (")[0] in _GENERIC
        if spans and ((spans[-1][0] == name and name not in _FLAT) or short):
            spans[-1] = (spans[-1][0], spans[-1][1], b)
        else:
            spans.append((name, a, b))
    phases = _levels([Phase(n, s.metric, int(a), int(b), level_claims(s, a, b)) for n, a, b in spans], s)
    if div is not None:
        phases.append(Phase("Divergence", s.metric, int(div.step), int(ctx.last_step)))
    return phases


_FLAT = ("Settled", "Plateau")


def _shift(s: Series, before: Phase, after: Phase) -> bool:
    """True when ``after`` starts at a level clearly apart from where ``before`` ended."""
    a, b = before.claims.get("end_level"), after.claims.get("start_level")
    if a is None or b is None or a.value is None or b.value is None:
        return False
    if s.log:
        return a.value > 0 and b.value > 0 and abs(math.log(b.value / a.value)) > math.log(_FLAT_RATIO)
    return abs(b.value - a.value) > _FLAT_LIN


def _levels(phases: list[Phase], s: Series) -> list[Phase]:
    """Adjacent flat phases at one level are one phase; a flat phase that starts clearly apart from
    the flat phase before it is a "New level"."""
    out: list[Phase] = []
    for p in phases:
        prev = out[-1] if out else None
        if prev is not None and prev.name in _FLAT + ("New level",) and p.name in _FLAT:
            if _shift(s, prev, p):
                p = Phase("New level", p.metric, p.start_step, p.end_step, p.claims)
            else:
                name = prev.name if prev.end_step - prev.start_step >= p.end_step - p.start_step else p.name
                out[-1] = Phase(name, p.metric, prev.start_step, p.end_step,
                                level_claims(s, prev.start_step, p.end_step))
                continue
        out.append(p)
    return out


def cut_phases(ctx: Context, findings: list[Finding]) -> list[Phase]:
    """Phases on L0 (when logged), plus phases on the dead-feature metric when it has a story of
    its own (a secondary rise or a dead-feature collapse)."""
    out: list[Phase] = []
    l0 = None if ctx.architecture.fixed_l0 else ctx.l0  # TopK / BatchTopK: k sets L0; the story is elsewhere
    if l0 is not None:
        out.extend(phases_for(ctx, l0, findings))
    d = ctx.dead
    story = {K.SECONDARY_RISE, K.COLLAPSE}
    if d is not None and (l0 is None or any(f.metric == d.metric and f.kind in story for f in findings)):
        out.extend(phases_for(ctx, d, findings))
    if not out and ctx.loss is not None:
        out.extend(phases_for(ctx, ctx.loss, findings))
    return out
