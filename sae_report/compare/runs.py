"""One row of the comparison: what a run was set to and what it achieved, read from its log.

Reads only ``RunData`` (config, metrics, summary, events); no analyzer needed, so ``compare``
is fast and works on any log the ingest layer reads.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ..analysis.detectors.divergence import cutoff
from ..recommend.settled import Settled, settled_level
from ..runlog import RunData, is_run_dir
from ..runlog import finite_float as _float


@dataclass
class RunRow:
    """One run in a comparison."""

    id: str
    """Run id."""
    path: str
    """Where it was read from."""
    config: dict[str, Any]
    """Canonical config (``l1_alpha``, ``resample_interval``, ``d_sae``, ...)."""
    l1_alpha: float | None = None
    """The run's sparsity coefficient (from the config, else the logged coefficient): l1_alpha, or a
    JumpReLU SAE's l0_coefficient (``coefficient`` says which); None for TopK / BatchTopK."""
    architecture: str = "unknown"
    """The SAE's architecture (``sae_report.analysis.architecture``)."""
    coefficient: str | None = "l1_alpha"
    """The config key ``l1_alpha`` holds the value of: ``l1_alpha``, ``l0_coefficient``, or None
    (L0 set by k)."""
    k: float | None = None
    """TopK / BatchTopK: k (active latents per token), from the config."""
    ce_loss_score: float | None = None
    """Second-half median of the model's spliced-in loss score (``ce_loss_score``) over the judged
    span, when logged (None otherwise)."""
    resample_interval: int | None = None
    """Steps between resamples (None: not set / no resampling)."""
    d_in: int | None = None
    """Input width."""
    d_sae: int | None = None
    """Dictionary size."""
    final_l0: float | None = None
    """Last logged L0 (fraction)."""
    settled_l0: float | None = None
    """Second-half median L0 (fraction): the achieved level the fit uses."""
    second_half_mean_l0: float | None = None
    """Second-half mean L0 (fraction)."""
    second_half_std_l0: float | None = None
    """Second-half standard deviation of L0."""
    l0_noise: float = 0.0
    """Standard error of log(settled L0)."""
    pct_of_target: float | None = None
    """Settled L0 / target x 100."""
    final_pct_of_target: float | None = None
    """Final L0 / target x 100."""
    dead_frac: float | None = None
    """Final dead fraction."""
    final_loss: float | None = None
    """Last finite loss."""
    duration_s: float | None = None
    """Wall-clock duration."""
    steps: int | None = None
    """Last logged step."""
    status: str = "unknown"
    """completed / interrupted / diverged / unknown (from summary.json and the log)."""
    unstable: bool = False
    """Second half too unstable for its L0 to be trusted."""
    drifting: bool = False
    """L0 still trends through the second half (part of ``unstable``): a longer run would settle
    elsewhere, so the run is not settled."""
    second_half_trend: list[float] | None = None
    """Medians of the first and last fifth of the second half (L0 fractions), when measurable."""
    excluded: str | None = None
    """Why the run is left out of the fit (None: used)."""
    warnings: list[str] = field(default_factory=list)
    """Run-level caveats."""
    order: float = 0.0
    """Sort key for "latest" (summary end time or file modification time)."""


def expand_paths(args: list[str] | tuple[str, ...]) -> list[Path]:
    """Runs named by paths, globs, or directories of runs, in a stable order without duplicates."""
    out: list[Path] = []
    for arg in args:
        p = Path(arg)
        if not p.exists() and any(ch in arg for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(arg))
        else:
            matches = [p]
        for m in matches:
            if m.is_dir() and not is_run_dir(m) and _children_runs(m):
                out.extend(_children_runs(m))
            else:
                out.append(m)
    seen: set[str] = set()
    unique = []
    for p in out:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _children_runs(folder: Path) -> list[Path]:
    try:
        return sorted(c for c in folder.iterdir() if c.is_dir() and is_run_dir(c))
    except OSError:
        return []


def _col(frame: pl.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    if name not in frame.columns:
        return None
    sub = frame.select("step", name).drop_nulls()
    if sub.height == 0:
        return None
    return sub["step"].to_numpy().astype(float), sub[name].to_numpy().astype(float)


def _last_finite(series: tuple[np.ndarray, np.ndarray] | None) -> float | None:
    if series is None:
        return None
    vals = series[1][np.isfinite(series[1])]
    return float(vals[-1]) if len(vals) else None


def _int(value: Any) -> int | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f.is_integer() else None




def canonical(config: dict[str, Any]) -> dict[str, Any]:
    """Canonical config keys (through the run format's aliases, `runlog.aliases`)."""
    try:
        from ..runlog.aliases import canonical_config
    except ImportError:  # pragma: no cover - the aliases module ships with the package
        return dict(config)
    return canonical_config(config)


def l0_fraction(data: RunData, d_sae: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """L0 as a fraction of the dictionary: ``l0_frac``, else ``l0`` / d_sae."""
    frac = _col(data.metrics, "l0_frac")
    if frac is not None:
        return frac
    count = _col(data.metrics, "l0")
    if count is not None and d_sae:
        return count[0], count[1] / d_sae
    return None


def run_row(data: RunData, target_l0: float | None) -> RunRow:
    """Build the comparison row of one run (never raises for a readable run)."""
    cfg = canonical(dict(data.config))
    row = RunRow(id=data.run_id, path=str(data.path), config=cfg)
    row.d_in, row.d_sae = _int(cfg.get("d_in")), _int(cfg.get("d_sae"))
    row.resample_interval = _int(cfg.get("resample_interval"))
    from ..analysis.architecture import architecture

    arch = architecture(cfg)
    row.architecture, row.coefficient = arch.name, arch.coefficient
    coef = arch.coefficient
    row.l1_alpha = _float(cfg.get(coef)) if coef else None
    if row.l1_alpha is None and coef:
        logged = _col(data.metrics, coef)
        if logged is not None:
            half = logged[1][logged[0] >= logged[0][0] + (logged[0][-1] - logged[0][0]) / 2]
            half = half[np.isfinite(half)]
            if len(half):
                row.l1_alpha = float(np.median(half))
                row.warnings.append(f"{coef} taken from the logged coefficient (not in the config)")
    if arch.fixed_l0:
        k = row.k = _float(cfg.get("k"))
        row.excluded = (f"L0 is set by k in a {arch.label} SAE" + (f" (k {k:g})" if k is not None else "")
                        + ": no sparsity coefficient to fit")
    steps = data.metrics["step"]
    row.steps = int(steps.max()) if data.metrics.height else None
    loss = _col(data.metrics, "loss")
    row.final_loss = _last_finite(loss)
    dead = _col(data.metrics, "dead_frac")
    row.dead_frac = _last_finite(dead)
    if row.dead_frac is None and row.d_sae:
        dead_n = _last_finite(_col(data.metrics, "dead"))
        row.dead_frac = dead_n / row.d_sae if dead_n is not None else None
    summary = data.summary or {}
    row.duration_s = _float(summary.get("elapsed_s") or summary.get("duration_s"))
    if row.duration_s is None:
        row.duration_s = _last_finite(_col(data.metrics, "elapsed_s"))
    row.status = str(summary.get("status") or "unknown")
    row.order = _started(cfg) or _mtime(Path(data.path) / "summary.json") or _mtime(data.path)
    l0 = l0_fraction(data, row.d_sae)
    cut = cutoff(*loss) if loss is not None else None
    if l0 is not None and cut is not None:  # nothing logged once the loss is NaN/inf for good is usable
        keep = l0[0] < cut
        l0 = (l0[0][keep], l0[1][keep])
    # the analyzer's judged span: the log's first step to its last before the cut
    all_steps = steps.to_numpy()
    judged = all_steps[all_steps < cut] if cut is not None else all_steps
    span = (float(judged.min()), float(judged.max())) if len(judged) else None
    settled: Settled | None = settled_level(*l0, span=span) if l0 is not None else None
    score = _col(data.metrics, "ce_loss_score")
    if score is not None and span is not None:
        half = span[0] + max(1.0, span[1] - span[0]) / 2
        keep = (score[0] >= half) & (score[0] <= span[1]) & np.isfinite(score[1])
        row.ce_loss_score = float(np.median(score[1][keep])) if keep.any() else None
    _diverged(row, data, loss)
    if settled is not None:
        row.final_l0 = settled.final
        row.settled_l0 = settled.median
        row.second_half_mean_l0 = settled.mean
        row.second_half_std_l0 = settled.std
        row.l0_noise = settled.noise
        row.unstable = settled.unstable
        row.drifting = settled.drifting
        if settled.first_block is not None and settled.last_block is not None:
            row.second_half_trend = [settled.first_block, settled.last_block]
        if settled.unstable:
            row.warnings.append(f"L0 not settled: {settled.reason}")
        if settled.median > 0 and abs(settled.final / settled.median - 1) > 0.25:
            row.warnings.append(
                f"final L0 {100 * settled.final:.3g}% differs from the settled {100 * settled.median:.3g}% "
                "(second-half median): the last point is not what the run achieved")
        if target_l0:
            row.pct_of_target = 100 * settled.median / target_l0
            row.final_pct_of_target = 100 * settled.final / target_l0
    if row.excluded is None:
        row.excluded = _exclusion(row, data, l0, settled)
    return row


def _started(cfg: dict[str, Any]) -> float:
    """The run's start time from its config (``start_time``, ISO 8601), 0 when absent."""
    from datetime import datetime

    value = cfg.get("start_time") or cfg.get("created_at") or cfg.get("started_at")
    try:
        return datetime.fromisoformat(str(value)).timestamp() if value else 0.0
    except ValueError:
        return 0.0


def _mtime(path: Path) -> float:
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


def _diverged(row: RunRow, data: RunData, loss: tuple[np.ndarray, np.ndarray] | None) -> None:
    reason = None
    if row.status == "diverged":
        reason = "diverged (summary.json status)"
    elif loss is not None:
        bad = ~np.isfinite(loss[1])
        if bad.any():
            reason = f"diverged (non-finite loss from step {int(loss[0][np.argmax(bad)]):,})"
    if reason is None and any(e.kind == "nonfinite" for e in data.events):
        reason = "diverged (non-finite values logged)"
    if reason:
        row.status = "diverged"
        row.excluded = reason


def _exclusion(row: RunRow, data: RunData, l0, settled: Settled | None) -> str | None:
    coef = row.coefficient or "l1_alpha"
    if not data.config and row.l1_alpha is None:
        return f"missing config: {coef} unknown"
    if row.l1_alpha is None:
        return f"{coef} not in the config or the log"
    if row.l1_alpha <= 0:
        return f"{coef} {row.l1_alpha:g} is not positive"
    if l0 is None:
        return "no L0 metric (l0_frac, or l0 with a known d_sae)"
    if settled is None:
        return "too few L0 points in the second half for a settled level"
    if settled.median <= 0:
        return "settled L0 is 0 (no feature fires): no point on a log scale"
    return None
