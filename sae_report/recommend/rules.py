"""Rules beyond l1_alpha: what the findings of a run say to change next, each with its reason and
predicted effect.

- not converged, or a late spike (unsettled dynamics) -> lengthen the run (``total_steps``);
- resampling thrash -> keep ``resample_interval`` at or above the value used before the thrash
  appeared (from earlier runs when known, else 1.5x);
- an SAE that ended collapsed (below one active feature per token, or no reconstruction) -> a much
  lower sparsity coefficient (a tenfold step: one run gives no curve to fit);
- collapse early in the run -> a warm-up of the sparsity coefficient (``l1_warmup_steps``; a
  JumpReLU SAE's ``l0_warmup_steps``) so features find roles before the full penalty applies;
- divergence -> lower the learning rate.

The sparsity coefficient is the architecture's (``analysis.architecture``): ``l1_alpha``, or
``l0_coefficient`` for JumpReLU. A TopK / BatchTopK SAE has none: its L0 is ``k``. Its rules
(``topk_rules``) read dead latents and reconstruction, with their numbers as claims:

- dead latents: the analysis' ``dead_latents`` finding (many latents dead over the end of the run
  and not falling through the second half; thresholds ``AnalyzerConfig.topk_dead_*``) -> AuxK on
  (``aux_loss_coefficient`` from 0) or stronger (x ``AUX_FACTOR``); while they fall, AuxK is reviving
  them (no finding, no change);
- reconstruction: explained variance below ``EV_ADVICE`` over the second half -> raise ``k``
  (x ``K_FACTOR``: more latents per token reconstruct more, at a higher L0 = k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..analysis.architecture import architecture
from ..analysis.claims import Claim, claim_from_dict, render
from ..analysis.result import Analysis, Finding, FindingKind, Recommendation
from ..runlog import finite_float as _num

#: Factor for a longer run; the interval goes up to ``LENGTHEN_MAX``.
LENGTHEN = 1.5
LENGTHEN_MAX = 2.0
#: A collapse that starts within this fraction of the run counts as early.
EARLY_FRACTION = 0.3
#: Factor applied to the learning rate after a divergence (interval 0.1x-0.5x).
LR_FACTOR = 0.3
#: l1_alpha is divided by this after an SAE ended collapsed (interval /30 to /3).
BROKEN_L1_FACTOR = 10.0
#: The AuxK coefficient is multiplied by this (interval x2 to x10) when dead latents stay dead.
AUX_FACTOR = 4.0
#: TopK: explained variance below this over the second half -> raise k ...
EV_ADVICE = 0.8
#: ... by this factor (interval x1.25 to x2).
K_FACTOR = 1.5


@dataclass(frozen=True)
class PastRun:
    """What the resample rule needs to know about an earlier run."""

    run_id: str
    """Run id."""
    resample_interval: int | None
    """Its resample interval."""
    thrash: bool
    """Whether resampling thrash was found in it."""




def _first(analysis: Analysis, *kinds: FindingKind) -> Finding | None:
    found = [f for f in analysis.findings if f.kind in kinds]
    return min(found, key=lambda f: f.step) if found else None


def _total_steps(analysis: Analysis) -> int | None:
    v = _num(analysis.run.config.get("total_steps"))
    if v:
        return int(v)
    return analysis.run.last_step


def _round_steps(v: float) -> int:
    """Round a step count to two significant figures (150,000 not 149,999)."""
    if v <= 0:
        return 0
    mag = 10 ** max(0, int(math.floor(math.log10(v))) - 1)
    return int(round(v / mag) * mag)


def _harm(collapse: Finding) -> str:
    """What the early penalty did, in words the evidence supports."""
    dead = getattr(collapse.evidence, "dead_frac_at_trough", None) or getattr(collapse.evidence, "dead_peak", None)
    if dead is not None and dead >= 0.5:
        return "killed most features"
    return "pushed L0 far below the level the run later settled at"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def rules_for(analysis: Analysis, *, history: Sequence[PastRun] = (), unsettled: str = "") -> list[Recommendation]:
    """Non-l1 recommendations from ``analysis``'s findings; ``history`` are earlier runs (for the
    resample-interval rule); ``unsettled`` says why the run's L0 has not settled when the settled
    level found it still drifting (``settled_level``) and no finding says so: the run is lengthened
    then too, as for a ``not_converged`` finding."""
    recs: list[Recommendation] = []
    cfg = analysis.run.config
    total = _total_steps(analysis)

    diverged = _first(analysis, FindingKind.DIVERGED)
    if diverged is not None:
        lr = _num(cfg.get("learning_rate", cfg.get("lr")))
        if lr:
            recs.append(Recommendation(
                parameter="learning_rate", current=lr, proposed=float(f"{lr * LR_FACTOR:.2g}"),
                low=float(f"{lr * 0.1:.2g}"), high=float(f"{lr * 0.5:.2g}"),
                reason=(f"The run diverged at step {diverged.step:,} ({diverged.explanation.rstrip('.')}). "
                        "lower learning_rate -> smaller, steadier updates."),
                predicted_effect="Loss stays finite; convergence is slower per step, so check that the run "
                                 "still settles within total_steps."))

    not_conv = _first(analysis, FindingKind.NOT_CONVERGED)
    spike = _first(analysis, FindingKind.LATE_SPIKE)
    if (not_conv is not None or spike is not None or unsettled) and total:
        why = []
        if not_conv is None and spike is None:
            why.append(unsettled)
        if not_conv is not None:
            why.append(f"{not_conv.metric} is still trending at the end of the run (from step {not_conv.step:,})")
        if spike is not None:
            why.append(f"a late spike in {spike.metric} at step {spike.step:,} did not persist: the dynamics "
                       "have not settled")
        recs.append(Recommendation(
            parameter="total_steps", current=total, proposed=_round_steps(total * LENGTHEN),
            low=float(_round_steps(total * LENGTHEN)), high=float(_round_steps(total * LENGTHEN_MAX)),
            reason=_sentence("; ".join(why)) + ". raise total_steps -> longer training -> more time to settle.",
            predicted_effect=(f"The second half covers settled training, so the settled L0 can be trusted; "
                              f"duration grows about {LENGTHEN:g}x.")))

    thrash = _first(analysis, FindingKind.RESAMPLE_THRASH)
    interval = _num(cfg.get("resample_interval"))
    if thrash is not None and interval:
        calm = sorted(p.resample_interval for p in history
                      if not p.thrash and p.resample_interval and p.resample_interval > interval)
        if calm:
            proposed = int(calm[0])
            source = ", ".join(p.run_id for p in history if p.resample_interval == proposed and not p.thrash)
            basis = f"runs at resample_interval {proposed:,} ({source}) showed no thrash"
        else:
            proposed = _round_steps(interval * 1.5)
            basis = "no earlier run shows a calm interval, so 1.5x"
        recs.append(Recommendation(
            parameter="resample_interval", current=int(interval), proposed=proposed,
            low=float(proposed), high=float(max(proposed, _round_steps(interval * 2))),
            reason=(f"Resampling thrash from step {thrash.step:,}: revived features die again before the next "
                    f"resample at interval {int(interval):,}; {basis}. raise resample_interval -> resample less "
                    "often -> revived features get longer to settle."),
            predicted_effect="Fewer features die again after each resample; the dead fraction settles lower "
                             "and L0 oscillates less."))

    collapse = _first(analysis, FindingKind.COLLAPSE)
    mode = getattr(collapse.evidence, "mode", "") if collapse is not None else ""
    arch = architecture(cfg)
    coef = arch.coefficient
    l1 = _num(cfg.get(coef)) if coef else None
    if arch.fixed_l0:
        recs.extend(topk_rules(analysis))
    elif collapse is not None and mode == "ended_collapsed" and l1:
        per_token = getattr(collapse.evidence, "l0_per_token", None)
        what = (f"L0 ended at {per_token:.3g} active features per token" if per_token is not None
                else "the SAE ended reconstructing almost nothing")
        recs.append(Recommendation(
            parameter=coef, current=l1, proposed=float(f"{l1 / BROKEN_L1_FACTOR:.2g}"),  # type: ignore[arg-type]
            low=float(f"{l1 / (BROKEN_L1_FACTOR * 3):.2g}"), high=float(f"{l1 / 3:.2g}"),
            reason=(f"The SAE collapsed: {what}. {arch.raise_l0()}. With one run there is no curve to fit, so a "
                    "tenfold step; run `sae-report recommend` over this run and the next one to interpolate."),
            predicted_effect="Several active features per token and a reconstruction that explains the input."))
    elif collapse is not None and total and collapse.step <= EARLY_FRACTION * total:
        warm = _round_steps(max(collapse.step, 0.05 * total) * 1.0) or _round_steps(0.1 * total)
        key = "l0_warmup_steps" if coef == "l0_coefficient" else "l1_warmup_steps"
        current = _num(cfg.get(key)) or 0
        if warm > current:
            how = (" (a piecewise schedule such as the write-up's Option 3 works too)" if key == "l1_warmup_steps"
                   else "")
            recs.append(Recommendation(
                parameter=key, current=int(current), proposed=int(warm),
                low=float(_round_steps(0.05 * total)), high=float(_round_steps(max(warm * 2, 0.2 * total))),
                reason=(f"Collapse came early (step {collapse.step:,} of {total:,}): the full sparsity penalty "
                        f"{_harm(collapse)} before the features found a role. Ramp {coef or 'l1_alpha'} up from 0 over "
                        f"the first {warm:,} steps{how}."),
                predicted_effect=(f"A shallower early L0 undershoot and fewer dead features; the settled L0 is set "
                                  f"by the final {coef or 'l1_alpha'}, so the fit across runs still applies.")))
    return recs


def _claims(analysis: Analysis) -> dict[str, Claim]:
    """The architecture section's claims (objects, or their ``analysis.json`` form)."""
    section = analysis.architecture or {}
    raw = section.get("claims") or {}
    return {k: (v if isinstance(v, Claim) else claim_from_dict(v)) for k, v in raw.items()}


def _rec(parameter: str, current: float, proposed: float, low: float, high: float, template: str,
         claims: dict[str, Claim], effect: str) -> Recommendation:
    from ..analysis.claims import used_claims

    used = used_claims(template, claims)
    return Recommendation(parameter=parameter, current=current, proposed=proposed, low=low, high=high,
                          reason=render(template, used), predicted_effect=effect, template=template, claims=used)


def topk_rules(analysis: Analysis) -> list[Recommendation]:
    """TopK / BatchTopK: advice on AuxK (dead latents) and on k (reconstruction), each with its
    evidence as claims (``Analysis.architecture['claims']``); never on a sparsity coefficient or an
    L0 target (k sets L0)."""
    claims = _claims(analysis)
    cfg = analysis.run.config
    out: list[Recommendation] = []
    late = claims.get("dead_late")
    # the dead_latents finding decides (many dead over the end, not falling: AuxK is not reviving them)
    if late is not None and any(f.kind == FindingKind.DEAD_LATENTS for f in analysis.findings):
        aux = _num(cfg.get("aux_loss_coefficient"))
        if aux == 0:
            proposed = 1 / 32 if "auxk_alpha" in {str(k).lower() for k in _leaf_keys(cfg)} else 1.0
            out.append(_rec(
                "aux_loss_coefficient", 0.0, proposed, proposed / 4, proposed * 4,
                "A median of {dead_late} of the latents were dead over the end of the run (steps "
                "{dead_late.start_step} to {dead_late.end_step}; {dead_early} early in the second half) and AuxK is "
                "off (aux_loss_coefficient {aux_loss_coefficient}). Turn AuxK on: the dead latents then learn the "
                "residual the live ones leave (raise aux_loss_coefficient -> dead latents get a gradient -> fewer "
                "stay dead).", {**claims, "aux_loss_coefficient": Claim("aux_loss_coefficient", "config", 0.0, unit="sig")},
                "Fewer dead latents; the main reconstruction is unchanged at first (AuxK only trains the dead ones)."))
        else:
            current = aux if aux else 1.0
            known = "aux_loss_coefficient" in claims
            coef_text = "AuxK (aux_loss_coefficient {aux_loss_coefficient})" if known else "AuxK"
            out.append(_rec(
                "aux_loss_coefficient", current, current * AUX_FACTOR, current * 2, current * 10,
                "A median of {dead_late} of the latents were dead over the end of the run (steps "
                "{dead_late.start_step} to {dead_late.end_step}), no fewer than the {dead_early} early in the second "
                f"half: {coef_text} is not reviving them. Raise aux_loss_coefficient -> a stronger pull on the dead "
                "latents toward the residual -> fewer stay dead. If they stay dead even so, the dictionary is larger "
                "than the data needs (a smaller d_sae).", claims,
                "Dead latents fall over the next run; reconstruction may improve slightly as they join in."))
    ev, k = claims.get("ev"), claims.get("k")
    d_sae = _num(cfg.get("d_sae"))
    if ev is not None and ev.value is not None and ev.value < EV_ADVICE and k is not None and k.value:
        cur = int(k.value)
        proposed = int(round(cur * K_FACTOR))
        if not d_sae or proposed <= d_sae:
            out.append(_rec(
                "k", cur, proposed, float(max(cur + 1, round(cur * 1.25))), float(round(cur * 2)),
                "Explained variance was a median of {ev} over the second half (steps {ev.start_step} to "
                "{ev.end_step}) with k {k}: the latents each token may use do not reconstruct it. Raise k -> more "
                "active latents per token -> better reconstruction (higher explained variance), at a higher L0 "
                "(L0 = k).", claims,
                f"Explained variance up; L0 rises to about {proposed} latents per token."))
    return out


def _leaf_keys(cfg: dict) -> list[str]:
    out: list[str] = []
    for k, v in cfg.items():
        out.append(str(k))
        if isinstance(v, dict):
            out.extend(_leaf_keys(v))
    return out


def past_run(analysis: Analysis) -> PastRun:
    """The history entry of an analyzed run."""
    interval = _num(analysis.run.config.get("resample_interval"))
    return PastRun(run_id=analysis.run.id, resample_interval=int(interval) if interval else None,
                   thrash=any(f.kind == FindingKind.RESAMPLE_THRASH for f in analysis.findings))
