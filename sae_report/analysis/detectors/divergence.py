"""Divergence: the loss blows up (to ``diverge_factor`` times its running minimum, and stays) or
turns non-finite. NaN and inf are signals here, never dropped as missing data."""

from __future__ import annotations

import math

import numpy as np

from ..result import Finding, FindingKind
from . import Context, fmt_step, fmt_value, label


def diverged(ctx: Context) -> list[Finding]:
    s = ctx.loss
    if s is None:
        ctx.skip("diverged", "no loss metric (loss, mse or an alias) in the log")
        return []
    cfg = ctx.cfg
    first_bad = int(s.nonfinite_step[0]) if len(s.nonfinite_step) else None
    onset: float | None = None
    peak = None
    if len(s.y_raw) >= 5:
        runmin = np.minimum.accumulate(s.y)  # of the smoothed curve: a lone low glitch is no baseline
        excess = s.y_raw - runmin
        blown = excess >= math.log(cfg.diverge_factor)
        if blown.any():
            i = int(np.flatnonzero(blown)[0])
            tail_ok = bool(np.all(excess[i:] >= math.log(cfg.diverge_onset_factor)))
            if tail_ok or first_bad is not None:
                up = np.flatnonzero(excess[:i + 1] < math.log(cfg.diverge_onset_factor))
                j = int(up[-1]) + 1 if len(up) else 0
                onset = float(s.x[min(j, i)])
                peak = float(np.exp(np.max(s.y_raw[i:])))
    if first_bad is None and onset is None:
        return []
    start = min(v for v in (onset, first_bad) if v is not None)
    recovered = first_bad is not None and len(s.step) and s.step[-1] > s.nonfinite_step[-1] and onset is None
    best = float(np.min(s.value)) if len(s.value) else None
    ev = {"min_loss": best, "max_finite_loss": peak if peak is not None else (float(np.max(s.value)) if len(s.value) else None),
          "first_nonfinite_step": first_bad, "nonfinite_rows": int(len(s.nonfinite_step)), "onset_step": int(start)}
    if recovered:
        text = (f"{label(s.metric)} was non-finite at {len(s.nonfinite_step)} logged step(s) from step {fmt_step(first_bad)} "
                f"but came back to finite values: check for overflow in those batches.")
        sev = "warn"
    else:
        parts = []
        if onset is not None:
            parts.append(f"rose from its best of {fmt_value(s.metric, best)} to {fmt_value(s.metric, peak)} "
                         f"from step {fmt_step(onset)}")
        if first_bad is not None:
            parts.append(f"turned non-finite (NaN/inf) at step {fmt_step(first_bad)}")
        text = f"{label(s.metric)} {' and '.join(parts)}: the run diverged; nothing after that point is usable."
        sev = "fail"
    return [Finding(kind=FindingKind.DIVERGED, metric=s.metric, step=int(start), end_step=int(ctx.t1), severity=sev,
                    evidence=ev, coincides_with=None, explanation=text)]
