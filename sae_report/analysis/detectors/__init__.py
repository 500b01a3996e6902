"""One small pure detector per finding kind (ydata-profiling's alert pattern).

Each detector takes the ``Context`` (prepared series, events, thresholds, targets) and returns a
list of ``Finding``; none reads files or mutates its input. ``run_detectors`` runs them all, names
the intervention each finding coincides with, and drops findings another one explains better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from ...runlog import INTERVENTION_KINDS, Event
from ..config import AnalyzerConfig
from ..result import Finding, FindingKind, Intervention, Skipped
from ..series import Series


@dataclass(frozen=True)
class Context:
    """What every detector may look at."""

    series: dict[str, Series]
    """Prepared series by canonical metric (only metrics present in the log)."""
    events: list[Event]
    """Logged events in step order."""
    cfg: AnalyzerConfig
    """Thresholds."""
    config: dict[str, Any]
    """The run's canonical config with overrides applied."""
    t0: int
    """First logged step."""
    t1: int
    """Last logged step."""
    target_l0: float | None = None
    """Target L0 as a fraction of the dictionary."""
    d_sae: int | None = None
    """Dictionary size."""
    skipped: list[Skipped] = field(default_factory=list)
    """Detectors append here when their input is missing."""
    cache: dict[str, Any] = field(default_factory=dict)
    """Results shared between detectors and the summary (e.g. the resample records)."""

    @property
    def span(self) -> int:
        return max(1, self.t1 - self.t0)

    @property
    def l0(self) -> Series | None:
        """The L0 series: the fraction when known, else the count."""
        return self.series.get("l0_frac") or self.series.get("l0")

    @property
    def dead(self) -> Series | None:
        """The dead-feature series: the fraction when known, else the count."""
        return self.series.get("dead_frac") or self.series.get("dead")

    @property
    def loss(self) -> Series | None:
        return self.series.get("loss") or self.series.get("mse")

    def target_for(self, s: Series) -> float | None:
        """Target L0 in the units of ``s`` (fraction or count)."""
        if self.target_l0 is None:
            return None
        if s.metric == "l0_frac":
            return self.target_l0
        if s.metric == "l0" and self.d_sae:
            return self.target_l0 * self.d_sae
        return None

    def skip(self, analysis: str, reason: str) -> None:
        if not any(k.analysis == analysis for k in self.skipped):
            self.skipped.append(Skipped(analysis=analysis, reason=reason))


def fmt_step(step: float | int | None) -> str:
    """12000 -> '12K', 12_500_000 -> '12.5M'."""
    if step is None:
        return "?"
    s = float(step)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(s) >= div:
            v = s / div
            return f"{v:.1f}".rstrip("0").rstrip(".") + unit if v < 100 else f"{v:.0f}{unit}"
    return f"{int(round(s))}"


LABELS = {"l0_frac": "L0", "l0": "L0", "dead_frac": "Dead features", "dead": "Dead features", "loss": "Loss",
          "mse": "MSE", "l1": "L1 loss", "explained_variance": "Explained variance", "grad_norm": "Gradient norm"}


def label(metric: str) -> str:
    """Words for a canonical metric in explanations ("L0", "Dead features")."""
    return LABELS.get(metric, metric)


def fmt_value(metric: str, v: float | None) -> str:
    """Fractions as percent, counts with separators, losses with 4 significant digits."""
    if v is None:
        return "n/a"
    if not math.isfinite(v):
        return str(v)
    if metric.endswith("_frac") or metric == "explained_variance":
        return f"{v * 100:.2f}%" if abs(v) < 0.1 else f"{v * 100:.1f}%"
    if metric in ("dead", "l0"):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return f"{v:.4g}"


def coinciding(events: list[Event], step: int, window: float, slack: float = 0.0) -> Intervention | None:
    """The latest intervention in ``[step - window, step + slack]``, if any."""
    best: Event | None = None
    for e in events:
        if e.kind in INTERVENTION_KINDS and step - window <= e.step <= step + slack:
            if best is None or e.step >= best.step:
                best = e
    return Intervention(kind=best.kind, step=int(best.step)) if best else None  # type: ignore[arg-type]


Detector = Callable[[Context], list[Finding]]


def _registry() -> dict[FindingKind, Detector]:
    from . import divergence, resampling, shape, sparsity, spikes

    return {
        FindingKind.SPARSIFICATION: sparsity.sparsification,
        FindingKind.COLLAPSE: sparsity.collapse,
        FindingKind.RECOVERY: sparsity.recovery,
        FindingKind.DORMANCY: shape.dormancy,
        FindingKind.PLATEAU: shape.plateau,
        FindingKind.OSCILLATION: shape.oscillation,
        FindingKind.SECONDARY_RISE: shape.secondary_rise,
        FindingKind.NOT_CONVERGED: shape.not_converged,
        FindingKind.LATE_SPIKE: spikes.late_spike,
        FindingKind.DIVERGED: divergence.diverged,
        FindingKind.RESAMPLE_THRASH: resampling.resample_thrash,
    }


def run_detectors(ctx: Context) -> list[Finding]:
    """All detectors, then ``coincides_with`` filled and overlapping explanations resolved."""
    findings: list[Finding] = []
    for detect in _registry().values():
        findings.extend(detect(ctx))
    findings = _resolve(findings)
    window = ctx.cfg.coincide_frac * ctx.span
    out = []
    for f in findings:
        if f.coincides_with is None:
            slack = 0.5 * ctx.span / max(1, ctx.cfg.bins)
            f = replace(f, coincides_with=coinciding(ctx.events, f.step, window, slack))
        out.append(f)
    return sorted(out, key=lambda f: (f.step, f.kind.value, f.metric))


def _overlap(a: Finding, b: Finding) -> float:
    """Share of ``a``'s span covered by ``b``."""
    a1, b1 = a.end_step if a.end_step is not None else a.step, b.end_step if b.end_step is not None else b.step
    inter = min(a1, b1) - max(a.step, b.step)
    return max(0.0, inter) / max(1, a1 - a.step)


def _resolve(findings: list[Finding]) -> list[Finding]:
    """A plateau inside an oscillation is not flat; a metric that diverged is not 'not converged'."""
    diverged = {f.metric for f in findings if f.kind == FindingKind.DIVERGED}
    osc = [f for f in findings if f.kind == FindingKind.OSCILLATION]
    out = []
    for f in findings:
        if f.kind == FindingKind.NOT_CONVERGED and (f.metric in diverged or ("loss" in diverged and f.metric in ("loss", "mse"))):
            continue
        if f.kind == FindingKind.PLATEAU and any(o.metric == f.metric and _overlap(f, o) > 0.5 for o in osc):
            continue
        out.append(f)
    return out
