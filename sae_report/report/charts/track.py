"""Altair charts of a track analysis; each function takes ``TrackAnalysis`` and returns a chart (no I/O).

Field names never contain a dot (Vega-Lite reads a dot as nested access) and no NaN reaches a
spec: missing values are left out of the rows. Colours are the reports' shared ones
(``sae_report.report.charts.style``).
"""

from __future__ import annotations

import math
import re

import altair as alt
import numpy as np

from .style import BASELINE_COLOR, RUN_COLOR, SECOND_COLOR, THIRD_COLOR
from ...track.study import TrackAnalysis

WIDTH, HEIGHT = 520, 220


def _ok(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: Most checkpoint names written under a categorical axis (every k-th beyond that; tooltips name all).
MAX_LABELS = 10
_STEP = re.compile(r"(?i)^\s*(?:.*?\b(?:step|steps|checkpoint|ckpt|iter|iteration))?[\s_=:-]*(\d[\d,_]*)\s*$")


def checkpoint_steps(t: TrackAnalysis) -> dict[str, int] | None:
    """Label -> model training step when every checkpoint is named by its step (``step 1500``,
    ``LM step 1500``, ``1500``), increasing; else None (the axis is then categorical)."""
    out: dict[str, int] = {}
    for c in t.checkpoints:
        m = _STEP.match(str(c.label))
        if m is None:
            return None
        out[c.label] = int(m.group(1).replace(",", "").replace("_", ""))
    steps = list(out.values())
    if len(out) != len(t.checkpoints) or any(b <= a for a, b in zip(steps, steps[1:])):
        return None
    return out


def _x(t: TrackAnalysis) -> alt.X:
    """The checkpoint axis: model steps on a log axis (symlog when step 0 is there; checkpoints are
    usually log-spaced) with labels thinned so they never overlap; else the names, every k-th written."""
    steps = checkpoint_steps(t)
    if steps:
        scale = alt.Scale(type="symlog" if min(steps.values()) <= 0 else "log", nice=False)
        return alt.X("step:Q", title="model checkpoint (training step, log axis)", scale=scale,
                     axis=alt.Axis(labelOverlap="greedy", labelExpr="format(datum.value, '~s')", labelFlush=True,
                                   grid=True, tickCount=8))
    order = [c.label for c in t.checkpoints]
    every = max(1, math.ceil(len(order) / MAX_LABELS))
    return alt.X("checkpoint:N", sort=order, title="model checkpoint",
                 axis=alt.Axis(labelAngle=-30, labelOverlap="greedy", values=order[::every]))


def _with_step(t: TrackAnalysis, rows: list[dict]) -> list[dict]:
    """Rows with the checkpoint's model step beside its name (for the log axis)."""
    steps = checkpoint_steps(t)
    if not steps:
        return rows
    return [{**r, "step": steps.get(r["checkpoint"])} for r in rows]


def drift_chart(t: TrackAnalysis) -> alt.Chart:
    """Cosine of each feature's decoder direction to its final one: median, 25-75% and 10-90% bands,
    with the detected phase boundaries as rules."""
    labels = [c.label for c in t.checkpoints]
    rows = _with_step(t, [{"checkpoint": labels[s.index], **{k: round(v, 6) for k, v in s.quantiles.items()}}
                          for s in t.drift.per_checkpoint])
    base = alt.Chart(alt.Data(values=rows)).encode(x=_x(t))
    low = min(r["q10"] for r in rows)
    y = alt.Scale(domain=[max(-1.0, np.floor(low * 10) / 10 - 0.05), 1.0], zero=False)
    band90 = base.mark_area(opacity=0.2, color=RUN_COLOR).encode(
        y=alt.Y("q10:Q", scale=y, title="cosine to final decoder direction"), y2="q90:Q")
    band50 = base.mark_area(opacity=0.35, color=RUN_COLOR).encode(y=alt.Y("q25:Q", scale=y), y2="q75:Q")
    line = base.mark_line(point=True, color="#1f3f6e").encode(
        y=alt.Y("q50:Q", scale=y), tooltip=["checkpoint:N", "q10:Q", "q50:Q", "q90:Q"])
    layers = [band90, band50, line]
    bounds = _with_step(t, [{"checkpoint": labels[p.start], "phase": p.name} for p in t.drift.phases[1:]])
    if bounds:
        layers.append(alt.Chart(alt.Data(values=bounds)).mark_rule(strokeDash=[4, 3], color="#c0392b")
                      .encode(x=_x(t), tooltip=["phase:N"]))
    return alt.layer(*layers).properties(width=WIDTH, height=HEIGHT,
                                         title=f"Decoder drift ({t.drift.n_features:,} features; median, 25-75%, 10-90%)")


def matched_chart(t: TrackAnalysis) -> alt.Chart:
    """Fraction of features matched (cosine >= threshold) between consecutive SAEs, by index and by
    optimal assignment; independently trained controls as separate points."""
    labels = [c.label for c in t.checkpoints]
    by_pos = {c.index: c.label for c in t.checkpoints}
    rows = []
    for m in t.matches:
        lab = by_pos.get(m.b, labels[min(m.b, len(labels) - 1)])
        if m.kind == "consecutive":
            if _ok(m.by_index):
                rows.append({"checkpoint": lab, "fraction": round(m.by_index, 6), "method": "by index (vs previous)"})
            rows.append({"checkpoint": lab, "fraction": round(m.by_assignment, 6), "method": "by assignment (vs previous)"})
        else:
            rows.append({"checkpoint": lab, "fraction": round(m.by_assignment, 6), "method": "fresh SAE vs series (assignment)"})
    y = alt.Y("fraction:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"),
              title=f"features matched (cos >= {t.threshold:g})")
    color = alt.Color("method:N", legend=alt.Legend(orient="bottom", title=None),
                      scale=alt.Scale(domain=["by index (vs previous)", "by assignment (vs previous)",
                                              "fresh SAE vs series (assignment)"], range=[RUN_COLOR, SECOND_COLOR, THIRD_COLOR]))
    tooltip = ["checkpoint:N", "method:N", alt.Tooltip("fraction:Q", format=".1%")]
    rows = _with_step(t, rows)
    series = [r for r in rows if not r["method"].startswith("fresh")]
    controls = [r for r in rows if r["method"].startswith("fresh")]
    lines = alt.Chart(alt.Data(values=series)).mark_line(point=True).encode(
        x=_x(t), y=y, color=color, strokeDash=alt.StrokeDash("method:N", legend=None), tooltip=tooltip)
    layers = [lines]
    if controls:
        layers.append(alt.Chart(alt.Data(values=controls)).mark_point(size=90, filled=True, shape="diamond")
                      .encode(x=_x(t), y=y, color=color, tooltip=tooltip))
    return alt.layer(*layers).properties(width=WIDTH, height=HEIGHT, title="Feature matching along the series")


def l0_dead_chart(t: TrackAnalysis) -> alt.HConcatChart:
    """L0 (active features per token) and dead fraction per checkpoint, side by side."""
    rows_l0 = _with_step(t, [{"checkpoint": c.label, "l0": round(c.l0, 6)} for c in t.checkpoints if _ok(c.l0)])
    rows_dead = _with_step(t, [{"checkpoint": c.label, "dead": round(c.dead_frac, 6)} for c in t.checkpoints
                               if _ok(c.dead_frac)])
    half = WIDTH // 2 - 20
    l0 = alt.Chart(alt.Data(values=rows_l0)).mark_line(point=True, color=RUN_COLOR).encode(
        x=_x(t), y=alt.Y("l0:Q", title="L0 (features per token)"), tooltip=["checkpoint:N", "l0:Q"]
    ).properties(width=half, height=HEIGHT, title="L0 per checkpoint")
    dead = alt.Chart(alt.Data(values=rows_dead)).mark_line(point=True, color=THIRD_COLOR).encode(
        x=_x(t), y=alt.Y("dead:Q", title="dead features", axis=alt.Axis(format="%")),
        tooltip=["checkpoint:N", alt.Tooltip("dead:Q", format=".2%")]
    ).properties(width=half, height=HEIGHT, title="Dead features per checkpoint")
    return alt.hconcat(l0, dead)


def speedup_chart(t: TrackAnalysis) -> alt.Chart:
    """Tokens to reach the fresh SAE's final level: fresh vs recurrent bars per control and metric
    (a recurrent run that never got there is drawn at its whole budget, marked)."""
    rows = []
    labels = {c.index: c.label for c in t.checkpoints}
    for s in t.speedups:
        group = f"{labels.get(s.checkpoint, s.checkpoint)}: {'loss' if s.metric == 'loss' else 'expl. var.'}"
        if s.fresh_tokens is not None:
            rows.append({"group": group, "init": "fresh", "tokens": s.fresh_tokens, "reached": "yes"})
        rec = s.recurrent_tokens if s.recurrent_tokens is not None else s.recurrent_budget
        rows.append({"group": group, "init": "recurrent", "tokens": rec,
                     "reached": "yes" if s.recurrent_tokens is not None else "no (whole budget)"})
    return alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        y=alt.Y("init:N", title=None), x=alt.X("tokens:Q", title="tokens to reach the fresh SAE's final level"),
        color=alt.Color("init:N", legend=None, scale=alt.Scale(domain=["fresh", "recurrent"], range=[BASELINE_COLOR, RUN_COLOR])),
        row=alt.Row("group:N", title=None), opacity=alt.condition("datum.reached == 'yes'", alt.value(1.0), alt.value(0.45)),
        tooltip=["group:N", "init:N", alt.Tooltip("tokens:Q", format=","), "reached:N"],
    ).properties(width=WIDTH - 80, height=44, title="Speed-up of recurrent initialisation")


CHARTS = {"drift": drift_chart, "matched": matched_chart, "l0_dead": l0_dead_chart, "speedup": speedup_chart}
