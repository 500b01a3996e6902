"""sae-report: train sparse autoencoders, find what happened in a run, and report it.

The Python front door (everything the command line does goes through it)::

    import sae_report

    run = sae_report.load_run("runs/train_e01c6183")          # any source: ours, CSV, W&B, TensorBoard ...
    analysis = sae_report.analyze("runs/train_e01c6183")       # findings, verdict, claims, next run
    print(analysis.verdict.status, [f.kind.value for f in analysis.findings])
    result = sae_report.write_report("runs/train_e01c6183")    # RUN/report/: report.md, report.html, analysis.json
    print(result.files)

Importing this package never imports torch: ``sae-report analyze`` works without the training
extra. The functions load their modules on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from .analysis import Analysis
    from .pipeline import PipelineResult
    from .runlog import RunData

__version__ = "0.1.0"


def load_run(path: str | Path, *, source: str = "auto", run: str | None = None) -> "RunData":
    """Read a run: our run directory or another tool's log (CSV / NDJSON / Parquet export, W&B,
    TensorBoard, MLflow; ``source`` names the format when the guess is wrong, ``run`` one run of a
    store that holds several). Raises ``sae_report.runlog.RunLogError`` (one line naming the file)
    for unusable input. Reads only."""
    from .ingest import load_run as _load

    return _load(Path(path), source=source, run=run)


def analyze(path: "str | Path | RunData", *, target_l0: float | None = None, source: str = "auto",
            run: str | None = None, overrides: Mapping[str, Any] | None = None,
            siblings: bool = True) -> "Analysis":
    """Analyze a run as ``sae-report analyze`` does, writing nothing: findings with their claims,
    phases, targets, the verdict, the recommendations, and (``siblings``) the comparison with the
    runs beside it. ``path`` is a path (read with ``load_run``) or a ``RunData`` already read.
    ``target_l0`` and ``overrides`` (``d_sae``, ``l1_alpha``, ...) stand in for the flags."""
    from .pipeline import analyze_data, analyze_path

    flags = {**(overrides or {}), **({"target_l0": target_l0} if target_l0 is not None else {})}
    if not isinstance(path, (str, Path)):
        return analyze_data(path, overrides=flags, siblings=siblings).analysis
    return analyze_path(path, formats=(), source=source, run=run, overrides=flags, siblings=siblings).analysis


def write_report(path: str | Path, out_dir: str | Path | None = None, *,
                 formats: Sequence[str] = ("md", "html", "json"), target_l0: float | None = None,
                 source: str = "auto", run: str | None = None, overrides: Mapping[str, Any] | None = None,
                 siblings: bool = True) -> "PipelineResult":
    """Analyze a run and write its report (``RUN/report/`` by default; ``report/<run id>/`` beside
    another tool's log), all files or none, as ``sae-report analyze`` does. Returns the analysis,
    the run, the folder and the files written. Raises ``RunLogError`` for unusable input and
    ``sae_report.pipeline.OutputError`` when the report cannot be written."""
    from .pipeline import analyze_path

    flags = {**(overrides or {}), **({"target_l0": target_l0} if target_l0 is not None else {})}
    return analyze_path(path, out_dir=out_dir, formats=formats, source=source, run=run, overrides=flags,
                        siblings=siblings, command=f"sae-report analyze {path}")


__all__ = ["__version__", "analyze", "load_run", "write_report"]
