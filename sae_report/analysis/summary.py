"""Summary figures (final, second half, best per metric), the step table at every tenth of the run,
the targets table, and input outlier dimensions. Every figure is a claim on the raw log: the final
value is the last value logged (NaN included), a step-table row is a logged step and shows the
values logged at exactly that step."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from ..runlog import RunData
from .claims import Claim, ClaimMaker, config_claim
from .config import AnalyzerConfig
from .detectors import Context
from .result import Finding, FindingKind, MetricSummary, StepRow, Target

#: Metrics summarised, in report order.
SUMMARY_METRICS = ("l0_frac", "l0", "dead_frac", "dead", "loss", "mse", "l1", "explained_variance", "ce_loss_score",
                   "l2_ratio", "dense_features", "density_below_1e-5", "density_below_1e-6", "mean_log10_density",
                   "grad_norm", "l1_alpha", "lr")
#: Metrics whose second half (and for some the best value) are summarised (the others: their final value).
SETTLED_METRICS = ("l0_frac", "l0", "dead_frac", "dead", "loss", "mse", "explained_variance", "ce_loss_score",
                   "l2_ratio")
#: Metrics shown in the step table.
TABLE_METRICS = ("l0_frac", "l0", "dead", "dead_frac", "loss", "mse", "explained_variance")
#: Lower is better for these; higher for explained variance.
_LOWER_BETTER = ("loss", "mse", "l1", "dead", "dead_frac", "grad_norm")


def metric_summaries(ctx: Context) -> dict[str, MetricSummary]:
    """Final (the last logged value) of every metric; for the metrics the reports judge (L0, dead
    features, loss, MSE, explained variance) also the second-half mean/std/median over the second
    half of the judged span, and the best value (lowest loss, fewest dead, highest explained
    variance)."""
    out: dict[str, MetricSummary] = {}
    for m in SUMMARY_METRICS:
        c = ctx.columns.get(m)
        if c is None or not len(c.step):
            continue
        claims = {"final": c.last()}
        if m not in SETTLED_METRICS:
            out[m] = MetricSummary(metric=m, final=claims["final"].value, second_half_mean=None, second_half_std=None,
                                   second_half_median=None, best=None, best_step=None, claims=claims)
            continue
        for stat in ("mean", "std", "median"):
            claims[f"second_half_{stat}"] = c.stat(stat, ctx.half, ctx.t1)
        if m in _LOWER_BETTER or m == "explained_variance":
            claims["best"] = c.stat("min" if m in _LOWER_BETTER else "max", ctx.t0, ctx.t1)
        best = claims.get("best")
        out[m] = MetricSummary(
            metric=m, final=claims["final"].value, second_half_mean=claims["second_half_mean"].value,
            second_half_std=claims["second_half_std"].value, second_half_median=claims["second_half_median"].value,
            best=best.value if best else None, best_step=best.step if best else None, claims=claims)
    return out


def _primary(ctx: Context) -> ClaimMaker | None:
    for m in TABLE_METRICS:
        c = ctx.columns.get(m)
        if c is not None and len(c.step):
            return c
    return None


def step_table(ctx: Context, findings: list[Finding]) -> list[StepRow]:
    """The logged step nearest to every tenth of the whole log, with the values logged at exactly
    that step, tagged from the findings."""
    prim = _primary(ctx)
    if prim is None:
        return []
    first, last = int(prim.step[0]), int(prim.step[-1])
    steps: list[int] = []
    for k in range(11):
        st = prim.nearest_step(first + k * (last - first) / 10)
        if st is not None and st not in steps:
            steps.append(st)
    rows = []
    for st in steps:
        vals = {m: ctx.columns[m].at(st).value for m in TABLE_METRICS if m in ctx.columns}
        rows.append((st, vals))
    tags = _tags(ctx, rows, findings)
    return [StepRow(step=st, values=v, annotation=_annotation(t), tags=t) for (st, v), t in zip(rows, tags)]


TAG_TEXT = {"diverged": "Diverged (non-finite loss)", "collapse": "Collapse", "ended_collapsed": "Collapsed",
            "late_spike": "Late spike (transient)", "closest_to_target": "Closest to target",
            "recovering": "Recovering", "rapid_decay": "Rapid decay", "initial": "Initial state", "final": "Final"}
TAG_ORDER = tuple(TAG_TEXT)


def _annotation(tags: list[str]) -> str:
    if not tags:
        return ""
    words = [TAG_TEXT[t] for t in sorted(tags, key=TAG_ORDER.index)]
    text = ", ".join([words[0]] + [w[0].lower() + w[1:] for w in words[1:]])
    return "<- " + text


def _tags(ctx: Context, rows: list[tuple[int, dict[str, float | None]]], findings: list[Finding]) -> list[list[str]]:
    tags: list[list[str]] = [[] for _ in rows]
    if not rows:
        return tags
    tags[0].append("initial")
    tags[-1].append("final")
    s = ctx.l0
    key = s.metric if s is not None else None
    vals = [r[1].get(key) if key else None for r in rows]
    ok = [v is not None and math.isfinite(v) and v > 0 for v in vals]
    steps = [r[0] for r in rows]
    mine = [f for f in findings if f.metric in (key, "l0", "l0_frac")]

    def within(f: Finding, st: int, pad: float = 0.0) -> bool:
        return f.step - pad <= st <= (f.end_step if f.end_step is not None else f.step) + pad

    collapses = [f for f in mine if f.kind == FindingKind.COLLAPSE]
    for f in collapses:
        if f.evidence.mode == "ended_collapsed":
            i = next((i for i, st in enumerate(steps) if st >= f.step), None)
            if i is not None:
                tags[i].append("ended_collapsed")
            continue
        settled = f.evidence.settled
        cand = [i for i, st in enumerate(steps) if ok[i] and within(f, st, 0.1 * ctx.span)
                and settled is not None and vals[i] <= settled / 1.5]  # type: ignore[operator]
        if cand:
            tags[min(cand, key=lambda i: vals[i])].append("collapse")  # type: ignore[arg-type, return-value]
    in_collapse = {i for i, t in enumerate(tags) if "collapse" in t}
    for i in range(1, len(rows)):
        if ok[i] and ok[i - 1] and i not in in_collapse and vals[i] < vals[i - 1] / 3:  # type: ignore[operator]
            tags[i].append("rapid_decay")
    for f in mine:
        if f.kind == FindingKind.RECOVERY:
            for i in range(1, len(rows)):
                if within(f, steps[i]) and ok[i] and ok[i - 1] and vals[i] > 1.2 * vals[i - 1]:  # type: ignore[operator]
                    tags[i].append("recovering")
    spikes = [f for f in mine if f.kind == FindingKind.LATE_SPIKE]
    for f in spikes:
        for i, st in enumerate(steps):
            if within(f, st):
                tags[i].append("late_spike")
    target = ctx.target_for(s) if s is not None else None
    calm = [i for i in range(len(rows)) if ok[i] and "late_spike" not in tags[i] and "collapse" not in tags[i]
            and steps[i] >= ctx.half]
    if target and calm:
        tags[min(calm, key=lambda i: abs(math.log(vals[i] / target)))].append("closest_to_target")  # type: ignore[operator]
    loss = ctx.columns.get("loss") or ctx.columns.get("mse")
    if loss is not None:
        for i, st in enumerate(steps):
            v = loss.at(st).value
            if v is not None and not math.isfinite(v):
                tags[i].append("diverged")
                break
    return tags


def _status(ratio: float, cfg: AnalyzerConfig) -> str:
    lo, hi = cfg.target_ok_band
    wlo, whi = cfg.target_warn_band
    if lo <= ratio <= hi:
        return "ok"
    return "warn" if wlo <= ratio <= whi else "fail"


def _shown_ratio(result: float, target: float) -> float:
    """result / target as the table shows it (a whole percent), so two rows showing the same
    percentage always get the same status."""
    r = result / target * 100
    return round(r) / 100 if math.isfinite(r) else r / 100


def targets_table(ctx: Context, data: RunData, summary: dict[str, MetricSummary], findings: list[Finding]) -> list[Target]:
    """The results table: Final L0, Second Half Avg L0, Settled L0 (the second-half median: the basis
    the reports show "% of target" on), Dead features, Explained variance, MSE, Final Loss, Duration.
    A row without a target has status ``none``; an SAE that ended collapsed fails its L0 and
    explained-variance rows whatever its target."""
    cfg = ctx.cfg
    out: list[Target] = []
    s = ctx.l0
    broken = any(f.kind == FindingKind.COLLAPSE and f.evidence.mode == "ended_collapsed" for f in findings)
    if s is not None and s.metric in summary:
        ms = summary[s.metric]
        target = ctx.target_for(s)
        shown = f"{ctx.target_l0 * 100:.1f}%" if ctx.target_l0 is not None else ""
        for label, name in (("Final L0", "final"), ("Second Half Avg L0", "second_half_mean"),
                            ("Settled L0", "second_half_median")):
            claim = ms.claims[name]
            val = claim.value
            if target and val is not None and math.isfinite(val):
                r = _shown_ratio(val, target)
                status = "fail" if broken else _status(r, cfg)
                out.append(Target(label, val, target, r * 100, status, shown, claim))  # type: ignore[arg-type]
            elif broken:
                out.append(Target(label, val, None, None, "fail", "at least one feature per token", claim))
            elif ctx.architecture.fixed_l0:
                out.append(Target(label, val, None, None, "none", "set by k (no target)", claim))
            else:
                out.append(Target(label, val, None, None, "none", "no target (--target-l0)", claim))
    d = summary.get("dead_frac")
    if d is not None and d.final is not None and math.isfinite(d.final):
        r = round(d.final * 100) / 100 if abs(d.final) < 1e6 else d.final  # (a corrupt 1e308 is no percentage)
        st = "ok" if r < cfg.dead_target else "warn" if r < cfg.dead_target + cfg.dead_warn_margin else "fail"
        out.append(Target("Dead features", d.final, cfg.dead_target, d.final / cfg.dead_target * 100, st,  # type: ignore[arg-type]
                          f"<{cfg.dead_target * 100:.0f}%", d.claims["final"]))
    e = summary.get("explained_variance")
    if e is not None:
        low = broken and e.final is not None and e.final < cfg.broken_ev
        out.append(Target("Explained variance", e.final, cfg.broken_ev if low else None, None, "fail" if low else "none",
                          f">{cfg.broken_ev * 100:.0f}%" if low else "", e.claims["final"]))
    m = summary.get("mse")
    if m is not None:
        out.append(Target("MSE", m.final, None, None, "none", "", m.claims["final"]))
    loss = ctx.loss or ctx.cache.get("loss_full")
    if loss is not None and loss.metric in summary:
        final = summary[loss.metric].final
        claim = summary[loss.metric].claims["final"]
        diverged = any(f.kind == FindingKind.DIVERGED and f.severity == "fail" for f in findings)
        tl = ctx.config.get("target_loss")
        tl = float(tl) if isinstance(tl, (int, float)) and not isinstance(tl, bool) and tl > 0 else None
        fin = final is not None and math.isfinite(final)
        if diverged or not fin:
            out.append(Target("Final Loss", final, tl, final / tl * 100 if tl and fin else None, "fail",  # type: ignore[operator]
                              "finite" if tl is None else f"<{tl:g}", claim))
        elif tl is not None:
            out.append(Target("Final Loss", final, tl, final / tl * 100, "ok" if final < tl else "fail", f"<{tl:g}", claim))  # type: ignore[operator]
        else:
            out.append(Target("Final Loss", final, None, None, "none", "", claim))
    seconds, claim = _duration(data, ctx)
    if seconds is not None:
        out.append(Target("Duration (s)", seconds, None, None, "none", "", claim))
    return out


def _duration(data: RunData, ctx: Context) -> tuple[float | None, Claim | None]:
    e = ctx.columns.get("elapsed_s")
    if e is not None and len(e.step):
        c = e.last()
        if c.value is not None and math.isfinite(c.value) and c.value > 0:
            return c.value, c
    for key in ("elapsed_s", "duration_s"):
        v = data.summary.get(key) if isinstance(data.summary, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v), None
    return None, None


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


def architecture_summary(ctx: Context) -> dict[str, Any]:
    """The architecture (``Analysis.architecture``) and, for TopK / BatchTopK, the claims the advice
    on k and AuxK rests on: ``k`` (config), ``dead_early`` / ``dead_late`` (medians of the dead
    fraction over the first and the last fifth of the second half), ``ev`` (second-half median of
    explained variance), ``aux_loss`` (second-half median of the AuxK term) and
    ``aux_loss_coefficient`` (config), each when the log and config have it."""
    arch = ctx.architecture
    claims: dict[str, Claim] = {}
    if arch.fixed_l0:
        for key, unit in (("k", "count"), ("aux_loss_coefficient", "sig")):
            c = config_claim(key, ctx.config, unit=unit)  # type: ignore[arg-type]
            if c.value is not None:
                claims[key] = c
        a, b = ctx.half, float(ctx.t1)
        fifth = (b - a) / 5
        dead = ctx.columns.get("dead_frac")
        if dead is not None and len(dead.step):
            claims["dead_early"] = dead.stat("median", a, a + fifth)
            claims["dead_late"] = dead.stat("median", b - fifth, b)
        for name, metric in (("ev", "explained_variance"), ("aux_loss", "aux_loss")):
            col = ctx.columns.get(metric)
            if col is not None and len(col.step):
                claims[name] = col.stat("median", a, b)
        claims = {k: v for k, v in claims.items() if v.value is not None}
    return {"name": arch.name, "label": arch.label, "coefficient": arch.coefficient, "fixed_l0": arch.fixed_l0,
            "claims": claims}
