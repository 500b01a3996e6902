"""Divergence: the loss blows up (to ``diverge_factor`` times its running minimum, and stays) or
turns non-finite for good. NaN and inf are signals here, never dropped as missing data. The judged
span of every other detector ends before the loss turned non-finite for good (``cutoff``)."""

from __future__ import annotations

import math

import numpy as np

from .. import evidence as ev
from ..claims import Claim
from ..metric_series import Series
from ..result import Finding, FindingKind
from . import Context, cap, finding, label


def cutoff(loss_step: np.ndarray, loss_value: np.ndarray) -> int | None:
    """First step of the non-finite stretch the loss ends in (None when it ends finite): nothing
    logged from there on is usable."""
    if not len(loss_value) or np.isfinite(loss_value[-1]):
        return None
    fin = np.flatnonzero(np.isfinite(loss_value))
    first_bad = int(fin[-1]) + 1 if len(fin) else 0
    return int(loss_step[first_bad])


def diverged(ctx: Context) -> list[Finding]:
    s: Series | None = ctx.cache.get("loss_full")
    if s is None:
        ctx.skip("diverged", "no loss metric (loss, mse or an alias) in the log")
        return []
    cfg = ctx.cfg
    c = s.claims
    first_bad = int(s.nonfinite_step[0]) if len(s.nonfinite_step) else None
    onset_bin: float | None = None
    if len(s.y_raw) >= 5:
        runmin = np.minimum.accumulate(s.y)  # of the smoothed curve: a lone low glitch is no baseline
        excess = s.y_raw - runmin
        blown = excess >= math.log(cfg.diverge_factor)
        if blown.any():
            i = int(np.flatnonzero(blown)[0])
            tail_ok = bool(np.all(excess[i:] >= math.log(cfg.diverge_onset_factor)))
            if tail_ok or first_bad is not None:
                up = np.flatnonzero(excess[:i + 1] < math.log(cfg.diverge_onset_factor))
                onset_bin = float(s.x[min(int(up[-1]) + 1 if len(up) else 0, i)])
    if first_bad is None and onset_bin is None:
        return []
    last = ctx.last_step
    ends_bad = cutoff(s.all_step, s.all_value) is not None
    recovered = first_bad is not None and not ends_bad and onset_bin is None
    claims: dict[str, Claim] = {}
    if first_bad is not None:
        claims["first_nonfinite"] = c.first_nonfinite()
        claims["nonfinite_rows"] = c.count_nonfinite(s.t0, last)
    if recovered:
        template = (f"{cap(label(s.metric))} was NaN or inf at {{nonfinite_rows}} logged step(s) from step "
                    "{first_nonfinite} but came back to finite values: check for overflow in those batches.")
        e = ev.build(ev.DivergedEvidence, claims, recovered=True)
        return [finding(FindingKind.DIVERGED, s.metric, first_bad, last, "warn", e, template, claims)]  # type: ignore[arg-type]
    end = min(v for v in (onset_bin, first_bad) if v is not None)
    claims["best"] = c.stat("min", s.t0, end)
    parts = []
    start = end
    if onset_bin is not None and claims["best"].value is not None and claims["best"].value > 0:
        claims["onset"] = c.first_step("above", claims["best"].value * cfg.diverge_onset_factor,
                                       claims["best"].step or s.t0, last)
        claims["peak"] = c.stat("max", claims["onset"].value or onset_bin, last)
        if claims["onset"].value is not None and claims["peak"].value is not None:
            start = claims["onset"].value
            parts.append("rose from its best of {best} (step {best.step}) past {onset.threshold} at step {onset} to "
                         "{peak} (step {peak.step})")
        else:
            del claims["onset"], claims["peak"]
    if first_bad is not None:
        parts.append("turned NaN or inf at step {first_nonfinite} ({nonfinite_rows} logged rows are NaN or inf)")
        start = min(start, first_bad)
    if not parts:
        return []
    template = (f"{cap(label(s.metric))} {' and '.join(parts)}: the run diverged; nothing after that point is usable.")
    e = ev.build(ev.DivergedEvidence, claims, recovered=False)
    return [finding(FindingKind.DIVERGED, s.metric, int(start), last, "fail", e, template, claims)]
