"""The run report's time charts (and its two per-run charts): each function returns an altair chart
(or None when the run lacks the data). No I/O.

Time charts share one x domain (so they line up when stacked) and carry the same markers: resample
events, schedule changes (l1_alpha / learning-rate) and findings, with the run's phases shaded.
Data arrive thinned (``series.thin``): no NaN, no dots in field names. Each chart's rows live in
named top-level ``datasets`` (``spec_of`` turns a chart into its Vega-Lite dict quickly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import altair as alt
import numpy as np

from ..points import Series, _round, histogram_log10
from .style import LINE, TARGET_COLOR, zoom

WIDTH = 760
HEIGHT = 230
STRIP_HEIGHT = 70
#: Most markers drawn per kind (an evenly spaced subset beyond that; the tables list them all).
MAX_MARKERS = 400

MARKER_KINDS = ["resample", "l1_alpha change", "lr change", "resume", "finding", "note"]
MARKER_COLORS = ["#9e9e9e", "#8e44ad", "#e67e22", "#16a085", "#d62728", "#54aeff"]
"""``finding``: a finding worth acting on (warn / fail); ``note``: one for the record (info: normal
sparsification, a dormant start while the dead window fills, a plateau), drawn in a calm blue."""
#: Labels drawn over finding markers: most per chart, rows they stack in at the bottom of the plot.
MAX_MARKER_LABELS = 24
LABEL_ROWS = 2


@dataclass(frozen=True)
class Timeline:
    """What every time chart shares: the x domain, phases to shade, markers to draw."""

    x_domain: tuple[int, int]
    """First and last logged step."""
    phases: list[dict[str, Any]] = field(default_factory=list)
    """``{"name", "start", "end"}`` spans."""
    markers: list[dict[str, Any]] = field(default_factory=list)
    """``{"step", "kind", "label"}`` with ``kind`` one of ``MARKER_KINDS``."""

    def for_metric(self, *metrics: str) -> "Timeline":
        """This timeline shading only the phases cut on ``metrics`` (else those of the first phase's
        metric): phases of different metrics overlap and would blur each other."""
        mine = [p for p in self.phases if p.get("metric") in metrics]
        if not mine and self.phases:
            first = self.phases[0].get("metric")
            mine = [p for p in self.phases if p.get("metric") == first]
        return Timeline(self.x_domain, mine, self.markers)


def _data(ds: dict[str, list], name: str, values: list[dict]) -> alt.Data:
    """Register ``values`` as the named dataset ``name`` (attached at the top level by ``_attach``)."""
    ds[name] = values
    return alt.Data(name=name)


def _attach(chart: Any, ds: dict[str, list]) -> Any:
    """Put the named datasets on the top-level chart without altair copying or validating every row
    (inline ``values`` cost ~0.5 s per 2,000-point chart in altair's schema layer)."""
    chart.datasets = ds
    return chart


def spec_of(chart: Any) -> dict[str, Any]:
    """A chart's Vega-Lite dict, fast: the datasets are set aside while altair builds the rest."""
    ds = chart._kwds.get("datasets", alt.Undefined)
    chart.datasets = alt.Undefined
    try:
        spec = chart.to_dict(validate=False)
    finally:
        chart.datasets = ds
    if ds is not alt.Undefined:
        spec["datasets"] = ds
    return spec


def _x(tl: Timeline, title: str | None = "Training step", field: str = "step") -> alt.X:
    return alt.X(f"{field}:Q", title=title, scale=alt.Scale(domain=list(tl.x_domain), nice=False, zero=False),
                 axis=alt.Axis(labelExpr="datum.value == 0 ? '0' : format(datum.value, '~s')", labelFlush=True,
                               labelOverlap=True))


def _limit_markers(markers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for kind in MARKER_KINDS:
        mine = [m for m in markers if m["kind"] == kind]
        if len(mine) > MAX_MARKERS:
            pick = np.unique(np.linspace(0, len(mine) - 1, MAX_MARKERS).round().astype(int))
            mine = [mine[i] for i in pick]
        out.extend(mine)
    return out


def _label_rows(tl: Timeline, rows: int = 3, char_px: float = 5.6) -> list[dict[str, Any]]:
    """Phases with a pixel offset ``ly`` for their name, stacked so names never overlap; a name that
    finds no free row gets ``show`` False (the band's tooltip still names it)."""
    x0, x1 = tl.x_domain
    span = max(1, x1 - x0)
    ends = [-1e9] * rows
    out = []
    for p in tl.phases:
        left = (p["start"] - x0) / span * WIDTH + 3
        width = len(str(p["name"])) * char_px + 6
        row = next((r for r in range(rows) if left >= ends[r]), None)
        if row is not None:
            ends[row] = left + width
        out.append({**p, "ly": 2 + 12 * (row or 0), "show": row is not None})
    return out


def _decorations(tl: Timeline, ds: dict[str, list], legend: bool = True, height: int = HEIGHT) -> list[alt.Chart]:
    layers: list[alt.Chart] = []
    if tl.phases:
        phases = _data(ds, "phases", _label_rows(tl))
        layers.append(alt.Chart(phases).mark_rect(opacity=0.12, clip=True).encode(
            x=_x(tl, field="start"), x2="end:Q",
            color=alt.Color("name:N", legend=None, scale=alt.Scale(scheme="set2")),
            tooltip=[alt.Tooltip("name:N", title="phase"), alt.Tooltip("start:Q", format=","), alt.Tooltip("end:Q", format=",")]))
        layers.append(alt.Chart(phases).transform_filter("datum.show").mark_text(
            align="left", baseline="top", dx=3, dy=3, fontSize=10, color="#555", clip=True).encode(
            x=alt.X("start:Q"), y=alt.Y("ly:Q", scale=None), text="name:N"))
    if tl.markers:
        kinds = {m["kind"] for m in tl.markers}
        domain = [k for k in MARKER_KINDS if k in kinds]
        colors = [c for k, c in zip(MARKER_KINDS, MARKER_COLORS) if k in kinds]
        layers.append(alt.Chart(_data(ds, "markers", _limit_markers(tl.markers))).mark_rule(
            strokeDash=[4, 3], strokeWidth=1, opacity=0.75, clip=True).encode(
            x="step:Q",
            color=alt.Color("kind:N", title="Markers", scale=alt.Scale(domain=domain, range=colors),
                            legend=alt.Legend(orient="bottom", direction="horizontal") if legend else None),
            tooltip=[alt.Tooltip("kind:N", title="marker"), alt.Tooltip("step:Q", format=","), alt.Tooltip("label:N")]))
        labels = _marker_labels(tl, height)
        if labels:
            layers.append(alt.Chart(_data(ds, "marker_labels", labels)).mark_text(
                align="left", baseline="bottom", dx=3, fontSize=10, clip=True).encode(
                x="step:Q", y=alt.Y("ly:Q", scale=None),
                color=alt.Color("kind:N", scale=alt.Scale(domain=domain, range=colors), legend=None),
                text="text:N",
                tooltip=[alt.Tooltip("label:N", title="finding"), alt.Tooltip("step:Q", format=",")]))
    return layers


def _marker_labels(tl: Timeline, height: int, char_px: float = 5.6) -> list[dict[str, Any]]:
    """Short names over the finding markers (``collapse``, ``late spike``), stacked in rows at the
    bottom of the plot so they do not overlap; a marker whose name finds no free row keeps its tooltip."""
    if height < 120:
        return []
    x0, x1 = tl.x_domain
    span = max(1, x1 - x0)
    ends = [-1e9] * LABEL_ROWS
    out = []
    for m in sorted((m for m in tl.markers if m["kind"] in ("finding", "note")), key=lambda m: m["step"]):
        text = str(m.get("short") or m["label"])
        left = (m["step"] - x0) / span * WIDTH + 3
        width = len(text) * char_px + 6
        row = next((r for r in range(LABEL_ROWS) if left >= ends[r] and left + width <= WIDTH + 40), None)
        if row is None:
            continue
        ends[row] = left + width
        out.append({"step": m["step"], "kind": m["kind"], "text": text, "label": m["label"],
                    "ly": height - 3 - 12 * row})
        if len(out) >= MAX_MARKER_LABELS:
            break
    return out


def _line(data: alt.Data, tl: Timeline, y: alt.Y, color: str | alt.Color = LINE, zoom_name: str | None = "zoom") -> alt.Chart:
    """A metric's line; ``zoom_name`` adds the step-axis zoom (one per view)."""
    enc: dict[str, Any] = {"x": _x(tl), "y": y, "tooltip": [alt.Tooltip("step:Q", format=","), alt.Tooltip("value:Q", format=".4~g"),
                                                         alt.Tooltip("series:N")]}
    if isinstance(color, alt.Color):
        enc["color"] = color
        mark = alt.Chart(data).mark_line(strokeWidth=1.3, clip=True)
    else:
        mark = alt.Chart(data).mark_line(strokeWidth=1.3, color=color, clip=True)
    chart = mark.encode(**enc)
    # a fixed view name keeps the spec the same from run to run (altair would number it)
    return chart.properties(name=f"{zoom_name}_view").add_params(zoom(zoom_name)) if zoom_name else chart


def _finish(layers: list[alt.Chart], ds: dict[str, list], title: str, subtitle: str = "", height: int = HEIGHT) -> alt.LayerChart:
    t = alt.TitleParams(title, subtitle=subtitle or alt.Undefined, anchor="start", fontSize=14)
    return _attach(alt.layer(*layers).properties(width=WIDTH, height=height, title=t).resolve_scale(color="independent"), ds)


def l0_chart(series: Series | None, tl: Timeline, *, as_fraction: bool, target: float | None = None) -> alt.LayerChart | None:
    """L0 over steps on a log axis (``001``), the target as a rule, phases shaded, markers drawn.

    ``as_fraction``: the series holds fractions of the dictionary (drawn as percent); else counts.
    Zero and negative values cannot sit on a log axis and are left out of the drawing.
    """
    if series is None:
        return None
    scale = 100.0 if as_fraction else 1.0
    records = series.records(scale=scale, series="L0", positive_only=True)
    if not records:
        return None
    unit = "L0 (% of features active)" if as_fraction else "L0 (active features)"
    ds: dict[str, list] = {}
    tl = tl.for_metric("l0_frac", "l0")
    layers = _decorations(tl, ds) + [_line(_data(ds, "l0", records), tl, alt.Y("value:Q", title=unit, scale=alt.Scale(type="log")))]
    sub = "log axis"
    if target is not None and target > 0:
        tv = target * scale
        tdata = _data(ds, "target", [{"target": _round(tv), "label": f"target {tv:.4g}{'%' if as_fraction else ''}"}])
        layers.append(alt.Chart(tdata).mark_rule(color=TARGET_COLOR, strokeWidth=1.5).encode(
            y=alt.Y("target:Q", title=unit), tooltip=[alt.Tooltip("label:N", title="target")]))
        layers.append(alt.Chart(tdata).mark_text(align="right", baseline="bottom", dy=-3, color=TARGET_COLOR, fontSize=11).encode(
            y="target:Q", x=alt.value(WIDTH - 4), text="label:N"))
        sub += f"; green rule: target L0 {tv:.4g}{'%' if as_fraction else ''}"
    return _finish(layers, ds, "L0 over training steps", sub)


def dead_chart(series: Series | None, tl: Timeline, *, as_fraction: bool, window: str = "") -> alt.LayerChart | None:
    """Dead features over steps (``000``) on a linear axis (a log axis over zeros draws nothing useful)."""
    if series is None:
        return None
    scale = 100.0 if as_fraction else 1.0
    title = "Dead features (% of dictionary)" if as_fraction else "Dead features"
    records = series.records(scale=scale, series="dead")
    top = max((r["value"] for r in records), default=0.0)
    # All-zero runs (no feature ever died) still get a readable axis: at least 0-1 (% or count).
    y = alt.Y("value:Q", title=title, scale=alt.Scale(domain=[0, max(1.0, top)], nice=True))
    ds: dict[str, list] = {}
    tl = tl.for_metric("dead_frac", "dead")
    layers = _decorations(tl, ds) + [_line(_data(ds, "dead", records), tl, y)]
    return _finish(layers, ds, "Dead features over training steps", window or "linear axis")


def loss_chart(loss: Series | None, mse: Series | None, tl: Timeline) -> alt.LayerChart | None:
    """Loss and MSE over steps (log axis when every drawn value is positive)."""
    parts = [s for s in (loss, mse) if s is not None]
    if not parts:
        return None
    records = [r for s in parts for r in s.records(series="MSE" if s.name == "mse" else s.name)]
    positive = all(r["value"] > 0 for r in records)
    y = alt.Y("value:Q", title="loss", scale=alt.Scale(type="log" if positive else "linear"))
    color = alt.Color("series:N", title=None, scale=alt.Scale(domain=["loss", "MSE"], range=[LINE, "#ff7f0e"]),
                      legend=alt.Legend(orient="top-right"))
    dropped = sum(s.dropped_nonfinite for s in parts)
    sub = ("log axis" if positive else "linear axis") + (f"; {dropped:,} non-finite values not drawn" if dropped else "")
    ds: dict[str, list] = {}
    tl = tl.for_metric("loss", "mse")
    return _finish(_decorations(tl, ds) + [_line(_data(ds, "loss", records), tl, y, color)], ds, "Loss and MSE over training steps", sub)


def fidelity_chart(ev: Series | None, tl: Timeline, *, from_fvu: bool = False,
                   ce_score: Series | None = None) -> alt.LayerChart | None:
    """Explained variance (reconstruction fidelity) over steps on a linear percent axis; when the
    log had FVU (sparsify) it is drawn as 1 - FVU, and the subtitle says so. ``ce_score``: the
    spliced-in LM loss (``ce_loss_score``, the share of the zero-ablation loss gap recovered) drawn
    beside it, on the same percent axis."""
    name = "1 - FVU" if from_fvu else "explained variance"
    records = ev.records(scale=100.0, series=name) if ev is not None else []
    ce_records = ce_score.records(scale=100.0, series="ce_loss_score") if ce_score is not None else []
    if not records and not ce_records:
        return None
    ds: dict[str, list] = {}
    tl = tl.for_metric("explained_variance", "loss", "mse")
    if not ce_records:
        y = alt.Y("value:Q", title="explained variance (%)" if not from_fvu else "1 - FVU (%)",
                  scale=alt.Scale(zero=False, nice=True))
        sub = ("explained variance = 1 - FVU (the log has FVU); " if from_fvu else "") + "linear axis; 100% = perfect reconstruction"
        dropped = ev.dropped_nonfinite if ev is not None else 0
        if dropped:
            sub += f"; {dropped:,} non-finite values not drawn"
        return _finish(_decorations(tl, ds) + [_line(_data(ds, "ev", records), tl, y, "#17becf")], ds,
                       "Explained variance over training steps", sub)
    y = alt.Y("value:Q", title="fidelity (%)", scale=alt.Scale(zero=False, nice=True))
    domain = ([name] if records else []) + ["ce_loss_score"]
    color = alt.Color("series:N", title=None, scale=alt.Scale(domain=domain, range=(["#17becf"] if records else []) + ["#d62728"]),
                      legend=alt.Legend(orient="bottom-right"))
    sub = ("linear axis; ce_loss_score = share of the loss gap between zero-ablating the hookpoint and the clean "
           "model that the LM recovers with the SAE spliced in; 100% = perfect")
    return _finish(_decorations(tl, ds) + [_line(_data(ds, "ev", records + ce_records), tl, y, color)], ds,
                   "Explained variance and spliced-in LM loss over training steps", sub)


def shrinkage_chart(l2: Series | None, tl: Timeline) -> alt.LayerChart | None:
    """``l2_ratio`` (||x_hat|| / ||x||) over steps on a linear axis, with a rule at 1 (no shrinkage)."""
    if l2 is None:
        return None
    records = l2.records(series="l2_ratio")
    if not records:
        return None
    ds: dict[str, list] = {}
    y = alt.Y("value:Q", title="||x_hat|| / ||x||", scale=alt.Scale(zero=False, nice=True))
    one = _data(ds, "one", [{"one": 1.0, "label": "no shrinkage (1)"}])
    layers = _decorations(tl.for_metric("l2_ratio", "loss"), ds) + [
        _line(_data(ds, "l2_ratio", records), tl, y, "#8c564b"),
        alt.Chart(one).mark_rule(color=TARGET_COLOR, strokeWidth=1.5).encode(
            y=alt.Y("one:Q", title="||x_hat|| / ||x||"), tooltip=[alt.Tooltip("label:N", title="reference")])]
    return _finish(layers, ds, "Shrinkage (l2_ratio) over training steps",
                   "linear axis; green rule: 1, a reconstruction as large as its input; below it the L1 penalty "
                   "shrinks the reconstructions")


def density_chart(below5: Series | None, below6: Series | None, tl: Timeline) -> alt.LayerChart | None:
    """The feature-density summary over steps: the share of the dictionary firing on fewer than 1e-5
    and 1e-6 of tokens (an ultra-low-density cluster), linear percent axis."""
    parts = [(s, label) for s, label in ((below5, "below 1e-5"), (below6, "below 1e-6")) if s is not None]
    records = [r for s, label in parts for r in s.records(scale=100.0, series=label)]
    if not records:
        return None
    ds: dict[str, list] = {}
    top = max(r["value"] for r in records)
    y = alt.Y("value:Q", title="features (% of dictionary)", scale=alt.Scale(domain=[0, max(1.0, top)], nice=True))
    color = alt.Color("series:N", title="density", scale=alt.Scale(domain=[label for _, label in parts],
                                                                   range=["#1f77b4", "#aec7e8"][:len(parts)]),
                      legend=alt.Legend(orient="bottom-right"))
    layers = _decorations(tl.for_metric("dead_frac", "dead"), ds) + [_line(_data(ds, "density", records), tl, y, color)]
    return _finish(layers, ds, "Feature density over training steps",
                   "share of the dictionary firing on fewer than 1e-5 / 1e-6 of the tokens counted; linear axis")


def dense_chart(dense: Series | None, tl: Timeline) -> alt.LayerChart | None:
    """Dense latents (features firing on more than 10% of tokens) over steps, a count on a linear axis."""
    if dense is None:
        return None
    records = dense.records(series="dense latents")
    if not records:
        return None
    ds: dict[str, list] = {}
    top = max(r["value"] for r in records)
    y = alt.Y("value:Q", title="dense latents", scale=alt.Scale(domain=[0, max(1.0, top)], nice=True))
    layers = _decorations(tl.for_metric("dead_frac", "dead"), ds) + [_line(_data(ds, "dense", records), tl, y, "#ff7f0e")]
    return _finish(layers, ds, "Dense latents over training steps",
                   "features firing on more than 10% of the tokens counted; linear axis")


def schedule_chart(lr: Series | None, l1: Series | None, tl: Timeline, coefficient: str = "l1_alpha") -> alt.VConcatChart | None:
    """Learning-rate and sparsity-coefficient schedules (``coefficient``: l1_alpha, l0_coefficient or
    k, the series ``l1``) as small strips aligned with the time charts."""
    strips = []
    ds: dict[str, list] = {}
    present = [(s, label, color) for s, label, color in ((l1, coefficient, "#8e44ad"), (lr, "learning rate", "#e67e22"))
               if s is not None]
    for i, (s, label, color) in enumerate(present):
        y = alt.Y("value:Q", title=label, scale=alt.Scale(zero=False), axis=alt.Axis(format=".2~g", tickCount=3))
        line = _line(_data(ds, label.replace(" ", "_"), s.records(series=label)), tl, y, color, zoom_name=f"zoom_{i}")
        if i < len(present) - 1:  # only the bottom strip carries the step axis
            line = line.encode(x=alt.X("step:Q", title=None, scale=alt.Scale(domain=list(tl.x_domain), nice=False, zero=False),
                                       axis=alt.Axis(labels=False, ticks=False)))
        last = i == len(present) - 1
        strip = alt.layer(*_decorations(Timeline(tl.x_domain, [], tl.markers), ds, legend=last, height=STRIP_HEIGHT), line).properties(
            width=WIDTH, height=STRIP_HEIGHT).resolve_scale(color="independent")
        strips.append(strip)
    if not strips:
        return None
    t = alt.TitleParams("Schedules: " + " and ".join(label for _, label, _ in present), anchor="start", fontSize=14)
    return _attach(alt.vconcat(*strips, spacing=8).properties(title=t), ds)


def frequency_chart(freq: np.ndarray | None) -> alt.Chart | None:
    """Histogram of log10 feature firing frequency (feature density); never-fired features counted apart."""
    if freq is None or np.asarray(freq).size == 0:
        return None
    bars, never, total = histogram_log10(freq)
    if not bars:
        return None
    sub = f"{total:,} features; {never:,} never fired (not on a log axis)" if never else f"{total:,} features"
    ds: dict[str, list] = {}
    chart = alt.Chart(_data(ds, "freq", bars)).mark_bar(color=LINE, binSpacing=1).encode(
        x=alt.X("start:Q", title="log10 firing frequency (fraction of tokens)", bin="binned"),
        x2="end:Q",
        y=alt.Y("features:Q", title="features"),
        tooltip=[alt.Tooltip("start:Q", format=".2f"), alt.Tooltip("end:Q", format=".2f"), "features:Q"],
    ).properties(width=WIDTH, height=HEIGHT, title=alt.TitleParams("Feature firing frequency", subtitle=sub, anchor="start", fontSize=14))
    return _attach(chart, ds)


def density_change_chart(snapshots: dict[int, np.ndarray]) -> alt.Chart | None:
    """Histograms of log10 feature firing frequency at a few steps of training, overlaid as lines
    (how the density distribution moved: the healthy bulk, an ultra-low cluster, dense latents)."""
    rows: list[dict[str, Any]] = []
    order = []
    for step in sorted(snapshots):
        bars, never, total = histogram_log10(snapshots[step])
        label = f"step {step:,}" + (f" ({never:,} never fired)" if never else "")
        order.append(label)
        rows += [{"mid": _round((b["start"] + b["end"]) / 2), "features": b["features"], "snapshot": label} for b in bars]
    if not rows or len(order) < 2:
        return None
    ds: dict[str, list] = {}
    palette = ["#c6dbef", "#6baed6", "#2171b5", "#08306b"][-len(order):] if len(order) <= 4 else alt.Undefined
    chart = alt.Chart(_data(ds, "density_hist", rows)).mark_line(strokeWidth=1.5, interpolate="step", point=False).encode(
        x=alt.X("mid:Q", title="log10 firing frequency (fraction of tokens)"),
        y=alt.Y("features:Q", title="features"),
        color=alt.Color("snapshot:N", title="training step", sort=order,
                        scale=alt.Scale(domain=order, range=palette) if palette is not alt.Undefined else alt.Undefined,
                        legend=alt.Legend(orient="bottom")),
        tooltip=[alt.Tooltip("snapshot:N"), alt.Tooltip("mid:Q", format=".2f", title="log10 frequency"), "features:Q"],
    ).properties(width=WIDTH, height=HEIGHT, title=alt.TitleParams(
        "Feature density over training", subtitle="log10 firing frequency per feature at recorded steps "
        "(stats/feature_density); right of -1: dense latents, left of -5: ultra-low density", anchor="start", fontSize=14))
    return _attach(chart, ds)


def input_dims_chart(dims: list[int], mean: np.ndarray, absmax: np.ndarray | None,
                     outliers: list[dict[str, Any]]) -> alt.LayerChart | None:
    """Per-dimension input activation (``003``): mean and max |activation| per dimension, outliers marked."""
    if len(dims) == 0:
        return None
    rows = [{"dim": int(d), "value": _round(v), "series": "mean"} for d, v in zip(dims, mean.tolist()) if np.isfinite(v)]
    if absmax is not None:
        rows += [{"dim": int(d), "value": _round(v), "series": "max |activation|"} for d, v in zip(dims, absmax.tolist()) if np.isfinite(v)]
    if not rows:
        return None
    x = alt.X("dim:Q", title="input dimension", scale=alt.Scale(nice=False))
    color = alt.Color("series:N", title=None, scale=alt.Scale(domain=["max |activation|", "mean"], range=["#b0c4de", "#17becf"]),
                      legend=alt.Legend(orient="top-right"))
    ds: dict[str, list] = {}
    layers = [alt.Chart(_data(ds, "dims", rows)).mark_line(strokeWidth=1).encode(
        x=x, y=alt.Y("value:Q", title="input activation"), color=color,
        tooltip=["dim:Q", alt.Tooltip("value:Q", format=".4~g"), "series:N"])]
    marks = [{"dim": int(o["dim"]), "value": _round(float(o.get("absmax") or 0.0)), "label": f"dim {int(o['dim'])}"}
             for o in outliers if o.get("dim") is not None and np.isfinite(float(o.get("absmax") or 0.0))]
    sub = "no outlier dimensions"
    if marks:
        od = _data(ds, "outliers", marks)
        layers.append(alt.Chart(od).mark_point(color="#d62728", size=60, filled=True).encode(
            x="dim:Q", y="value:Q", tooltip=["label:N", alt.Tooltip("value:Q", title="max |activation|", format=".4~g")]))
        layers.append(alt.Chart(od).mark_text(color="#d62728", dy=-9, fontSize=10).encode(x="dim:Q", y="value:Q", text="label:N"))
        sub = f"{len(marks)} outlier dimension(s) marked in red"
    return _attach(alt.layer(*layers).properties(width=WIDTH, height=HEIGHT, title=alt.TitleParams(
        "Input activation per dimension", subtitle=sub, anchor="start", fontSize=14)), ds)
