"""Everything ``sae-report recommend`` says: the l1_alpha fit across runs, the rules from the base
run's findings, and the next run's config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..analysis.result import Analysis, Recommendation
from ..runlog import RunData, to_jsonable
from ..recommend.fit import L1Recommendation
from ..recommend.nextconfig import NextConfig, SourceChanges, next_config, source_changes
from ..recommend.rules import PastRun, past_run, rules_for


@dataclass
class Advice:
    """The recommendation for the next run."""

    comparison: Any
    """The ``Comparison`` of the runs (``sae_report.compare``)."""
    l1: L1Recommendation | None
    """The l1_alpha recommendation (None when no fit was possible)."""
    rules: list[Recommendation] = field(default_factory=list)
    """Changes beyond l1_alpha, from the base run's findings."""
    base_id: str = ""
    """Run whose config the next config starts from."""
    next: NextConfig | None = None
    """The next run's config."""
    notes: list[str] = field(default_factory=list)
    """What could not be done (e.g. a run that could not be analyzed)."""
    source: SourceChanges | None = None
    """The next config's changes in the key names of the tool that trained the base run (SAELens,
    sparsify, ...); None when the base run is ours."""

    def to_dict(self) -> dict[str, Any]:
        """The documented recommendation JSON (l1_alpha, low, high, predicted_l0, basis, direction,
        explanation) plus rules, exclusions, warnings and the next config."""
        out: dict[str, Any] = dict(self.l1.to_dict()) if self.l1 else {
            "l1_alpha": None, "low": None, "high": None, "predicted_l0": None, "basis": [], "direction": None,
            "explanation": self.comparison.no_recommendation_reason,
            "coefficient": getattr(self.comparison, "coefficient", "l1_alpha")}
        out["rules"] = [asdict(r) for r in self.rules]
        out["excluded"] = [{"id": r.id, "reason": r.excluded} for r in self.comparison.excluded]
        out["comparison_warnings"] = list(self.comparison.warnings)
        out["base_run"] = self.base_id
        out["next_config"] = self.next.config if self.next else None
        out["changes"] = [asdict(c) for c in self.next.changes] if self.next else []
        out["notes"] = list(self.notes)
        out["source_changes"] = self.source.to_dict() if self.source else None
        return to_jsonable(out)


def _trend_text(row: Any) -> str:
    """Why the row's L0 has not settled, when it still drifts through its second half ("" if not)."""
    if not getattr(row, "drifting", False):
        return ""
    first, last = (row.second_half_trend or [None, None])[:2]
    if first and last:
        word = "falling" if last < first else "rising"
        return (f"L0 is still {word} through the second half of the run ({100 * first:.3g}% -> {100 * last:.3g}%, "
                "medians of its first and last fifth), so its settled L0 is not yet what the run would reach")
    return "L0 is still drifting through the second half of the run"


def analyze_quietly(data: RunData, target_l0: float | None) -> tuple[Analysis | None, str]:
    """Run the analyzer on a run; (None, reason) when it is unavailable or fails."""
    try:
        from ..analysis import analyze
    except ImportError:
        return None, "the analyzer is not available: rules beyond l1_alpha skipped"
    try:
        overrides = {"target_l0": target_l0} if target_l0 else None
        return analyze(data, overrides=overrides), ""
    except Exception as exc:  # one bad run must not sink the recommendation
        return None, f"{data.run_id}: could not be analyzed ({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})"


def advise(paths: Sequence[str | Path] | None = None, target_l0: float | None = None, *,
           runs: Sequence[RunData] | None = None, base: str | None = None, with_rules: bool = True,
           column_map: Any = None, min_ce_loss_score: float | None = None) -> Advice:
    """Compare the runs, fit l1_alpha, analyze the base run (default: the latest usable one) for the
    rules, and build the next config. ``column_map``: metric names the aliases do not know."""
    from .comparison import compare_runs, load_runs

    if runs is None:
        runs, _bad = load_runs(list(paths or []), column_map=column_map)
        comp = compare_runs(runs=runs, target_l0=target_l0, min_ce_loss_score=min_ce_loss_score)
        comp.unreadable = _bad
        comp.warnings.extend(f"{b['reason']} (not compared)" for b in _bad)
    else:
        comp = compare_runs(runs=runs, target_l0=target_l0, min_ce_loss_score=min_ce_loss_score)
    by_path = {str(d.path): d for d in runs}  # ids may have been told apart by compare_runs; paths are unique
    by_id = {r.id: by_path[r.path] for r in comp.rows if r.path in by_path}
    notes: list[str] = []
    if base is not None:
        chosen = next((r for r in comp.rows if r.id == base or Path(r.path).name == base or r.path == base), None)
        if chosen is None:
            raise ValueError(f"--base {base}: not one of the compared runs")
    else:
        chosen = comp.latest()
    rules: list[Recommendation] = []
    if chosen is not None and with_rules:
        analysis, why = analyze_quietly(by_id[chosen.id], comp.target_l0)
        if analysis is None:
            notes.append(why)
        else:
            history: list[PastRun] = []
            for r in comp.rows:
                if r.id == chosen.id:
                    continue
                other, why = analyze_quietly(by_id[r.id], comp.target_l0)
                if other is not None:
                    history.append(past_run(other))
                elif why not in notes:
                    notes.append(why)
            rules = rules_for(analysis, history=history, unsettled=_trend_text(chosen))
    nxt, src = None, None
    if chosen is not None and by_id[chosen.id].config:
        nxt = next_config(by_id[chosen.id].config, l1=comp.recommendation, rules=rules, base_id=chosen.id,
                          target_l0=comp.target_l0)
        src = source_changes(by_id[chosen.id].config, nxt)
    elif chosen is not None:
        notes.append(f"{chosen.id}: no config to base the next run on")
    return Advice(comparison=comp, l1=comp.recommendation, rules=rules, base_id=chosen.id if chosen else "",
                  next=nxt, notes=notes, source=src)


def l1_recommendation(analysis: Analysis, comparison: Any = None, *, tolerance: float = 0.1) -> Recommendation | None:
    """The sparsity coefficient's change for ``analyze``'s report (``l1_alpha``, or a JumpReLU SAE's
    ``l0_coefficient``): from the sibling comparison's fit when there is one, else from this run
    alone (default elasticity). None when the settled L0 is already within ``tolerance`` of the
    target, when the coefficient / the target / the settled L0 are unknown, and for TopK / BatchTopK
    (k sets L0: no coefficient)."""
    from ..analysis.architecture import architecture
    from ..recommend.fit import RunPoint, recommend_l1

    cfg = analysis.run.config
    coef = architecture(cfg).coefficient
    if coef is None:
        return None
    try:
        l1 = float(cfg.get(coef))
        target = float(cfg.get("target_l0"))
    except (TypeError, ValueError):
        return None
    s = analysis.summary.get("l0_frac")
    settled = getattr(s, "second_half_median", None)
    if not (l1 > 0 and 0 < target < 1 and settled and settled > 0):
        return None
    if abs(settled / target - 1) <= tolerance:
        return None
    rec = getattr(comparison, "recommendation", None)
    if rec is None or getattr(comparison, "target_l0", None) != target or getattr(rec, "coefficient", coef) != coef:
        rec = recommend_l1([RunPoint(analysis.run.id, l1, float(settled))], target, coef)
    return Recommendation(
        parameter=coef, current=l1, proposed=rec.l1_alpha, low=rec.low, high=rec.high,
        reason=rec.explanation, predicted_effect=f"Settled L0 about {100 * rec.predicted_l0:.3g}% "
                                                 f"(target {100 * target:.3g}%).")


def recommendations_for(analysis: Analysis, comparison: Any = None) -> list[Recommendation]:
    """All proposals for ``analyze``'s report: l1_alpha first (when off target), then the rules."""
    out = []
    l1 = l1_recommendation(analysis, comparison)
    if l1 is not None:
        out.append(l1)
    out.extend(rules_for(analysis))
    return out
