"""The verdict: the run in one line, said first. An SAE that ended collapsed or a run that diverged
fails whatever else went well; otherwise the findings worth acting on, worst first."""

from __future__ import annotations

from .claims import Sentence, sentence
from .result import Finding, FindingKind, Verdict

_RANK = {"fail": 0, "warn": 1, "info": 2}
#: Among findings of one severity, these come first: they decide whether the SAE is usable.
_FIRST = (FindingKind.COLLAPSE, FindingKind.DIVERGED)
#: Sentences the verdict shows at most.
MAX_SENTENCES = 1


def severity_key(severity: str, kind: str, step: float | None) -> tuple[int, bool, float]:
    """The order findings are read in (the verdict, the report, the terminal): the most severe first
    (fail, warn, info); within one severity a collapse or a divergence first (they decide whether the
    SAE is usable); then by step."""
    return (_RANK.get(severity, 3), kind not in {k.value for k in _FIRST},
            float(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else float("inf"))


def verdict(findings: list[Finding]) -> Verdict:
    """``fail`` / ``warn`` / ``ok`` from the worst finding, with the worst findings' sentences."""
    worst = sorted((f for f in findings if f.severity != "info"),
                   key=lambda f: severity_key(f.severity, f.kind.value, f.step))
    if not worst:
        return Verdict("ok", [sentence("Nothing the analyzer looks for went wrong: no collapse, divergence, "
                                       "oscillation, late spike, secondary rise, resampling thrash or unfinished trend.",
                                       {})])
    status = "fail" if worst[0].severity == "fail" else "warn"
    return Verdict(status, [Sentence(f.template, f.claims, f.explanation) for f in worst[:MAX_SENTENCES]])  # type: ignore[arg-type]
