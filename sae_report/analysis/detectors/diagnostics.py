"""The diagnostics SAE researchers check after L0 and explained variance (issue 17): dense latents,
an ultra-low-density cluster, shrinkage (``l2_ratio`` below one) and a poor spliced-in LM loss
(``ce_loss_score``). Each detector reads its column's raw logged values (``Context.columns``: these
columns are logged at an interval, so they are judged on their points, not on binned curves); every
number it shows is a claim on them. A log without the column gets no finding and no skipped note
(most logs have none of these columns).

Templates carry no literal digits: the fixed thresholds of the columns themselves (a tenth of
tokens, one in a hundred thousand) are said in words.
"""

from __future__ import annotations

from .. import evidence as ev
from ..claims import Claim, ClaimMaker, config_claim, count_of, difference, median_of, ratio
from ..result import Finding, FindingKind
from . import Context, finding

#: The density columns, most informative first, with how their threshold reads in a sentence.
DENSITY_COLUMNS = (("density_below_1e-5", 1e-5, "one in a hundred thousand"),
                   ("density_below_1e-6", 1e-6, "one in a million"))


def _column(ctx: Context, metric: str) -> ClaimMaker | None:
    c = ctx.columns.get(metric)
    if c is None:
        return None
    st = c.step
    if not len(st) or int(st[0]) > ctx.t1:
        return None
    return c


def _end(c: ClaimMaker, ctx: Context) -> Claim:
    """The value at the last step the column was logged at within the judged span."""
    step = c.nearest_step(ctx.t1, ctx.t0, ctx.t1)
    if step is None:
        return Claim(c.metric, "value", None)
    if step == int(c.step[-1]):
        return c.last()
    return c.at(step)


def dense_latents(ctx: Context) -> list[Finding]:
    c = _column(ctx, "dense_features")
    if c is None:
        return []
    cfg = ctx.cfg
    claims: dict[str, Claim] = {"final": _end(c, ctx)}
    final = claims["final"].value
    if final is None or not final >= cfg.dense_report:
        return []
    end = claims["final"].step or ctx.t1
    claims["low"] = c.stat("min", ctx.t0, end)
    claims["since"] = c.first_step("above", cfg.dense_onset_share * final, claims["low"].step or ctx.t0, end)
    q = ctx.span / 4
    claims["early"] = c.stat("median", ctx.half, ctx.half + q)
    claims["late"] = c.stat("median", ctx.t1 - q, ctx.t1)
    early, late = claims["early"].value, claims["late"].value
    growing = early is not None and late is not None and late >= cfg.dense_growth * early and late - early >= 1
    share = ""
    d = config_claim("d_sae", ctx.config, unit="count")
    if d.value:
        claims["d_sae"] = d
        claims["share"] = ratio("final", "d_sae", claims, unit="pct")
        share = " ({share} of the dictionary)"
    parts = [f"{{final:count}} features fire on more than a tenth of the tokens at step {{final.step}}{share}"]
    if claims["since"].value is not None:
        parts.append("it has been above half that count since step {since} (after a low of "
                     "{low:count} at step {low.step})")
    if early is not None and late is not None:
        if growing:
            parts.append("it is still growing over the second half (median {early:features} early in it, "
                         "{late:features} at the end)")
        else:
            parts.append("it is not growing over the second half (median {early:features} early in it, "
                         "{late:features} at the end)")
    # A tenth of the tokens is dense only where the average feature fires far less often: in a small
    # dictionary with a high L0 the data's busy features pass it without being dense latents.
    l0 = _column(ctx, "l0_frac")
    busy = False
    if l0 is not None:
        claims["mean"] = l0.stat("median", ctx.half, ctx.t1)
        mean = claims["mean"].value
        busy = mean is not None and mean > 0 and 0.1 / mean < cfg.dense_mean_ratio
    severe = final >= cfg.dense_warn and not busy
    advice = (" Dense latents carry little meaning each and take reconstruction from the sparse features: check "
              "whether they fire on the same tokens (a beginning-of-sequence or position direction), and whether "
              "the input is centred." if severe else "")
    if busy:
        advice = (" An average feature fires on {mean} of the tokens here (the settled L0 as a share of the "
                  "dictionary), so features above a tenth are this data's busy features rather than dense latents.")
    template = "; ".join(parts) + "." + advice
    step = claims["since"].value if claims["since"].value is not None else (claims["low"].step or ctx.t0)
    e = ev.DenseLatentsEvidence(final=final, low=claims["low"].value, since=claims["since"].value, early=early,
                                late=late, growing=growing, d_sae=d.value)
    return [finding(FindingKind.DENSE_LATENTS, "dense_features", int(step), ctx.t1, "warn" if severe else "info", e,
                    template, claims)]


def _density_column(ctx: Context) -> tuple[ClaimMaker, float, str] | None:
    for metric, threshold, words in DENSITY_COLUMNS:
        c = _column(ctx, metric)
        if c is not None:
            return c, threshold, words
    return None


def ultra_low_density(ctx: Context) -> list[Finding]:
    found = _density_column(ctx)
    if found is None:
        return []
    c, threshold, words = found
    cfg = ctx.cfg
    claims: dict[str, Claim] = {"final": _end(c, ctx)}
    final = claims["final"].value
    if final is None or not final >= cfg.ultra_low_share:
        return []
    end = claims["final"].step or ctx.t1
    claims["low"] = c.stat("min", ctx.t0, end)
    claims["since"] = c.first_step("above", cfg.ultra_low_share, claims["low"].step or ctx.t0, end)
    text = (f"{{final:pct}} of the dictionary fires on fewer than {words} tokens at step {{final.step}}: a cluster of "
            "nearly dead features below the healthy bulk")
    if claims["since"].value is not None and claims["since"].value > ctx.t0:
        text += " (above {since.threshold:pct} since step {since})"
    text += "."
    resamples = [iv for iv in ctx.interventions if iv.kind == "resample" and ctx.t0 < iv.step <= ctx.t1]
    names = []
    for j, iv in enumerate(resamples):
        nxt = resamples[j + 1].step if j + 1 < len(resamples) else ctx.t1 + 1
        before = c.nearest_step(iv.step - 1, ctx.t0, iv.step - 1)  # the last logged before the resample
        after = c.nearest_step(iv.step, iv.step, nxt - 1)  # the first logged at or after it, before the next
        if before is None or after is None:
            continue
        claims[f"before_{j}"] = c.at(before)
        claims[f"after_{j}"] = c.at(after)
        if claims[f"before_{j}"].value is None or claims[f"after_{j}"].value is None:
            continue
        claims[f"jump_{j}"] = difference(f"after_{j}", f"before_{j}", claims, unit="points")
        names.append(f"jump_{j}")
    fed = False
    jump = None
    if names:
        claims["n"] = count_of(names, claims)
        claims["jump"] = median_of(names, claims, unit="points")
        jump = claims["jump"].value
        fed = jump is not None and jump >= cfg.ultra_low_jump
        if fed:
            text += (" Resampling feeds it: the share rose by a median of {jump} right after each of {n} resamples "
                     "(from the last value logged before the resample to the first logged after it): the resampled "
                     "features land in the cluster instead of reviving.")
        else:
            text += (" Resampling does not feed it: the share moved by a median of {jump} across {n} resamples "
                     "(from the last value logged before the resample to the first logged after it).")
    elif resamples:
        text += " No density value was logged on both sides of a resample: whether resampling feeds it is unknown."
    else:
        text += " There was no resampling in this run."
    e = ev.UltraLowDensityEvidence(final=final, threshold=threshold, resamples=float(len(names)) if names else None,
                                   jump=jump, fed=fed)
    step = claims["since"].value if claims["since"].value is not None else ctx.t0
    return [finding(FindingKind.ULTRA_LOW_DENSITY, c.metric, int(step), ctx.t1, "warn", e, text, claims)]


def shrinkage(ctx: Context) -> list[Finding]:
    c = _column(ctx, "l2_ratio")
    if c is None:
        return []
    cfg = ctx.cfg
    claims: dict[str, Claim] = {"median": c.stat("median", ctx.half, ctx.t1)}
    med = claims["median"].value
    if med is None or not med < cfg.shrinkage_max:
        return []
    arch = ctx.architecture
    text = ("l2_ratio (||x_hat|| / ||x||) has a median of {median} over the second half (steps {median.start_step} to "
            "{median.end_step}), well below one: the reconstructions are systematically smaller than the inputs.")
    l1_penalty = arch.coefficient == "l1_alpha"
    constant = None
    before = after = None
    tracks = None
    if not l1_penalty:
        text += (f" A {arch.label} SAE has no L1 penalty to shrink its activations, so this is not L1 shrinkage: "
                 "check the input scaling and the decoder norms.")
    else:
        a = _column(ctx, "l1_alpha")
        if a is not None:
            claims["l1_lo"] = a.stat("min", ctx.t0, ctx.t1)
            claims["l1_hi"] = a.stat("max", ctx.t0, ctx.t1)
        if a is None or claims["l1_lo"].value is None:
            cc = config_claim("l1_alpha", ctx.config)
            claims.pop("l1_lo", None), claims.pop("l1_hi", None)
            if cc.value is not None:
                claims["l1"] = cc
                constant = cc.value
                text += " l1_alpha is {l1} in the config (no schedule logged), so there is no change to see the ratio follow."
        elif claims["l1_lo"].value == claims["l1_hi"].value:
            claims["l1"] = claims.pop("l1_lo")
            claims.pop("l1_hi")
            constant = claims["l1"].value
            text += (" l1_alpha is constant at {l1} over the run, so there is no schedule change to see the ratio "
                     "follow; the L1 penalty is what shrinks the reconstructions.")
        else:
            w = cfg.shrinkage_track_window * ctx.span
            changes = [iv for iv in ctx.interventions if iv.kind == "l1_change"
                       and ctx.t0 + w / 2 <= iv.step <= ctx.t1 - w / 2]
            if changes:
                s = changes[-1].step
                claims["before"] = c.stat("median", s - w, s - 1)
                claims["after"] = c.stat("median", s, s + w)
                claims["l1_before"] = a.stat("median", s - w, s - 1)
                claims["l1_after"] = a.stat("median", s, s + w)
                vals = [claims[k].value for k in ("before", "after", "l1_before", "l1_after")]
                if all(v is not None for v in vals):
                    before, after = vals[0], vals[1]
                    moved = vals[1] - vals[0]  # type: ignore[operator]
                    tracks = abs(moved) >= cfg.shrinkage_track_min and moved * (vals[3] - vals[2]) < 0  # type: ignore[operator]
                    how = "tracks l1_alpha" if tracks else "does not track l1_alpha"
                    text += (f" It {how}: across the l1_alpha change at step {{l1_after.start_step}} (median "
                             "{l1_before} before, {l1_after} after) the ratio's median went from {before} to {after}.")
                else:
                    for k in ("before", "after", "l1_before", "l1_after"):
                        claims.pop(k)
            if tracks is None:
                text += (" l1_alpha ranged from {l1_lo} to {l1_hi}, with no change far enough from the ends of the run "
                         "to compare the ratio across.")
        text += (" Lowering l1_alpha (trading a higher L0) or a variant without L1 shrinkage (TopK, JumpReLU, Gated) "
                 "brings the ratio back towards one.")
    e = ev.ShrinkageEvidence(median=med, l1_alpha=constant, before=before, after=after, tracks=tracks,
                             l1_penalty=l1_penalty)
    return [finding(FindingKind.SHRINKAGE, "l2_ratio", int(ctx.half + 0.5), ctx.t1, "warn" if l1_penalty else "info",
                    e, text, claims)]


def poor_spliced_loss(ctx: Context) -> list[Finding]:
    c = _column(ctx, "ce_loss_score")
    if c is None:
        return []
    cfg = ctx.cfg
    claims: dict[str, Claim] = {"score": c.stat("median", ctx.half, ctx.t1)}
    where = "median over the second half"
    if claims["score"].value is None:
        claims["score"] = _end(c, ctx)
        where = "at step {score.step}, its last eval"
    score = claims["score"].value
    if score is None or not score < cfg.spliced_min:
        return []
    text = ("With the SAE spliced in, the language model's ce_loss_score is {score} (" + where + "): that is the share "
            "of the loss gap between zero-ablating the hookpoint and the clean model the SAE recovers.")
    last = _end(c, ctx)
    vals = {}
    if last.step is not None:
        for name, metric in (("clean", "ce_loss_clean"), ("with_sae", "ce_loss_with_sae"), ("ablated", "ce_loss_ablated")):
            m = ctx.columns.get(metric)
            if m is not None and len(m.step):
                cl = m.at(last.step)
                if cl.value is not None:
                    claims[name] = cl
                    vals[name] = cl.value
        if len(vals) == 3:
            text += (" At step {clean.step} the LM loss is {clean} clean, {with_sae} with the SAE and {ablated} "
                     "zero-ablated.")
    on_target = None
    l0_val = None
    s = ctx.l0
    if ctx.architecture.fixed_l0:
        text += (f" L0 is set by k in a {ctx.architecture.label} SAE: a higher k (or a larger dictionary) buys back "
                 "fidelity.")
    elif s is not None:
        claims["l0"] = s.claims.stat("median", ctx.half, ctx.t1)
        l0_val = claims["l0"].value
        target = ctx.target_for(s)
        tc = ctx.target_claim()
        if l0_val is not None and target and tc is not None:
            claims["target"] = tc
            lo, hi = cfg.target_ok_band
            on_target = lo <= l0_val / target <= hi
            if on_target:
                text += (" L0 looks fine ({l0} second-half median, target {target}), so the SAE is as sparse as wanted "
                         "but loses what the model needs downstream: more training steps, a larger dictionary or a "
                         "weaker sparsity penalty trade a little sparsity for it.")
            else:
                text += " L0 is off target as well ({l0} second-half median, target {target})."
        elif l0_val is not None:
            text += " L0 is {l0} (second-half median), with no target to judge it by."
    e = ev.PoorSplicedLossEvidence(score=score, clean=vals.get("clean"), with_sae=vals.get("with_sae"),
                                   ablated=vals.get("ablated"), l0=l0_val, l0_on_target=on_target)
    first = int(c.step[0])
    step = max(ctx.t0, min(int(ctx.half + 0.5), ctx.t1)) if claims["score"].stat == "median" else (last.step or first)
    return [finding(FindingKind.POOR_SPLICED_LOSS, "ce_loss_score", step, ctx.t1, "warn", e, text, claims)]


def dead_latents(ctx: Context) -> list[Finding]:
    """TopK / BatchTopK only: many latents dead over the end of the run and not falling (the numbers
    are those ``architecture_summary`` and the AuxK advice quote: medians of the dead fraction over the
    first and the last fifth of the second half)."""
    if not ctx.architecture.fixed_l0:
        return []
    dead = _column(ctx, "dead_frac")
    if dead is None:
        return []
    cfg = ctx.cfg
    a, b = ctx.half, float(ctx.t1)
    fifth = (b - a) / 5
    claims: dict[str, Claim] = {"dead_early": dead.stat("median", a, a + fifth),
                                "dead_late": dead.stat("median", b - fifth, b)}
    late, early = claims["dead_late"].value, claims["dead_early"].value
    if late is None or late < cfg.topk_dead_warn:
        return []
    if early is not None and early > 0 and late <= (1 - cfg.topk_dead_falling) * early:
        return []  # AuxK is reviving them
    aux = config_claim("aux_loss_coefficient", ctx.config, unit="sig")
    aux_off = aux.value == 0
    template = ("A median of {dead_late} of the latents were dead over the end of the run (steps {dead_late.start_step} "
                "to {dead_late.end_step}), no fewer than the {dead_early} early in the second half: ")
    if aux_off:
        claims["aux_loss_coefficient"] = aux
        template += ("AuxK is off (aux_loss_coefficient {aux_loss_coefficient}), so nothing trains the dead latents; "
                     "with k set, they are this architecture's failure mode.")
    else:
        template += ("AuxK is not reviving them; either it is too weak or the dictionary is larger than the data "
                     "needs.")
    e = ev.DeadLatentsEvidence(dead_late=late, dead_early=early, aux_off=aux_off)
    start = int(claims["dead_late"].start_step or a)
    return [finding(FindingKind.DEAD_LATENTS, "dead_frac", start, ctx.t1, "warn", e, template, claims)]
