"""Root causes: small rules that connect a finding to a likely cause in the run's own data.

Each rule returns a cause only when its condition holds in this run, as a sentence whose numbers are
claims (from the findings it builds on, the log's schedule columns or the input statistics):

- dead features together with outlier input dimensions;
- a collapse that starts right after an l1_alpha change, or soon after an l1_alpha warm-up ends;
- resampling thrash: revived features die before the next resample;
- a secondary rise of dead features that starts at a learning-rate or l1_alpha schedule change.
"""

from __future__ import annotations

from typing import Any

from .claims import Claim, difference, sentence
from .detectors import Context
from .interventions import describe
from .result import Finding, FindingKind, RootCause

#: A collapse that starts within this fraction of the run after the warm-up ends counts as "soon after".
WARMUP_WINDOW_FRAC = 0.1
#: Dead fraction from which dead features are worth explaining.
DEAD_NOTABLE = 0.25


def root_causes(ctx: Context, findings: list[Finding], outliers: list[dict[str, Any]]) -> list[RootCause]:
    """The causes whose rule applies to this run."""
    out = []
    for rule in (_outlier_dims, _collapse_after_l1, _resample_thrash, _rise_after_schedule):
        cause = rule(ctx, findings, outliers)
        if cause is not None:
            out.append(cause)
    return out


def _first(findings: list[Finding], kind: FindingKind) -> Finding | None:
    return next((f for f in findings if f.kind == kind), None)


def _outlier_dims(ctx: Context, findings: list[Finding], outliers: list[dict[str, Any]]) -> RootCause | None:
    if not outliers:
        return None
    dead = ctx.columns.get("dead_frac")
    final = dead.last() if dead is not None and len(dead.step) else None
    dead_findings = [f for f in findings if f.metric.startswith("dead")]
    if (final is None or final.value is None or not final.value >= DEAD_NOTABLE) and not dead_findings:
        return None
    top = sorted(outliers, key=lambda o: -(o.get("ratio") or 0))
    claims: dict[str, Claim] = {f"dim_{k}": Claim("input_dims", "input_ratio", float(o["ratio"]), step=int(o["dim"]), unit="x")
                                for k, o in enumerate(top[:8])}
    dims = ", ".join(f"{{dim_{k}.step}}" for k in range(len(claims)))
    more = " and more" if len(top) > 8 else ""
    dead_part = ""
    if final is not None and final.value is not None:
        claims["dead"] = final
        dead_part = " and {dead} of features are dead at the end"
    text = (f"Input dimensions {dims}{more} reach up to {{dim_0}} the typical dimension's largest magnitude{dead_part}. "
            "A few huge dimensions dominate the reconstruction loss: most features never win against them and stop "
            "firing. Normalise the inputs (scale so that the mean input norm is the square root of d_in) or "
            "standardise or clip the outlier dimensions, then retrain.")
    return RootCause("outlier_inputs", "Dead features with outlier input dimensions", sentence(text, claims))


def _collapse_start(f: Finding) -> tuple[str, Claim] | None:
    for name in ("start", "dead_from"):
        if name in f.claims and f.claims[name].value is not None:
            return name, f.claims[name]
    return None


def _collapse_after_l1(ctx: Context, findings: list[Finding], _o: list[dict[str, Any]]) -> RootCause | None:
    f = _first(findings, FindingKind.COLLAPSE)
    if f is None:
        return None
    start = _collapse_start(f)
    if start is None:
        return None
    name, claim = start
    at = "{start}" if name == "start" else "{start.step}"
    warm = _after_warmup(ctx, name, claim, at)
    if warm is not None:
        return warm
    iv = f.coincides_with
    coef = ctx.architecture.coefficient
    if iv is not None and iv.kind == "l1_change" and coef is not None:
        text, claims = describe(iv, ctx.columns.get(iv.source) if iv.inferred else None, coef)
        claims = {**claims, "start": claim}
        return RootCause("collapse_after_l1_change", f"Collapse right after an {coef} change", sentence(
            f"The collapse starts at step {at}, right after {text}. A stronger sparsity penalty pushes features to "
            f"zero faster than they find roles. Raise {coef} more gradually (a longer warm-up), or aim lower "
            f"(lower {coef} -> more active features -> higher L0).", claims))
    return None


def _after_warmup(ctx: Context, name: str, claim: Claim, at: str) -> RootCause | None:
    """The collapse starts within ``WARMUP_WINDOW_FRAC`` of the run after the sparsity coefficient's
    warm-up ends (l1_alpha, or a JumpReLU SAE's l0_coefficient)."""
    coef = ctx.architecture.coefficient
    l1 = ctx.columns.get(coef) if coef else None
    if l1 is None or not len(l1.step):
        return None
    top = l1.stat("max", ctx.t0, ctx.last_step)
    first = l1.first()
    if top.value is None or first.value is None or top.value <= 0 or first.value >= 0.5 * top.value:
        return None
    claims = {"start": claim, "l1_first": first, "l1_max": top,
              "warm": l1.first_step("above", 0.99 * top.value - 1e-300, ctx.t0, ctx.last_step)}
    if claims["warm"].value is None:
        return None
    start_step = claim.value if name == "start" else claim.step
    gap = (start_step or 0) - claims["warm"].value
    if not 0 <= gap <= WARMUP_WINDOW_FRAC * ctx.span:
        return None
    if name == "start":
        claims["gap"] = difference("start", "warm", claims, unit="steps")
        later = ", {gap} steps later"
    else:
        later = ""
    return RootCause("collapse_after_warmup", f"Collapse soon after the {coef} warm-up ends", sentence(
        f"{coef} rose from {{l1_first}} to {{l1_max}}, reaching it at step {{warm}}, and the collapse starts at step "
        f"{at}{later}. The full sparsity penalty arrived before the features had settled. Lengthen the warm-up, or "
        f"lower the final {coef} (lower {coef} -> more active features -> higher L0).", claims))


def _resample_thrash(ctx: Context, findings: list[Finding], _o: list[dict[str, Any]]) -> RootCause | None:
    f = _first(findings, FindingKind.RESAMPLE_THRASH)
    if f is None:
        return None
    claims = {k: v for k, v in f.claims.items() if not k.startswith("iv")}
    every = " while resampling happens every {interval} steps" if "interval" in claims else ""
    coef = ctx.architecture.coefficient or "l1_alpha"
    return RootCause("resample_thrash", "Resampling thrash", sentence(
        f"The dead fraction climbs back a median of {{median_back}} steps after a resample{every}: each resample's "
        "features die before the next one, so resampling replaces the same dead features over and over. Resample "
        "less often (raise resample_interval) so revived features have time to settle, or weaken the penalty that "
        f"kills them (lower {coef} -> more active features -> higher L0).", claims))


def _rise_after_schedule(ctx: Context, findings: list[Finding], _o: list[dict[str, Any]]) -> RootCause | None:
    f = _first(findings, FindingKind.SECONDARY_RISE)
    if f is None or f.coincides_with is None or f.coincides_with.kind not in ("lr_change", "l1_change"):
        return None
    iv = f.coincides_with
    coef = ctx.architecture.coefficient or "l1_alpha"
    text, claims = describe(iv, ctx.columns.get(iv.source) if iv.inferred else None, coef)
    claims = {**claims, "start": f.claims["start"]}
    if iv.kind == "lr_change":
        why = ("With a smaller learning rate the model settles into sharper minima and features that fire rarely no "
               "longer get updates large enough to stay alive. Decay the learning rate later or less far, or resample "
               "the dead features after the decay.")
    else:
        why = (f"A stronger sparsity penalty pushes rarely firing features to zero. Raise {coef} more gradually, or "
               "resample the dead features after the change.")
    return RootCause("secondary_rise_after_schedule", "Features die again after a schedule change", sentence(
        f"Dead features start rising again at step {{start}}, at {text}. {why}", claims))
