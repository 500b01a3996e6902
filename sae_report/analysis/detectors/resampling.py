"""Resampling: what each resample event did to the dead-feature count, and resample thrash
(features revived by resampling die again before the next resample)."""

from __future__ import annotations

import math

import numpy as np

from ..result import Finding, FindingKind, Intervention, ResampleRecord
from ..series import bin_medians, rolling_median, slice_steps
from . import Context, fmt_step


def measure_resamples(ctx: Context) -> list[ResampleRecord]:
    """One record per resample event: dead fraction before, the low after, and how long the revived
    features survived (steps until half the drop was undone; while the dead fraction is still
    rising fast, e.g. early in the run, this also counts the features that die anyway)."""
    if "resamples" in ctx.cache:
        return ctx.cache["resamples"]
    events = [e for e in ctx.events if e.kind == "resample"]
    if not events:
        return []
    d = ctx.series.get("dead_frac")
    records = []
    for k, e in enumerate(events):
        nxt = events[k + 1].step if k + 1 < len(events) else ctx.t1
        n = e.data.get("n", e.data.get("n_resampled"))
        if n is None and isinstance(e.data.get("features"), list):
            n = len(e.data["features"])
        ok = isinstance(n, (int, float)) and not isinstance(n, bool) and math.isfinite(n) and 0 <= n < 2**62
        n_res = int(n) if ok else 0
        if d is None or nxt <= e.step:
            records.append(ResampleRecord(e.step, n_res, None, None, None, "no_data", int(nxt)))
            continue
        interval = nxt - e.step
        before_slice = slice_steps(d.step, e.step - max(0.1 * interval, 1), e.step - 1)
        if before_slice.stop == before_slice.start:
            before_slice = slice(max(0, before_slice.start - 3), before_slice.start)
        before_vals = d.value[before_slice]
        after = slice_steps(d.step, e.step, nxt)
        after_steps, after_vals = d.step[after], d.value[after]
        if not len(before_vals) or len(after_vals) < 2:
            records.append(ResampleRecord(e.step, n_res, None, None, None, "no_data", int(nxt)))
            continue
        before = float(np.median(before_vals))
        if len(after_vals) > 2000:  # a long interval of a dense log: follow it in 1000 medians
            xs, after_vals = bin_medians(after_steps, after_vals, e.step, nxt, 1000)
            after_steps = xs.astype(np.int64)
        smooth = rolling_median(after_vals, 5) if len(after_vals) >= 5 else after_vals
        early = after_steps <= e.step + 0.25 * interval
        if not early.any():
            early[0] = True
        m = int(np.argmin(np.where(early, smooth, np.inf)))
        low = float(smooth[m])
        drop = before - low
        if drop < ctx.cfg.thrash_min_drop:
            records.append(ResampleRecord(e.step, n_res, before, low, None, "no_drop", int(nxt)))
            continue
        back = np.flatnonzero(smooth[m:] >= low + 0.5 * drop)
        if len(back):
            survived = float(after_steps[m + int(back[0])] - e.step)
            records.append(ResampleRecord(e.step, n_res, before, low, survived, "died", int(nxt)))
        else:
            records.append(ResampleRecord(e.step, n_res, before, low, float(nxt - e.step), "survived", int(nxt)))
    ctx.cache["resamples"] = records
    return records


def resample_thrash(ctx: Context) -> list[Finding]:
    events = [e for e in ctx.events if e.kind == "resample"]
    if not events:
        interval = ctx.config.get("resample_interval")
        if isinstance(interval, (int, float)) and interval:
            ctx.skip("resample_thrash", f"resample_interval is {interval} but the log has no resample events")
        return []
    if ctx.series.get("dead_frac") is None:
        ctx.skip("resample_thrash", "no dead-feature fraction (dead_frac, or dead with d_sae known) in the log")
        return []
    recs = measure_resamples(ctx)
    measurable = [r for r in recs if r.outcome in ("died", "survived")]
    died = [r for r in measurable if r.outcome == "died"]
    cfg = ctx.cfg
    if len(died) < cfg.thrash_min_events or len(died) < cfg.thrash_share * len(measurable):
        return []
    surv = float(np.median([r.revived_survival_steps for r in died]))
    gaps = [r.next_step - r.step for r in recs if r.next_step is not None]
    interval = float(np.median(gaps)) if gaps else None
    drop = float(np.median([r.dead_before - r.dead_after for r in died]))  # type: ignore[operator]
    return [Finding(
        kind=FindingKind.RESAMPLE_THRASH, metric="dead_frac", step=died[0].step, end_step=died[-1].next_step,
        severity="warn",
        evidence={"resamples": len(recs), "measurable": len(measurable), "died": len(died),
                  "median_survival_steps": surv, "median_interval_steps": interval, "median_revived_frac": drop},
        coincides_with=Intervention(kind="resample", step=died[0].step),
        explanation=(f"Features revived by resampling died again after a median of {fmt_step(surv)} steps, before the "
                     f"next resample (every {fmt_step(interval)} steps): {len(died)} of {len(measurable)} resamples were "
                     f"undone. Resampling more often only repeats this; whatever kills the features (often too strong "
                     f"an l1_alpha) is still acting."))]
