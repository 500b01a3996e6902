"""Rules beyond l1_alpha: what the findings of a run say to change next, each with its reason and
predicted effect.

- not converged, or a late spike (unsettled dynamics) -> lengthen the run (``total_steps``);
- resampling thrash -> keep ``resample_interval`` at or above the value used before the thrash
  appeared (from earlier runs when known, else 1.5x);
- an SAE that ended collapsed (below one active feature per token, or no reconstruction) -> a much
  lower l1_alpha (a tenfold step: one run gives no curve to fit);
- collapse early in the run -> an l1_alpha warm-up (``l1_warmup_steps``) so features find roles
  before the full penalty applies;
- divergence -> lower the learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

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
    l1 = _num(cfg.get("l1_alpha"))
    if collapse is not None and mode == "ended_collapsed" and l1:
        per_token = getattr(collapse.evidence, "l0_per_token", None)
        what = (f"L0 ended at {per_token:.3g} active features per token" if per_token is not None
                else "the SAE ended reconstructing almost nothing")
        recs.append(Recommendation(
            parameter="l1_alpha", current=l1, proposed=float(f"{l1 / BROKEN_L1_FACTOR:.2g}"),
            low=float(f"{l1 / (BROKEN_L1_FACTOR * 3):.2g}"), high=float(f"{l1 / 3:.2g}"),
            reason=(f"The SAE collapsed: {what}. lower l1_alpha -> weaker sparsity penalty -> more active features "
                    "-> higher L0. With one run there is no curve to fit, so a tenfold step; run `sae-report "
                    "recommend` over this run and the next one to interpolate."),
            predicted_effect="Several active features per token and a reconstruction that explains the input."))
    elif collapse is not None and total and collapse.step <= EARLY_FRACTION * total:
        warm = _round_steps(max(collapse.step, 0.05 * total) * 1.0) or _round_steps(0.1 * total)
        current = _num(cfg.get("l1_warmup_steps")) or 0
        if warm > current:
            recs.append(Recommendation(
                parameter="l1_warmup_steps", current=int(current), proposed=int(warm),
                low=float(_round_steps(0.05 * total)), high=float(_round_steps(max(warm * 2, 0.2 * total))),
                reason=(f"Collapse came early (step {collapse.step:,} of {total:,}): the full sparsity penalty "
                        f"{_harm(collapse)} before the features found a role. Ramp l1_alpha up from 0 over the first "
                        f"{warm:,} steps (a piecewise schedule such as the write-up's Option 3 works too)."),
                predicted_effect="A shallower early L0 undershoot and fewer dead features; the settled L0 is set "
                                 "by the final l1_alpha, so the l1 fit still applies."))
    return recs


def past_run(analysis: Analysis) -> PastRun:
    """The history entry of an analyzed run."""
    interval = _num(analysis.run.config.get("resample_interval"))
    return PastRun(run_id=analysis.run.id, resample_interval=int(interval) if interval else None,
                   thrash=any(f.kind == FindingKind.RESAMPLE_THRASH for f in analysis.findings))
