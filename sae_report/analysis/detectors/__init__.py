"""One small pure detector per finding kind (ydata-profiling's alert pattern).

Each detector takes the ``Context`` (prepared series, interventions, thresholds, targets) and
returns a list of ``Finding``; none reads files or mutates its input. Detectors judge on the binned,
smoothed curves, but every number a finding shows is a claim computed from the raw logged values
(``Series.claims``). ``run_detectors`` runs them all, links each finding to the intervention it
coincides with, and drops findings another one explains better.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from ...runlog import Event
from ..claims import Claim, ClaimMaker, render, used_claims
from ..architecture import Architecture, architecture
from ..config import AnalyzerConfig
from ..interventions import describe
from ..result import Finding, FindingKind, Intervention, Severity, Skipped
from ..metric_series import Series


@dataclass(frozen=True)
class Context:
    """What every detector may look at."""

    series: dict[str, Series]
    """Prepared series by canonical metric, up to ``t1`` (only metrics present in the log)."""
    events: list[Event]
    """Logged events in step order."""
    cfg: AnalyzerConfig
    """Thresholds."""
    config: dict[str, Any]
    """The run's canonical config with overrides applied."""
    t0: int
    """First logged step."""
    t1: int
    """Last step the shape detectors look at: the last logged step, or the last one before the loss
    turned non-finite for good (nothing after a divergence is usable)."""
    target_l0: float | None = None
    """Target L0 as a fraction of the dictionary."""
    d_sae: int | None = None
    """Dictionary size."""
    interventions: list[Intervention] = field(default_factory=list)
    """Logged and inferred interventions, in step order."""
    columns: dict[str, ClaimMaker] = field(default_factory=dict)
    """Claim makers over the whole log (past ``t1`` too), by metric."""
    last_step: int = 0
    """Last logged step of the whole log."""
    skipped: list[Skipped] = field(default_factory=list)
    """Detectors append here when their input is missing."""
    cache: dict[str, Any] = field(default_factory=dict)
    """Results shared between detectors and the summary (e.g. the resample records)."""
    architecture: Architecture = field(default_factory=lambda: architecture(None))
    """The SAE's architecture (``analysis.architecture``): its sparsity coefficient, or L0 set by k."""

    @property
    def span(self) -> int:
        return max(1, self.t1 - self.t0)

    @property
    def half(self) -> float:
        """First step of the second half of the judged span."""
        return self.t0 + self.span / 2

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

    def target_claim(self) -> Claim | None:
        """The target L0 as the config states it (a fraction, or a count with d_sae)."""
        v = self.config.get("target_l0")
        if self.target_l0 is None or not isinstance(v, (int, float)) or isinstance(v, bool):
            return None
        return Claim("target_l0", "config", float(v), unit="pct" if v <= 1 else "features")

    def skip(self, analysis: str, reason: str) -> None:
        if not any(k.analysis == analysis for k in self.skipped):
            self.skipped.append(Skipped(analysis=analysis, reason=reason))


LABELS = {"l0_frac": "L0", "l0": "L0", "dead_frac": "the dead fraction", "dead": "the dead count", "loss": "the loss",
          "mse": "the MSE", "l1": "the L1 term", "explained_variance": "explained variance",
          "grad_norm": "the gradient norm", "dense_features": "the dense-latent count",
          "l2_ratio": "l2_ratio", "ce_loss_score": "ce_loss_score", "density_below_1e-5": "the ultra-low-density share",
          "density_below_1e-6": "the ultra-low-density share"}


def label(metric: str) -> str:
    """Words for a canonical metric in a sentence ("L0", "the dead fraction")."""
    return LABELS.get(metric, metric)


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def finding(kind: FindingKind, metric: str, step: int, end_step: int | None, severity: Severity, evidence: Any,
            template: str, claims: dict[str, Claim]) -> Finding:
    """A finding whose explanation is ``template`` rendered from ``claims`` (the claims kept: those
    it shows, and the ones they are derived from)."""
    claims = used_claims(template, claims)
    return Finding(kind=kind, metric=metric, step=int(step), end_step=None if end_step is None else int(end_step),
                   severity=severity, evidence=evidence, coincides_with=None, explanation=render(template, claims),
                   template=template, claims=claims)


def window(s: Series, centre: float, half_width: float, min_points: int = 3) -> tuple[float, float]:
    """A step span around ``centre`` at least ``half_width`` wide each side, widened until it holds
    ``min_points`` logged finite values (clipped to the series)."""
    lo, hi = centre - half_width, centre + half_width
    st = s.step
    if not len(st):
        return lo, hi
    i = int(np.searchsorted(st, np.int64(round(centre))))  # an int key: no float copy of the steps
    a, b = max(0, i - min_points // 2 - 1), min(len(st) - 1, i + min_points // 2)
    return float(min(lo, st[a])), float(max(hi, st[b]))


#: Which interventions can explain which findings (a recovery after a resample; a secondary rise
#: after a schedule change ...). Kinds absent here are not linked (their start is not an event).
EXPLAINS = {
    FindingKind.COLLAPSE: ("l1_change", "lr_change", "resample", "resume"),
    FindingKind.RECOVERY: ("resample", "l1_change", "lr_change", "resume"),
    FindingKind.OSCILLATION: ("resample", "lr_change", "l1_change"),
    FindingKind.LATE_SPIKE: ("resample", "lr_change", "l1_change", "resume"),
    FindingKind.SECONDARY_RISE: ("lr_change", "l1_change", "resample", "resume"),
    FindingKind.DIVERGED: ("lr_change", "l1_change", "resume", "resample"),
    FindingKind.PLATEAU: ("lr_change", "l1_change"),
}


def coinciding(ivs: list[Intervention], kind: FindingKind, step: int, before: float, after: float) -> Intervention | None:
    """The intervention nearest to ``step`` among those that can explain ``kind``, at most ``before``
    steps earlier or ``after`` steps later (a finding's date carries the smoothing's uncertainty);
    one later counts double its distance."""
    kinds = EXPLAINS.get(kind, ())
    best, best_d = None, None
    for iv in ivs:
        if iv.kind not in kinds or not step - before <= iv.step <= step + after:
            continue
        d = step - iv.step if iv.step <= step else 2 * (iv.step - step)
        if best_d is None or d < best_d:
            best, best_d = iv, d
    return best


Detector = Callable[[Context], list[Finding]]


def _registry() -> dict[FindingKind, Detector]:
    from . import diagnostics, divergence, resampling, shape, sparsity, spikes

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
        FindingKind.DEAD_LATENTS: diagnostics.dead_latents,
        FindingKind.DENSE_LATENTS: diagnostics.dense_latents,
        FindingKind.ULTRA_LOW_DENSITY: diagnostics.ultra_low_density,
        FindingKind.SHRINKAGE: diagnostics.shrinkage,
        FindingKind.POOR_SPLICED_LOSS: diagnostics.poor_spliced_loss,
    }


def run_detectors(ctx: Context) -> list[Finding]:
    """All detectors, then ``coincides_with`` filled and overlapping explanations resolved."""
    findings: list[Finding] = []
    for detect in _registry().values():
        findings.extend(detect(ctx))
    if ctx.architecture.fixed_l0:
        # TopK / BatchTopK: k sets L0, so its curve's shape (flat, a k schedule) says nothing about the
        # training; only an SAE that ended broken is reported on it
        findings = [f for f in findings if f.metric not in ("l0", "l0_frac")
                    or getattr(f.evidence, "mode", "") == "ended_collapsed"]
    findings = _resolve(findings)
    before = ctx.cfg.coincide_frac * ctx.span
    after = max(ctx.cfg.smooth_frac * ctx.span, 2.0 * ctx.span / max(1, ctx.cfg.bins))
    # A feature that stops firing counts as dead only a dead window later: a change in the dead count
    # can follow its cause by that much.
    w = ctx.config.get("dead_window")
    lag = float(w) if isinstance(w, (int, float)) and not isinstance(w, bool) and 0 < w < ctx.span else 0.0
    out = [f if f.coincides_with is not None else
           link(ctx, f, coinciding(ctx.interventions, f.kind, f.step, before + (lag if f.metric.startswith("dead") else 0),
                                   after)) for f in findings]
    return sorted(out, key=lambda f: (f.step, f.kind.value, f.metric))


def link(ctx: Context, f: Finding, iv: Intervention | None) -> Finding:
    """``f`` with ``iv`` as its intervention, named in its explanation with the claims behind it."""
    if iv is None:
        return f
    text, claims = describe(iv, ctx.columns.get(iv.source) if iv.inferred else None, ctx.architecture.coefficient)
    if any(k in f.claims for k in claims):
        return replace(f, coincides_with=iv)
    template = f"{f.template} It coincides with {text}."
    merged = {**f.claims, **claims}
    return replace(f, coincides_with=iv, template=template, claims=merged, explanation=render(template, merged))


def _overlap(a: Finding, b: Finding) -> float:
    """Share of ``a``'s span covered by ``b``."""
    a1, b1 = a.end_step if a.end_step is not None else a.step, b.end_step if b.end_step is not None else b.step
    inter = min(a1, b1) - max(a.step, b.step)
    return max(0.0, inter) / max(1, a1 - a.step)


def _resolve(findings: list[Finding]) -> list[Finding]:
    """A plateau inside an oscillation is not flat; a metric that diverged is not 'not converged'; nor
    is one that oscillates through the closing window (its half-window medians follow the swing)."""
    diverged = {f.metric for f in findings if f.kind == FindingKind.DIVERGED and f.severity == "fail"}
    osc = [f for f in findings if f.kind == FindingKind.OSCILLATION]
    out = []
    for f in findings:
        if f.kind == FindingKind.NOT_CONVERGED and (f.metric in diverged or ("loss" in diverged and f.metric in ("loss", "mse"))):
            continue
        if f.kind in (FindingKind.PLATEAU, FindingKind.NOT_CONVERGED) and any(
                o.metric == f.metric and _overlap(f, o) > 0.5 for o in osc):
            continue
        out.append(f)
    return out
