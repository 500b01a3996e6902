"""Typed evidence, one dataclass per finding kind. Every number is the value of the finding's claim
of the same name (``Finding.claims``), so the evidence can be recomputed from the raw log too."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal, Mapping

from .claims import Claim


def values(claims: Mapping[str, Claim], *names: str) -> dict[str, Any]:
    """``{name: claims[name].value}`` for the names present (None for the missing ones)."""
    return {n: (claims[n].value if n in claims else None) for n in names}


def build(cls: type, claims: Mapping[str, Claim], **extra: Any) -> Any:
    """An evidence dataclass filled from the claims of the same names, plus ``extra`` fields."""
    names = [f.name for f in fields(cls) if f.name not in extra]
    return cls(**values(claims, *names), **extra)


@dataclass(frozen=True)
class SparsificationEvidence:
    start: float | None
    """L0 at the first logged step."""
    level: float | None
    """Median L0 where the steep fall ends."""
    fall: float | None
    """start / level."""
    reached: float | None
    """First step with L0 below 1.5x that level."""
    settled: float | None
    """Median L0 over the second half of the run."""


@dataclass(frozen=True)
class CollapseEvidence:
    mode: Literal["undershoot", "ended_collapsed", "dead_surge"]
    """``undershoot``: L0 fell far below the level the run later settled at, then climbed back;
    ``ended_collapsed``: the SAE ends broken (L0 below one feature per token, or explained variance
    near zero); ``dead_surge``: dead features surged past most of the dictionary."""
    trough: float | None
    """Median L0 around the trough (undershoot)."""
    settled: float | None
    """Median L0 over the second half of the run."""
    undershoot: float | None
    """settled / trough."""
    target: float | None
    """Target L0 (config)."""
    dead_frac_at_trough: float | None
    """Highest dead fraction logged around the trough."""
    l0_per_token: float | None
    """Median active features per token at the end of the run (ended_collapsed)."""
    explained_variance: float | None
    """Median explained variance at the end of the run (ended_collapsed)."""
    dead_from: float | None
    """Dead fraction before the surge (dead_surge)."""
    dead_peak: float | None
    """Highest dead fraction of the surge (dead_surge)."""


@dataclass(frozen=True)
class RecoveryEvidence:
    trough: float | None
    """Median L0 around the trough."""
    recovered: float | None
    """Median L0 where the climb ends."""
    ratio: float | None
    """recovered / trough."""
    climb: float | None
    """First step after the trough with L0 past 10% of the way up (log scale): where it starts climbing."""
    partial: bool
    """True when it stayed below the target's ok band."""
    target: float | None
    """Target L0 (config)."""


@dataclass(frozen=True)
class DormancyEvidence:
    start: float | None
    """The value at the first logged step."""
    moved: float | None
    """First step whose value differs from it."""
    dead_window: float | None
    """The dead window in steps (config), when the dormancy matches it."""


@dataclass(frozen=True)
class PlateauEvidence:
    level: float | None
    """Median over the plateau."""
    first_level: float | None
    """Median over its first tenth."""
    last_level: float | None
    """Median over its last tenth."""


@dataclass(frozen=True)
class SecondaryRiseEvidence:
    plateau: float | None
    """Median over the plateau before the rise."""
    final: float | None
    """Median over the end of the run."""
    rise: float | None
    """final - plateau."""
    cross: float | None
    """First step above half-way from the plateau to the final level."""


@dataclass(frozen=True)
class OscillationEvidence:
    mean: float | None
    """Mean over the span."""
    std: float | None
    """Standard deviation over the span."""
    cv: float | None
    """std / mean."""
    low: float | None
    """10% quantile over the span."""
    high: float | None
    """90% quantile over the span."""


@dataclass(frozen=True)
class LateSpikeEvidence:
    peak: float | None
    """Highest (lowest for a dip) value in the excursion."""
    baseline: float | None
    """Median over the stretch before it."""
    after: float | None
    """Median over the stretch after it."""
    final: float | None
    """Last logged value."""
    rel: float | None
    """peak / baseline."""
    direction: Literal["up", "down"]
    """Which way it went."""
    duration_steps: float | None
    """Steps from its start until it came back."""


@dataclass(frozen=True)
class NotConvergedEvidence:
    early: float | None
    """Median over the first half of the closing window."""
    late: float | None
    """Median over its second half."""
    ratio: float | None
    """late / early."""


@dataclass(frozen=True)
class DivergedEvidence:
    best: float | None
    """Lowest finite loss before the blow-up."""
    peak: float | None
    """Highest finite loss from the onset on."""
    onset: float | None
    """First step with the loss above ``diverge_onset_factor`` x its best."""
    first_nonfinite: float | None
    """First step with a NaN or inf loss."""
    nonfinite_rows: float | None
    """Logged rows with a NaN or inf loss."""
    recovered: bool
    """True when the loss came back to finite values (a glitch, not a divergence)."""


@dataclass(frozen=True)
class ResampleThrashEvidence:
    resamples: float | None
    """Resamples in the run."""
    measurable: float | None
    """Resamples whose drop could be followed."""
    died: float | None
    """Resamples whose drop was half undone before the next one."""
    median_back: float | None
    """Median steps until half the drop was undone."""
    interval: float | None
    """Resample interval (config)."""


@dataclass(frozen=True)
class DeadLatentsEvidence:
    dead_late: float | None
    """Median dead fraction over the last fifth of the second half."""
    dead_early: float | None
    """Median dead fraction over the first fifth of the second half."""
    aux_off: bool
    """True when the config says AuxK is off (``aux_loss_coefficient`` 0)."""


@dataclass(frozen=True)
class DenseLatentsEvidence:
    final: float | None
    """Features firing on more than 10% of tokens at the last logged step."""
    low: float | None
    """The count's lowest value (after the dense start of training)."""
    since: float | None
    """First step after the low point with the count above ``dense_onset_share`` x final."""
    early: float | None
    """Median count over the first quarter of the second half."""
    late: float | None
    """Median count over the last quarter of the judged span."""
    growing: bool
    """True when ``late`` is at least ``dense_growth`` x ``early`` (and one feature more)."""
    d_sae: float | None
    """Dictionary size (config), when known."""


@dataclass(frozen=True)
class UltraLowDensityEvidence:
    final: float | None
    """Share of the dictionary below the density threshold at the last logged step."""
    threshold: float
    """The density threshold (1e-5, or 1e-6 when only that column is logged)."""
    resamples: float | None
    """Resamples whose effect on the share could be measured."""
    jump: float | None
    """Median rise of the share from just before to just after a resample."""
    fed: bool
    """True when resampling feeds the cluster (``jump`` at least ``ultra_low_jump``)."""


@dataclass(frozen=True)
class ShrinkageEvidence:
    median: float | None
    """Median l2_ratio over the second half."""
    l1_alpha: float | None
    """l1_alpha over the second half when it is constant (None when it changes or is not known)."""
    before: float | None
    """Median l2_ratio before the l1_alpha change compared across (None without one)."""
    after: float | None
    """Median l2_ratio after it."""
    tracks: bool | None
    """True when l2_ratio moved against l1_alpha across the change, False when not, None without a
    change to compare across."""
    l1_penalty: bool
    """False for TopK / BatchTopK / JumpReLU: no L1 penalty shrinks the activations."""


@dataclass(frozen=True)
class PoorSplicedLossEvidence:
    score: float | None
    """Median ce_loss_score over the second half (or the last logged value)."""
    clean: float | None
    """LM loss without the SAE at the last eval."""
    with_sae: float | None
    """LM loss with the SAE spliced in at the last eval."""
    ablated: float | None
    """LM loss with the hookpoint zero-ablated at the last eval."""
    l0: float | None
    """Median L0 over the second half."""
    l0_on_target: bool | None
    """True when L0 is within the target's ok band, False when not, None without a target."""
