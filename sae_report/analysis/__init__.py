"""Finding what happened in a run: ``analyze(RunData) -> Analysis``.

Flow: canonical config (+ flag overrides) -> per-metric ``Series`` (binned, log scale for L0 and
loss) -> one pure detector per ``FindingKind`` -> phases, summary figures, step table, targets,
resampling records, input outliers. Missing metrics give ``Skipped`` entries, never errors.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import polars as pl

from ..runlog.aliases import canonical_config, fill_pairs, infer_d_sae
from ..runlog import METRIC_COLUMNS, RunData
from .architecture import architecture
from .claims import ClaimMaker
from .config import AnalyzerConfig
from .detectors import Context, run_detectors
from .detectors.divergence import cutoff
from .detectors.resampling import measure_resamples, summary_sentences
from .interventions import all_interventions
from .phases import cut_phases
from .result import Analysis, RunInfo, Skipped
from .rootcause import root_causes
from .metric_series import bin_all, logged, prepare
from .summary import architecture_summary, input_outliers, metric_summaries, step_table, targets_table
from .verdict import verdict

__all__ = ["AnalyzerConfig", "analyze", "OVERRIDE_KEYS"]

#: Metrics the detectors judge (others are only summarised).
SHAPE_METRICS = ("l0_frac", "l0", "dead_frac", "dead", "loss", "mse", "explained_variance")

#: Config keys a caller (the CLI flags) may fill or override.
OVERRIDE_KEYS = ("target_l0", "d_sae", "l1_alpha", "learning_rate", "resample_interval", "total_steps",
                 "target_loss", "dead_window")


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None


def analyze(data: RunData, *, config: AnalyzerConfig | None = None,
            overrides: Mapping[str, Any] | None = None) -> Analysis:
    """Find what happened in ``data``. ``overrides`` are flag values (``target_l0``, ``d_sae``,
    ``l1_alpha``, ...) that fill or replace config keys; None values are ignored."""
    with np.errstate(all="ignore"):  # huge or non-finite values are data here, not warnings
        return _analyze(data, config, overrides)


def _analyze(data: RunData, config: AnalyzerConfig | None, overrides: Mapping[str, Any] | None) -> Analysis:
    cfg = config or AnalyzerConfig()
    run_cfg = canonical_config(data.config)
    for k, v in (overrides or {}).items():
        if v is not None:
            run_cfg[k] = v
    d_raw = _num(run_cfg.get("d_sae"))
    d_sae = int(d_raw) if d_raw and d_raw > 0 else None
    frame = data.metrics
    if "step" not in frame.columns:
        frame = pl.DataFrame({"step": pl.Series([], dtype=pl.Int64)})
    d_sae = infer_d_sae(frame, {"d_sae": d_sae})
    frame = fill_pairs(frame, d_sae)
    if d_sae:
        run_cfg["d_sae"] = d_sae
    skipped: list[Skipped] = []
    target = _num(run_cfg.get("target_l0"))
    if target is not None and target > 1:
        if d_sae:
            target = target / d_sae
        else:
            skipped.append(Skipped("targets", f"target_l0 {target:g} looks like a count but d_sae is unknown (--d-sae)"))
            target = None
    if target is not None and target <= 0:
        target = None
    arch = architecture(run_cfg)
    if arch.fixed_l0 and target is not None:
        # TopK / BatchTopK: k sets L0, so there is no target to meet (and none to advise toward)
        target = None
        skipped.append(Skipped("targets", f"L0 is set by k in a {arch.label} SAE: no L0 target status (its k is in "
                                          "the config; the advice is on k and AuxK, from dead latents and reconstruction)"))
    steps = frame.get_column("step").drop_nulls()
    t0, last = (int(steps.min()), int(steps.max())) if steps.len() else (0, 0)
    present = [m for m in METRIC_COLUMNS if m not in ("step",) and m in frame.columns and frame.schema[m].is_numeric()]
    columns = {m: ClaimMaker(m, *logged(frame, m)) for m in present}
    # Nothing logged once the loss has turned NaN/inf for good is usable: judge the run before it.
    loss_col = "loss" if "loss" in columns else "mse" if "mse" in columns else None
    cut = cutoff(columns[loss_col].step, columns[loss_col].value) if loss_col else None
    judged = frame
    t1 = last
    if cut is not None and steps.len():
        step_np = frame.get_column("step").to_numpy()
        n_keep = int(np.searchsorted(step_np, cut, side="left"))
        judged = frame.slice(0, n_keep)
        t1 = int(step_np[n_keep - 1]) if n_keep else t0
        skipped.append(Skipped("after_divergence", f"{frame.height - n_keep} row(s) from step {cut:,} on (the loss is NaN "
                                                   "or inf from there to the end) left out of the shape analysis"))
    shape_metrics = [m for m in present if m in SHAPE_METRICS]
    binned = bin_all(judged, shape_metrics, t0, t1, cfg.bins) if judged.height else {}
    series = {}
    for m in shape_metrics:
        s = prepare(judged, m, cfg, t0, t1, d_sae, binned.get(m))
        if s is not None:
            series[m] = s
    # Events whose step no 64-bit step column could hold are corrupt records: left out.
    events = [e for e in data.events if isinstance(e.step, int) and -(2**62) < e.step < 2**62]
    if len(events) < len(data.events):
        skipped.append(Skipped("events", f"{len(data.events) - len(events)} event(s) with an impossible step ignored"))
    dead = series.get("dead_frac")
    ivs = all_interventions(frame, events, run_cfg, dead, cfg.thrash_min_drop)
    ctx = Context(series=series, events=events, cfg=cfg, config=run_cfg, t0=t0, t1=t1, target_l0=target, d_sae=d_sae,
                  interventions=ivs, columns=columns, last_step=last, architecture=arch)
    if loss_col:
        full = series[loss_col] if cut is None and loss_col in series else prepare(frame, loss_col, cfg, t0, last, d_sae)
        if full is not None:
            ctx.cache["loss_full"] = full
    if frame.height < 10 or last <= t0:
        skipped.append(Skipped("detectors", f"only {frame.height} logged step(s): too few to judge a curve"))
        findings = []
    else:
        findings = run_detectors(ctx)
    if target is None and ctx.l0 is not None and not any(k.analysis == "targets" for k in skipped):
        skipped.append(Skipped("targets", "no target_l0 in the config: L0 is reported without a target (--target-l0)"))
    if ctx.l0 is not None and ctx.l0.metric == "l0" and not d_sae:
        skipped.append(Skipped("l0_frac", "L0 is a count and d_sae is unknown: no fraction of the dictionary (--d-sae)"))
    summary = metric_summaries(ctx)
    info = RunInfo(
        id=data.run_id, path=str(data.path), config=run_cfg, source=data.source, rows=frame.height,
        first_step=t0 if steps.len() else None, last_step=last if steps.len() else None, sampled=data.sampled,
        d_sae=d_sae, notes=list(data.notes))
    records = measure_resamples(ctx) if findings or series else []
    outliers = input_outliers(data, cfg)
    return Analysis(
        run=info,
        summary=summary,
        step_table=step_table(ctx, findings) if steps.len() else [],
        targets=targets_table(ctx, data, summary, findings),
        phases=cut_phases(ctx, findings) if findings or series else [],
        findings=findings,
        resampling=records,
        resampling_summary=summary_sentences(ctx, records, findings),
        root_causes=root_causes(ctx, findings, outliers),
        interventions=ivs,
        verdict=verdict(findings) if steps.len() else None,
        input_outliers=outliers,
        recommendations=[],
        skipped=[*ctx.skipped, *skipped],
        architecture=architecture_summary(ctx),
    )
