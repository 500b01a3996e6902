"""The sparsity-fidelity trade-off read with the language model's own loss.

Explained variance says how much of the activations the SAE reconstructs; the spliced-in loss score
(``ce_loss_score``, SAELens' definition: the share of the loss gap between zero-ablating the hookpoint
and the clean model that the SAE's reconstruction recovers) says how much of what the model needs.
``choose`` answers "the lowest L0 whose ce_loss_score stays above X": among the compared runs whose
second-half median score is at or above the floor, the one with the lowest settled L0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .runs import RunRow


@dataclass(frozen=True)
class FaithfulChoice:
    """The sparsest run that keeps the model's loss within a floor."""

    min_score: float
    """The floor asked for (``--min-ce-loss-score``)."""
    run_id: str | None
    """The sparsest run at or above the floor; None when no run reaches it."""
    settled_l0: float | None
    """That run's settled L0 (second-half median, fraction of the dictionary)."""
    ce_loss_score: float | None
    """That run's ce_loss_score (second-half median); with no run at the floor, the best one's."""
    considered: int
    """Runs with a settled L0 and a logged ce_loss_score."""
    text: str
    """The choice in words."""


def _pct(v: float) -> str:
    return f"{100 * v:.3g}%"


def choose(rows: Sequence[RunRow], min_score: float) -> FaithfulChoice:
    """The sparsest run of ``rows`` (excluded ones too: the choice needs no fit) whose ce_loss_score
    is at least ``min_score``."""
    scored = [r for r in rows if r.ce_loss_score is not None and r.settled_l0 is not None and r.settled_l0 > 0]
    if not scored:
        return FaithfulChoice(min_score, None, None, None, 0,
                              "No compared run logged ce_loss_score (the model's loss with the SAE spliced in: "
                              "ours with data_source: model and eval_every, SAELens' metrics/ce_loss_score), so "
                              "the runs are compared on explained variance only.")
    ok = [r for r in scored if r.ce_loss_score >= min_score]  # type: ignore[operator]
    if not ok:
        best = max(scored, key=lambda r: r.ce_loss_score)  # type: ignore[arg-type,return-value]
        return FaithfulChoice(min_score, None, None, best.ce_loss_score, len(scored),
                              f"No run keeps ce_loss_score at or above {min_score:g}: the best is run {best.id} "
                              f"at {best.ce_loss_score:.3g} (settled L0 {_pct(best.settled_l0)}); a denser SAE "
                              "(a lower sparsity coefficient, or a larger k) is needed to keep the model's loss.")
    pick = min(ok, key=lambda r: r.settled_l0)  # type: ignore[arg-type,return-value]
    return FaithfulChoice(min_score, pick.id, pick.settled_l0, pick.ce_loss_score, len(scored),
                          f"Of the {len(scored)} runs with a spliced-in loss score, the sparsest that keeps "
                          f"ce_loss_score at or above {min_score:g} is run {pick.id}: settled L0 "
                          f"{_pct(pick.settled_l0)}, ce_loss_score {pick.ce_loss_score:.3g} (second-half medians).")


__all__ = ["FaithfulChoice", "choose"]
