"""The analysis result: what the analyzer found in one run, as plain named data.

Flow: runlog reader -> detectors / summary / recommender -> ``Analysis`` -> render. Templates and
``analysis.json`` receive ``Analysis.to_dict()``; nothing downstream calls back into the analyzer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Literal

from ..runlog import to_jsonable
from .claims import Claim, Sentence

ANALYSIS_SCHEMA_VERSION = 2

Severity = Literal["info", "warn", "fail"]
Status = Literal["ok", "warn", "fail", "none"]


class FindingKind(str, Enum):
    """What a detector can find. Each kind has one small pure detector and one template partial."""

    SPARSIFICATION = "sparsification"
    """L0 falls from its initial dense level (about half the features firing) to a sparse level:
    the normal way an SAE becomes sparse, reported for the record, not as an alarm."""
    DORMANCY = "dormancy"
    """A metric stays flat at its starting value for a stretch at the start of the run (e.g. no
    dead features until the dead window has filled)."""
    COLLAPSE = "collapse"
    """L0 undershoots far below the level the run later settles at (and the target), and/or dead
    features surge past most of the dictionary."""
    RECOVERY = "recovery"
    """After a collapse, L0 climbs back (and/or dead features fall) towards the settled level."""
    PLATEAU = "plateau"
    """A metric is flat within noise over a long span."""
    OSCILLATION = "oscillation"
    """Large detrended variance over a span: the metric swings rather than settles."""
    LATE_SPIKE = "late_spike"
    """A transient excursion in the last part of the run that does not persist."""
    SECONDARY_RISE = "secondary_rise"
    """Growth resumes after a plateau (dead features start dying again late in the run)."""
    NOT_CONVERGED = "not_converged"
    """The metric is still trending at the end of the run."""
    DIVERGED = "diverged"
    """Loss blows up or turns non-finite."""
    RESAMPLE_THRASH = "resample_thrash"
    """Features revived by resampling die again before the next resample."""
    DENSE_LATENTS = "dense_latents"
    """Features firing on more than 10% of tokens (``dense_features``) at the end of the run: how
    many, since when, and whether their number is still growing over the second half."""
    ULTRA_LOW_DENSITY = "ultra_low_density"
    """A large share of the dictionary fires on fewer than 1e-5 (or 1e-6) of tokens at the end (a
    dead-ish cluster below the healthy bulk), and whether resampling feeds it (the share jumps right
    after resamples)."""
    SHRINKAGE = "shrinkage"
    """``l2_ratio`` (||x_hat|| / ||x||) well below 1 over the second half: the L1 penalty shrinks the
    reconstructions; whether it tracks l1_alpha across a schedule change (or that l1_alpha is
    constant). Reported for the record only (info) when no L1 penalty sets L0 (TopK, JumpReLU)."""
    DEAD_LATENTS = "dead_latents"
    """TopK / BatchTopK (L0 is set by k, so dead latents are their failure mode): a large share of the
    latents dead over the end of the run and not falling through the second half: AuxK is off, or on
    and not reviving them."""
    POOR_SPLICED_LOSS = "poor_spliced_loss"
    """The language model's loss with the SAE spliced in recovers little of the zero-ablation gap
    (``ce_loss_score`` low), with L0 beside it (on target or not)."""


@dataclass(frozen=True)
class Intervention:
    """An intervention (logged as an event, or inferred from the logged columns) that a finding
    coincides with."""

    kind: Literal["resample", "lr_change", "l1_change", "resume"]
    """Event kind."""
    step: int
    """Step of the event (for an inferred one: the first step logged with the new value)."""
    inferred: bool = False
    """True when no event says so and it was read off a column (``source``)."""
    source: str = "events"
    """``events``, or the column it was inferred from (``lr``, ``l1_alpha``, ``dead_frac``)."""
    reason: str = ""
    """What changed: ``step change``, ``warm-up done``, ``decay starts``, ``resample`` ..."""


@dataclass(frozen=True)
class Finding:
    """One thing that happened in the run, with its evidence."""

    kind: FindingKind
    """What was found."""
    metric: str
    """Canonical metric it was found in (``l0_frac``, ``dead_frac``, ``loss``, ...)."""
    step: int
    """Step where it starts (or happens)."""
    end_step: int | None
    """Step where a span ends; None for point findings."""
    severity: Severity
    """``info`` (for the record), ``warn`` (worth acting on), ``fail`` (the run is not usable)."""
    evidence: Any
    """Numbers behind the finding: the typed evidence of its kind (``sae_report.analysis.evidence``),
    each number the value of the claim of the same name."""
    coincides_with: Intervention | None
    """The intervention (logged or inferred) the finding coincides with, if any."""
    explanation: str
    """One or two sentences in plain words, with direction stated unambiguously: ``template``
    rendered from ``claims``."""
    template: str = ""
    """The explanation with ``{claim}`` placeholders for every number (no literal digits)."""
    claims: dict[str, Claim] = field(default_factory=dict)
    """The claims the explanation shows, by name."""


@dataclass(frozen=True)
class Phase:
    """A span of the run with a name ("Initial collapse")."""

    name: str
    """Human name of the phase."""
    metric: str
    """Metric the phase was cut on."""
    start_step: int
    """First step of the span."""
    end_step: int
    """Last step of the span."""
    claims: dict[str, Claim] = field(default_factory=dict)
    """The levels its name is judged on: ``start_level`` and ``end_level`` (medians of the first
    and last tenth of the phase) and their ``change`` (ratio)."""


@dataclass(frozen=True)
class StepRow:
    """One row of a step table (the metric at every 10% of the run)."""

    step: int
    """A logged step (the one nearest to its tenth of the run)."""
    values: dict[str, float | None]
    """Canonical metric -> the value logged at exactly that step (None when not logged there)."""
    annotation: str
    """Short note such as "<- Rapid decay" or "" when nothing stands out."""
    tags: list[str] = field(default_factory=list)
    """The kinds behind the annotation (``initial``, ``final``, ``rapid_decay``, ``collapse``,
    ``recovering``, ``late_spike``, ``closest_to_target``, ``diverged``)."""


@dataclass(frozen=True)
class MetricSummary:
    """Summary figures of one metric."""

    metric: str
    """Canonical metric name."""
    final: float | None
    """Last logged value (NaN or inf included: a log that ends in NaN ends in NaN)."""
    second_half_mean: float | None
    """Mean over the second half of the run (by step)."""
    second_half_std: float | None
    """Standard deviation over the second half."""
    second_half_median: float | None
    """Median over the second half: the robust settled level used by the recommender."""
    best: float | None
    """Best value (lowest loss; L0 closest to target; fewest dead)."""
    best_step: int | None
    """Step of the best value."""
    claims: dict[str, Claim] = field(default_factory=dict)
    """``final``, ``second_half_mean``, ``second_half_std``, ``second_half_median``, ``best``."""


@dataclass(frozen=True)
class Target:
    """One row of the targets table."""

    metric: str
    """Label, e.g. "Final L0 Sparsity"."""
    result: float | None
    """Achieved value."""
    target: float | None
    """Target value (None when the row only reports)."""
    percent_of_target: float | None
    """result / target * 100."""
    status: Status
    """ok / warn / fail, or ``none`` when there is no target to meet."""
    comparison: str = ""
    """How the target reads: "5.0%", "<75%", "<0.02"."""
    claim: Claim | None = None
    """The claim behind ``result``."""


@dataclass(frozen=True)
class ResampleRecord:
    """What one resampling event did."""

    step: int
    """Step of the event."""
    n_resampled: int
    """Features resampled."""
    dead_before: float | None
    """Dead fraction at the last step logged before the event."""
    dead_after: float | None
    """Lowest dead fraction logged after the event, within the dead window (while revived features
    cannot count as dead yet)."""
    revived_survival_steps: float | None
    """Steps from the event until the dead fraction was back up by half the drop, less the dead
    window (a revived feature counts as dead only a dead window after it last fired); None when it
    did not come back before the next resample or could not be measured."""
    outcome: str = ""
    """``died`` (half the drop was undone before the next resample), ``survived`` (not undone by
    the next resample or the end), ``no_drop`` (the dead fraction did not visibly drop: nothing to
    follow), or ``no_data`` (no dead-feature fraction logged around the event)."""
    next_step: int | None = None
    """Step of the next resample (or the end of the run): the survival horizon."""
    claims: dict[str, Claim] = field(default_factory=dict)
    """``event``, ``before``, ``after``, ``drop``, ``back`` (first step above half-way back),
    ``back_steps``."""


@dataclass(frozen=True)
class Recommendation:
    """One proposed change for the next run (filled by the recommender)."""

    parameter: str
    """Config key (``l1_alpha``, ``total_steps``, ``resample_interval``, ``learning_rate``, ...)."""
    current: Any
    """Value in this run."""
    proposed: Any
    """Proposed value."""
    low: float | None
    """Lower end of the interval for numeric proposals."""
    high: float | None
    """Upper end of the interval."""
    reason: str
    """Why, in unambiguous words ("raise l1_alpha -> fewer active features -> lower L0")."""
    predicted_effect: str
    """What the change should do."""
    template: str = ""
    """When set, ``reason`` is this template rendered from ``claims`` (the evidence's numbers are
    claims on the log, as in a finding's sentence)."""
    claims: dict[str, Claim] = field(default_factory=dict)
    """The evidence behind ``reason`` (TopK/BatchTopK advice: dead latents, reconstruction, k)."""


@dataclass(frozen=True)
class RootCause:
    """A likely cause of a finding, read off this run's own data."""

    kind: str
    """``outlier_inputs``, ``collapse_after_l1_change``, ``collapse_after_warmup``, ``resample_thrash``,
    ``secondary_rise_after_schedule``."""
    title: str
    """Heading."""
    sentence: Sentence
    """What the data shows and what to change, with its numbers as claims."""


@dataclass(frozen=True)
class Verdict:
    """The run in one line, said first: is the SAE usable?"""

    status: Literal["ok", "warn", "fail"]
    """``fail`` when the SAE is broken or the run diverged; ``warn`` when a finding is worth acting on."""
    sentences: list[Sentence]
    """The most severe findings' sentences, worst first (or one saying nothing is wrong)."""


@dataclass(frozen=True)
class Skipped:
    """An analysis that could not run."""

    analysis: str
    """Name of the analysis or detector."""
    reason: str
    """Why (e.g. "no dead-feature metric in the log")."""


@dataclass(frozen=True)
class RunInfo:
    """Identity and provenance of the analyzed run."""

    id: str
    """Run id (``train_e01c6183``)."""
    path: str
    """Where it was read from."""
    config: dict[str, Any]
    """Config as read, with flag overrides applied."""
    source: str
    """What wrote the log."""
    rows: int
    """Metric rows read."""
    first_step: int | None
    """First logged step."""
    last_step: int | None
    """Last logged step."""
    sampled: bool
    """True when the log is a sample of the history."""
    d_sae: int | None
    """Dictionary size, when known (needed to report L0 both as count and fraction)."""
    notes: list[str] = field(default_factory=list)
    """Reader notes."""


@dataclass(frozen=True)
class Analysis:
    """Everything the analyzer found in one run."""

    run: RunInfo
    """Which run."""
    summary: dict[str, MetricSummary]
    """Summary figures per canonical metric."""
    step_table: list[StepRow]
    """The metrics at every 10% of the run, annotated."""
    targets: list[Target]
    """The targets table."""
    phases: list[Phase]
    """The run cut into named spans."""
    findings: list[Finding]
    """What happened, in step order."""
    resampling: list[ResampleRecord]
    """One record per resampling event (logged or inferred)."""
    input_outliers: list[dict[str, Any]]
    """Outlier input dimensions (``{"dim", "absmax", "ratio"}``) when the run recorded them."""
    recommendations: list[Recommendation]
    """Proposals for the next run (empty until the recommender fills them)."""
    skipped: list[Skipped]
    """Analyses that could not run and why."""
    verdict: Verdict | None = None
    """The run in one line (None when there was too little to judge)."""
    resampling_summary: list[Sentence] = field(default_factory=list)
    """What the resampling did overall, as sentences whose numbers are claims."""
    root_causes: list[RootCause] = field(default_factory=list)
    """Likely causes, each read off this run's data."""
    interventions: list[Intervention] = field(default_factory=list)
    """Every intervention the findings were linked against: logged ones and inferred ones."""
    comparison: dict[str, Any] | None = None
    """The comparison with sibling runs (the other runs in the run's folder), set by
    ``sae_report.pipeline``: ``{target_l0, target_source, key_finding, recommendation,
    no_recommendation_reason, runs, excluded, confounders, warnings, unreadable}`` (the runs without
    their configs); the l1_alpha fit is also the ``l1_alpha`` entry of ``recommendations``. None when
    the run has no comparable siblings or they were not looked for."""
    architecture: dict[str, Any] | None = None
    """The SAE's architecture (``analysis.architecture``): ``{name, label, coefficient, fixed_l0,
    claims}``; ``coefficient`` is the config key that sets L0 (``l1_alpha``, JumpReLU's
    ``l0_coefficient``) or null when ``k`` sets it (TopK, BatchTopK), and ``claims`` the evidence the
    TopK advice rests on (``k``, dead fraction early and late in the second half, explained
    variance, the AuxK term)."""
    schema_version: int = ANALYSIS_SCHEMA_VERSION
    """Version of this document's layout."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: the ``analysis.json`` document and the templates' input."""
        return to_jsonable(asdict(self, dict_factory=_enum_values))


def _enum_values(items: list[tuple[str, Any]]) -> dict[str, Any]:
    return {k: (v.value if isinstance(v, Enum) else v) for k, v in items}
