"""Summary figures: final / second-half / best per metric, the step table at every 10% of the run
(annotated as the write-up does), the targets table, and input outlier dimensions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from ..runlog import RunData
from .config import AnalyzerConfig
from .detectors import Context
from .result import Finding, FindingKind, MetricSummary, StepRow, Target

#: Metrics summarised, in report order.
SUMMARY_METRICS = ("l0_frac", "l0", "dead_frac", "dead", "loss", "mse", "l1", "explained_variance", "grad_norm",
                   "l1_alpha", "lr")
#: Metrics shown in the step table.
TABLE_METRICS = ("l0_frac", "l0", "dead", "dead_frac", "loss", "explained_variance")


def _best_index(metric: str, vals: np.ndarray, target: float | None) -> int | None:
    if not len(vals):
        return None
    if metric in ("loss", "mse", "l1", "dead", "dead_frac", "grad_norm"):
        return int(np.argmin(vals))
    if metric == "explained_variance":
        return int(np.argmax(vals))
    if metric in ("l0_frac", "l0") and target:
        return int(np.argmin(np.abs(np.log(np.maximum(vals, 1e-12)) - math.log(target))))
    return None


def metric_summaries(ctx: Context, frame: pl.DataFrame) -> dict[str, MetricSummary]:
    """Final, second-half mean/std/median and best (with its step) of every metric present."""
    out: dict[str, MetricSummary] = {}
    half = ctx.t0 + ctx.span / 2
    for m in SUMMARY_METRICS:
        s = ctx.series.get(m)
        if s is None:
            continue
        vals, steps = s.value, s.step
        second = vals[int(np.searchsorted(steps, np.int64(math.ceil(half)))):]
        target = ctx.target_for(s) if m in ("l0", "l0_frac") else None
        b = _best_index(m, vals, target)
        out[m] = MetricSummary(
            metric=m,
            final=float(vals[-1]) if len(vals) else None,
            second_half_mean=float(np.mean(second)) if len(second) else None,
            second_half_std=float(np.std(second)) if len(second) > 1 else None,
            second_half_median=_median(second),
            best=float(vals[b]) if b is not None else None,
            best_step=int(steps[b]) if b is not None else None,
        )
    return out


def _median(a: np.ndarray) -> float | None:
    """Exact median up to 2M points; beyond, the median of an evenly strided 1M-point sample."""
    if not len(a):
        return None
    if len(a) > 2_000_000:
        a = a[:: len(a) // 1_000_000]
    return float(np.median(a))


def _nearest(s_step: np.ndarray, s_val: np.ndarray, step: float, tol: float) -> float | None:
    if not len(s_step):
        return None
    step = int(round(step))
    i = int(np.searchsorted(s_step, np.int64(step)))
    cands = [c for c in (i - 1, i) if 0 <= c < len(s_step)]
    c = min(cands, key=lambda c: abs(s_step[c] - step))
    return float(s_val[c]) if abs(s_step[c] - step) <= tol else None


def step_table(ctx: Context, findings: list[Finding], summary: dict[str, MetricSummary]) -> list[StepRow]:
    """The metrics at every 10% of the run, annotated ("<- Rapid decay", "<- Complete collapse",
    "<- Best performance!")."""
    tol = 0.02 * ctx.span
    rows: list[tuple[int, dict[str, float | None]]] = []
    for k in range(11):
        step = ctx.t0 + k * ctx.span / 10
        vals: dict[str, float | None] = {}
        snapped = None
        for m in TABLE_METRICS:
            s = ctx.series.get(m)
            if s is None:
                continue
            v = _nearest(s.step, s.value, step, tol)
            if v is None and len(s.nonfinite_step):
                j = int(np.searchsorted(s.nonfinite_step, np.int64(round(step))))
                if j < len(s.nonfinite_step) and abs(s.nonfinite_step[j] - step) <= tol:
                    v = float("nan")
            vals[m] = v
            if snapped is None and len(s.step):
                i = int(np.clip(np.searchsorted(s.step, np.int64(round(step))), 0, len(s.step) - 1))
                snapped = int(s.step[i]) if abs(s.step[i] - step) <= tol else None
        rows.append((snapped if snapped is not None else int(round(step)), vals))
    notes = _annotations(ctx, rows, findings, summary)
    return [StepRow(step=st, values=v, annotation=notes[i]) for i, (st, v) in enumerate(rows)]


def _annotations(ctx: Context, rows: list[tuple[int, dict[str, float | None]]], findings: list[Finding],
                 summary: dict[str, MetricSummary]) -> list[str]:
    notes = [""] * len(rows)
    s = ctx.l0
    key = s.metric if s is not None else None
    vals = [r[1].get(key) if key else None for r in rows]
    by_kind = {f.kind: f for f in findings if key and f.metric == key}
    prio = [0] * len(rows)

    def put(i: int, text: str, p: int) -> None:
        if 0 <= i < len(rows) and p > prio[i]:
            notes[i], prio[i] = text, p

    put(0, "<- Initial state", 1)
    put(len(rows) - 1, "<- Final", 1)
    for i in range(1, len(rows)):
        a, b = vals[i - 1], vals[i]
        if a and b and a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b):
            if b < a / 3:
                put(i, "<- Rapid decay", 3)
            elif b > a * 1.5 and FindingKind.RECOVERY in by_kind and by_kind[FindingKind.RECOVERY].step <= rows[i][0]:
                put(i, "<- Recovering", 2)
    def nearest_row(step: int) -> int:
        return int(np.argmin([abs(r[0] - step) for r in rows]))
    if FindingKind.COLLAPSE in by_kind:
        put(nearest_row(by_kind[FindingKind.COLLAPSE].end_step or by_kind[FindingKind.COLLAPSE].step),
            "<- Complete collapse", 5)
    if FindingKind.LATE_SPIKE in by_kind:
        put(nearest_row(int(by_kind[FindingKind.LATE_SPIKE].evidence.get("peak_step", by_kind[FindingKind.LATE_SPIKE].step))),
            "<- Late spike", 4)
    target = ctx.target_for(s) if s is not None else None
    finite = [(i, v) for i, v in enumerate(vals) if v is not None and v > 0 and math.isfinite(v)]
    if target and finite:
        i, _ = min(finite, key=lambda iv: abs(math.log(iv[1] / target)))
        put(i, "<- Best performance!", 6)
    if ctx.loss is not None and len(ctx.loss.nonfinite_step):
        for i, r in enumerate(rows):
            v = r[1].get(ctx.loss.metric)
            if v is not None and not math.isfinite(v):
                put(i, "<- Diverged (non-finite loss)", 7)
                break
    return notes


def _status(ratio: float, cfg: AnalyzerConfig) -> str:
    lo, hi = cfg.target_ok_band
    wlo, whi = cfg.target_warn_band
    if lo <= ratio <= hi:
        return "ok"
    return "warn" if wlo <= ratio <= whi else "fail"


def targets_table(ctx: Context, data: RunData, summary: dict[str, MetricSummary], findings: list[Finding]) -> list[Target]:
    """The write-up's results table: Final L0, Second Half Avg L0, Dead features, Final Loss, Duration."""
    cfg = ctx.cfg
    out: list[Target] = []
    s = ctx.l0
    if s is not None and s.metric in summary:
        ms = summary[s.metric]
        target = ctx.target_for(s)
        shown = f"{ctx.target_l0 * 100:.1f}%" if ctx.target_l0 is not None else ""
        for label, val in (("Final L0", ms.final), ("Second Half Avg L0", ms.second_half_mean)):
            if target and val is not None:
                ratio = val / target
                out.append(Target(label, val, target, ratio * 100, _status(ratio, cfg), shown))  # type: ignore[arg-type]
            else:
                out.append(Target(label, val, None, None, "ok", "no target (--target-l0)"))
    d = summary.get("dead_frac")
    if d is not None and d.final is not None:
        st = "ok" if d.final < cfg.dead_target else "warn" if d.final < cfg.dead_target + cfg.dead_warn_margin else "fail"
        out.append(Target("Dead features", d.final, cfg.dead_target, d.final / cfg.dead_target * 100, st,  # type: ignore[arg-type]
                          f"<{cfg.dead_target * 100:.0f}%"))
    loss = ctx.loss
    if loss is not None and loss.metric in summary:
        final = summary[loss.metric].final
        diverged = any(f.kind == FindingKind.DIVERGED and f.severity == "fail" for f in findings)
        tl = ctx.config.get("target_loss")
        tl = float(tl) if isinstance(tl, (int, float)) and not isinstance(tl, bool) and tl > 0 else None
        if diverged:
            out.append(Target("Final Loss", final, tl, final / tl * 100 if tl and final is not None else None, "fail",
                              "finite" if tl is None else f"<{tl:g}"))
        elif tl is not None and final is not None:
            out.append(Target("Final Loss", final, tl, final / tl * 100, "ok" if final < tl else "fail", f"<{tl:g}"))
        else:
            out.append(Target("Final Loss", final, None, None, "ok", ""))
    minutes = _duration_minutes(data, ctx)
    if minutes is not None:
        out.append(Target("Duration (min)", minutes, None, None, "ok", ""))
    return out


def _duration_minutes(data: RunData, ctx: Context) -> float | None:
    for key in ("elapsed_s", "duration_s"):
        v = data.summary.get(key) if isinstance(data.summary, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v) / 60
    e = ctx.series.get("elapsed_s")
    if e is not None and len(e.value):
        return float(e.value[-1]) / 60
    return None


def input_outliers(data: RunData, cfg: AnalyzerConfig, limit: int = 20) -> list[dict[str, Any]]:
    """Input dimensions whose max |activation| is ``outlier_ratio`` x the median dimension's or more."""
    absmax = None
    dims = None
    if data.input_dims is not None and "absmax" in data.input_dims.columns:
        try:
            absmax = data.input_dims.get_column("absmax").cast(pl.Float64, strict=False).to_numpy()
            dims = (data.input_dims.get_column("dim").cast(pl.Int64, strict=False).to_numpy()
                    if "dim" in data.input_dims.columns else np.arange(len(absmax)))
        except Exception:
            absmax = None
    elif data.input_sample is not None and getattr(data.input_sample, "ndim", 0) == 2:
        absmax = np.nanmax(np.abs(np.asarray(data.input_sample, dtype=np.float64)), axis=0)
        dims = np.arange(len(absmax))
    if absmax is None or not len(absmax):
        return []
    ok = np.isfinite(absmax)
    med = float(np.median(absmax[ok])) if ok.any() else 0.0
    if med <= 0:
        return []
    ratio = absmax / med
    idx = np.flatnonzero(ok & (ratio >= cfg.outlier_ratio))
    idx = idx[np.argsort(-ratio[idx])][:limit]
    return [{"dim": int(dims[i]), "absmax": float(absmax[i]), "ratio": float(ratio[i])} for i in idx]
