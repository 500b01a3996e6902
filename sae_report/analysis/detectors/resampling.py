"""Resampling: what each resample (logged, or inferred from a sudden drop of the dead fraction) did to
the dead fraction, resample thrash (the revived features die again before the next resample), and
the resampling summary. Every number is a claim on the raw dead fraction.

A resampled feature counts as dead again only a dead window after it last fired, so the dead
fraction cannot climb back sooner than that: the time until half the drop is undone, less the dead
window, is how long the revived features kept firing.
"""

from __future__ import annotations

import numpy as np

from .. import evidence as ev
from ..claims import Claim, Sentence, config_claim, count_of, difference, event_claim, median_of, sentence
from ..result import Finding, FindingKind, Intervention, ResampleRecord
from . import Context, finding


def _resamples(ctx: Context) -> list[Intervention]:
    return [iv for iv in ctx.interventions if iv.kind == "resample" and ctx.t0 <= iv.step <= ctx.t1]


def _n_resampled(ctx: Context, step: int) -> int:
    for e in ctx.events:
        if e.kind == "resample" and e.step == step:
            n = e.data.get("n", e.data.get("n_resampled"))
            if n is None and isinstance(e.data.get("features"), list):
                n = len(e.data["features"])
            ok = isinstance(n, (int, float)) and not isinstance(n, bool) and 0 <= n < 2**62  # NaN fails too
            return int(n) if ok else 0
    return 0


def measure_resamples(ctx: Context) -> list[ResampleRecord]:
    """One record per resample: the dead fraction at the last step logged before it, the lowest
    within the dead window after it, and the first step it was back up by half that drop."""
    if "resamples" in ctx.cache:
        return ctx.cache["resamples"]
    ivs = _resamples(ctx)
    d = ctx.series.get("dead_frac")
    window = config_claim("dead_window", ctx.config, unit="count")
    gap = 1.0
    if d is not None and len(d.step) > 1:  # the logging interval, from a sample of the steps
        gap = float(np.median(np.diff(d.step[:: max(1, len(d.step) // 100_000)])))
    records = []
    for k, iv in enumerate(ivs):
        e = iv.step
        nxt = ivs[k + 1].step if k + 1 < len(ivs) else ctx.t1
        n_res = _n_resampled(ctx, e)
        # An inferred resample is dated at the first row after a sudden drop: its claim is the dead
        # fraction logged there; a logged one's, the event.
        claims: dict[str, Claim] = {"event": d.claims.at(e) if iv.inferred and d is not None
                                    else event_claim("resample", e)}
        if d is None or nxt <= e or not len(d.step):
            records.append(ResampleRecord(e, n_res, None, None, None, "no_data", int(nxt), claims))
            continue
        # The last row logged before the resample (a tool may log the resample's own step after it).
        i = int(np.searchsorted(d.step, np.int64(e), side="left")) - 1
        log_gap = gap
        reach = max(window.value or 0.25 * (nxt - e), 2 * log_gap)
        if i < 0:
            records.append(ResampleRecord(e, n_res, None, None, None, "no_data", int(nxt), claims))
            continue
        claims["before"] = d.claims.at(int(d.step[i]))
        claims["after"] = d.claims.stat("min", e, min(e + reach, nxt - 1))
        if claims["after"].value is None or claims["before"].value is None:
            records.append(ResampleRecord(e, n_res, claims["before"].value, None, None, "no_data", int(nxt), claims))
            continue
        claims["drop"] = difference("before", "after", claims)
        before, low, drop = claims["before"].value, claims["after"].value, claims["drop"].value
        if drop < ctx.cfg.thrash_min_drop:  # type: ignore[operator]
            records.append(ResampleRecord(e, n_res, before, low, None, "no_drop", int(nxt), claims))
            continue
        claims["back"] = d.claims.first_step("above", low + 0.5 * drop, claims["after"].step or e, nxt)  # type: ignore[operator]
        if claims["back"].value is None:
            records.append(ResampleRecord(e, n_res, before, low, None, "survived", int(nxt), claims))
            continue
        # the step of the resample, as a value the difference can use: the event, or (inferred) the
        # first row below half the drop, which is the row it is dated at
        claims["start"] = (Claim(iv.source, "first_step_below", float(e), start_step=e, end_step=e,
                                 threshold=float(before) - 0.5 * float(drop))  # type: ignore[arg-type]
                           if iv.inferred else event_claim("resample", e))
        claims["back_steps"] = difference("back", "start", claims, unit="steps")
        lived = None
        if window.value:
            claims["window"] = window
            claims["lived"] = difference("back_steps", "window", claims, unit="steps")
            lived = max(0.0, claims["lived"].value)  # type: ignore[arg-type]
        else:
            lived = claims["back_steps"].value
        records.append(ResampleRecord(e, n_res, before, low, lived, "died", int(nxt), claims))
    ctx.cache["resamples"] = records
    return records


def resample_thrash(ctx: Context) -> list[Finding]:
    ivs = _resamples(ctx)
    if not ivs:
        interval = ctx.config.get("resample_interval")
        if isinstance(interval, (int, float)) and interval:
            ctx.skip("resample_thrash", f"resample_interval is {interval} but the log has no resample events "
                                        "and no sudden drop of the dead fraction")
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
    claims: dict[str, Claim] = {}
    for j, r in enumerate(measurable):
        claims[f"back_{j}"] = r.claims.get("back", Claim("dead_frac", "first_step_above", None))
        claims[f"back_steps_{j}"] = r.claims["back_steps"] if "back_steps" in r.claims else Claim("", "difference", None)
    claims = {k: v for k, v in claims.items() if not k.startswith("back_steps_") or v.of}
    names = [f"back_{j}" for j in range(len(measurable))]
    claims["measurable"] = count_of(names, claims)
    claims["died"] = count_of(names, claims, nonnull=True)
    steps_names = [k for k in claims if k.startswith("back_steps_")]
    for k in steps_names:  # a derived claim's operands must be its siblings: inline the two steps
        j = k.rsplit("_", 1)[1]
        rec = measurable[int(j)]
        claims[f"start_{j}"] = rec.claims["start"]
        claims[k] = Claim("", "difference", rec.claims["back_steps"].value, of=(f"back_{j}", f"start_{j}"), unit="steps")
    claims["median_back"] = median_of(steps_names, claims, unit="steps")
    interval = config_claim("resample_interval", ctx.config, unit="count")
    every = ""
    if interval.value:
        claims["interval"] = interval
        every = " (every {interval} steps)"
    window = config_claim("dead_window", ctx.config, unit="count")
    dead_w = ""
    if window.value:
        claims["window"] = window
        dead_w = (" A revived feature counts as dead only {window} steps (the dead window) after it last fired, so "
                  "they stopped firing soon after being revived.")
    template = ("The dead fraction climbed back at least half-way to its level before the resample, before the next "
                f"resample{every}, after {{died}} of {{measurable}} resamples: a median of {{median_back}} steps after "
                f"the resample.{dead_w} Resampling more often only repeats this; whatever kills the features (often "
                f"too strong an {ctx.architecture.coefficient or 'l1_alpha'}) is still acting.")
    e = ev.ResampleThrashEvidence(resamples=float(len(recs)), measurable=claims["measurable"].value,
                                  died=claims["died"].value, median_back=claims["median_back"].value,
                                  interval=interval.value)
    f = finding(FindingKind.RESAMPLE_THRASH, "dead_frac", died[0].step, died[-1].next_step, "warn", e, template, claims)
    from . import link

    first = next(iv for iv in ivs if iv.step == died[0].step)
    return [link(ctx, f, first)]


def summary_sentences(ctx: Context, recs: list[ResampleRecord], findings: list[Finding]) -> list[Sentence]:
    """What the resampling did overall, each number a claim."""
    if not recs:
        return []
    out: list[Sentence] = []
    inferred = any(iv.inferred for iv in _resamples(ctx))
    claims: dict[str, Claim] = {f"event_{j}": r.claims["event"] for j, r in enumerate(recs)}
    claims["n"] = count_of(list(claims), claims)
    interval = config_claim("resample_interval", ctx.config, unit="count")
    every = ""
    if interval.value:
        claims["interval"] = interval
        every = ", every {interval} steps in the config"
    how = " (inferred from sudden drops of the dead fraction: no resample event was logged)" if inferred else ""
    out.append(sentence(f"{{n}} resampling events{how}{every}.", claims))
    drops = {f"drop_{j}": r.claims["drop"] for j, r in enumerate(recs) if "drop" in r.claims}
    if drops:
        claims = {}
        for j, r in enumerate(recs):
            if "drop" in r.claims:
                claims[f"before_{j}"], claims[f"after_{j}"] = r.claims["before"], r.claims["after"]
                claims[f"drop_{j}"] = Claim("dead_frac", "difference", r.claims["drop"].value, of=(f"before_{j}", f"after_{j}"))
        claims["drop"] = median_of([k for k in claims if k.startswith("drop_")], claims, unit="points")
        out.append(sentence("Right after a resample the dead fraction fell by a median of {drop} (from the last value "
                            "logged before the resample to the lowest one within the dead window after it).",
                            claims))
    for f in findings:
        iv = f.coincides_with
        if iv is not None and iv.kind == "resample" and not iv.inferred and f.kind != FindingKind.RESAMPLE_THRASH:
            out.append(sentence(f"The {f.kind.value.replace('_', ' ')} in {f.metric} coincides with the resample at "
                                "step {iv}.", {"iv": event_claim("resample", iv.step)}))
    return out
