"""Read a run from anywhere, analyze it, and write its report: the one call behind
``sae-report analyze``, ``train --report`` and ``tune``.

Nothing is ever written into the input except ``RUN/report/`` (or the ``out_dir`` given), and
in that folder only the report's own files (``sae_report.report.output``): a write that fails
(disk full, read-only folder) or is refused (a link, a ``charts`` that is not a folder) raises
``OutputError`` with one line and leaves the earlier report as it was; Ctrl-C while writing raises
``sae_report.report.output.ReportInterrupted`` (a ``KeyboardInterrupt``) saying whether the new
report was complete.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from .analysis import analyze
from .analysis.config import AnalyzerConfig
from .analysis.result import Analysis, Recommendation
from .ingest import load_run
from .report.formatting import pct
from .runlog import RunData

REPORT_DIR = "report"


class OutputError(Exception):
    """The report cannot be written where asked (a read-only input without ``--out``, ...)."""


@dataclass(frozen=True)
class PipelineResult:
    """What ``analyze_path`` did."""

    analysis: Analysis
    """The analysis (recommendations filled when the recommender is available)."""
    data: RunData
    """The run as read."""
    out_dir: Path | None
    """Where the report went (None when nothing was written)."""
    files: list[Path]
    """Files written."""
    comparison: Any = None
    """Comparison with sibling runs (``sae_report.compare.Comparison``) or None."""
    notes: list[str] = field(default_factory=list)
    """What the pipeline had to work around (a format not built, siblings not comparable, ...)."""


def default_out_dir(data: RunData, path: Path) -> Path:
    """Where a run's report goes by default: one folder per run.

    - our run directory (one run per folder): ``RUN/report/``;
    - any other input (a metrics file, a W&B / TensorBoard / MLflow store, a folder of tables), which
      may hold several runs: ``report/<run id>/`` inside the folder or beside the file, so analyzing
      two runs of one W&B folder (``--run a``, ``--run b``) writes two reports, not one over the other.
    """
    base = Path(path)
    folder = (base if base.is_dir() else base.parent) / REPORT_DIR
    if data.source == "sae-report":
        return folder
    return folder / run_folder_name(data.run_id)


def run_folder_name(run_id: str) -> str:
    """A run id as one safe folder name: letters, digits, ``.``, ``_`` and ``-`` (others become
    ``_``), no leading dot, at most 100 characters (``run`` when nothing is left)."""
    name = "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in str(run_id))
    name = name.lstrip(".")[:100]
    return name if name.strip("_") else "run"


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


def _check_writable(out_dir: Path, given: bool) -> None:
    probe = out_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and _writable(probe):
        return
    if given:
        raise OutputError(f"{out_dir}: cannot write here (permission denied or read-only)")
    raise OutputError(f"{out_dir}: the input is read-only, so the report cannot go beside it; "
                      "choose a folder with --out DIR")


def _recommend(analysis: Analysis, notes: list[str]) -> Analysis:
    from .recommend import rules_for

    try:
        recs = rules_for(analysis)
    except Exception as exc:  # the recommender must never break an analysis
        notes.append(f"recommendations skipped ({type(exc).__name__}: {exc})")
        return analysis
    return dataclasses.replace(analysis, recommendations=list(recs))


def _with_comparison(analysis: Analysis, comparison: Any) -> Analysis:
    """The analysis with the sibling comparison (``Analysis.comparison``) and the comparison's
    l1_alpha fit as its ``l1_alpha`` recommendation (a fit across runs replaces a single run's rule
    of thumb), so ``analysis.json`` and the terminal carry what the report files show."""
    if comparison is None:
        return analysis
    doc = comparison.to_dict() if hasattr(comparison, "to_dict") else dict(comparison)
    doc = {**doc, "runs": [{k: v for k, v in r.items() if k != "config"} for r in doc.get("runs") or []]}
    recs = list(analysis.recommendations)
    fit = getattr(comparison, "recommendation", None)
    coef = getattr(fit, "coefficient", "l1_alpha")  # l1_alpha, or a JumpReLU SAE's l0_coefficient
    if fit is not None and math.isfinite(fit.l1_alpha) and (analysis.architecture or {}).get("coefficient", coef) == coef:
        current = analysis.run.config.get(coef)
        current = current if isinstance(current, (int, float)) and not isinstance(current, bool) else fit.reference_l1_alpha
        rec = Recommendation(
            parameter=coef, current=current, proposed=fit.l1_alpha, low=fit.low, high=fit.high,
            reason=fit.explanation, predicted_effect=f"settled L0 about {pct(fit.predicted_l0)}")
        recs = [rec] + [r for r in recs if r.parameter != coef]
    return dataclasses.replace(analysis, comparison=doc, recommendations=recs)


def _siblings(data: RunData, analysis: Analysis, notes: list[str]) -> Any:
    if data.source != "sae-report":
        return None
    from .compare import comparison_for_siblings

    target = analysis.run.config.get("target_l0")
    try:
        return comparison_for_siblings(Path(data.path), target_l0=float(target) if isinstance(target, (int, float)) else None,
                                       loaded=data)
    except Exception as exc:  # a broken sibling must not break this run's report
        notes.append(f"comparison with sibling runs skipped ({type(exc).__name__}: {exc})")
        return None


def analyze_data(data: RunData, *, overrides: Mapping[str, Any] | None = None, siblings: bool = True,
                 config: AnalyzerConfig | None = None) -> PipelineResult:
    """Analyze a run already read: findings, the recommendations, and (``siblings``: for a run
    directory of ours) the comparison with the runs beside it. Writes nothing."""
    analysis = analyze(data, config=config, overrides=overrides)
    notes: list[str] = []
    analysis = _recommend(analysis, notes)
    comparison = _siblings(data, analysis, notes) if siblings else None
    analysis = _with_comparison(analysis, comparison)
    return PipelineResult(analysis, data, None, [], comparison, notes)


def analyze_path(path: str | Path, *, out_dir: str | Path | None = None,
                 formats: Sequence[str] = ("md", "html", "json"), source: str = "auto", run: str | None = None,
                 overrides: Mapping[str, Any] | None = None, siblings: bool = True,
                 config: AnalyzerConfig | None = None, command: str = "") -> PipelineResult:
    """Read ``path`` (any supported source), analyze it and write the report.

    ``formats`` empty: analyze only, write nothing. ``out_dir`` default: ``RUN/report/`` (a
    ``report/`` folder beside a file input). Raises ``RunLogError`` for unusable input and
    ``OutputError`` when the report cannot be written.
    """
    path = Path(path)
    data = load_run(path, source=source, run=run)
    result = analyze_data(data, overrides=overrides, siblings=siblings, config=config)
    analysis, comparison, notes = result.analysis, result.comparison, result.notes
    if not formats:
        return result
    given = out_dir is not None
    target = Path(out_dir) if given else default_out_dir(data, path)
    _check_writable(target, given)
    from .report import output, write_report

    try:
        if "md" not in formats and "html" not in formats:  # no charts or templates to render
            files = _write_json(analysis, target)
        else:
            try:
                files = write_report(analysis, data, target, formats=tuple(formats), command=command,
                                     comparison=comparison)
            except NotImplementedError as exc:
                notes.append(f"{exc}: wrote analysis.json only")
                files = _write_json(analysis, target)
    except output.OutputRefused as exc:
        raise OutputError(str(exc)) from None
    except output.WriteFailed as exc:
        raise OutputError(write_failed_text(target, exc)) from None
    return PipelineResult(analysis, data, target, list(files), comparison, notes)


def write_failed_text(target: Path, exc: Any) -> str:
    """The one line for a write that failed (``output.WriteFailed``): what happened and what is left."""
    err = exc.error
    reason = err.strerror or (os.strerror(err.errno) if err.errno else str(err) or type(err).__name__)
    if exc.changed:
        return f"{target}: the report was only partly replaced ({reason}); run the command again"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{target}: cannot write the report here ({reason}); nothing was changed; choose a folder with --out DIR"
    return f"{target}: cannot write the report ({reason}); nothing was changed"


def _write_json(analysis: Analysis, out_dir: Path) -> list[Path]:
    from .report import analysis_json, output

    return output.publish(out_dir, {"analysis.json": analysis_json(analysis.to_dict())}, replace_charts=False)
