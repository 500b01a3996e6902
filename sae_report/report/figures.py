"""From a run and its analysis to the report's figures: thinned series in, Vega-Lite specs out.

``build_figures`` picks the charts the run has data for, in report order, and returns each as a
``Figure`` (id, title, caption, Vega-Lite dict). The dict is what ``report.html`` embeds and what
``vl_convert`` renders to the Markdown's images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..runlog import RunData
from . import charts
from .context import fvu_logged
from .points import MAX_POINTS, minmax_indices, thin

#: Charts over training steps (zoom and pan on the step axis in the HTML report).
TIME_CHARTS = frozenset({"l0", "dead", "fidelity", "loss", "schedules", "shrinkage", "density", "dense"})
EVENT_MARKERS = {"resample": "resample", "l1_change": "l1_alpha change", "lr_change": "lr change", "resume": "resume"}


@dataclass(frozen=True)
class Figure:
    """One chart of the report."""

    id: str
    """File stem and HTML id (``l0``, ``dead``, ...): letters, digits and ``_`` only."""
    title: str
    """Alt text / heading."""
    caption: str
    """One line under the chart."""
    spec: dict[str, Any]
    """The Vega-Lite spec (JSON-safe, no NaN)."""
    zoom: bool = False
    """True for the time charts: the HTML report zooms and pans them on the step axis."""


def timeline(doc: Mapping[str, Any], data: RunData) -> charts.Timeline:
    """The shared x domain, phases and markers (events + findings) of the run."""
    steps = data.metrics["step"]
    first, last = int(steps.min()), int(steps.max())
    if last <= first:
        last = first + 1
    phases = [{"name": str(p["name"]), "start": int(p["start_step"]), "end": int(p["end_step"]), "metric": str(p.get("metric", ""))}
              for p in doc.get("phases") or []]
    markers = [{"step": int(e.step), "kind": EVENT_MARKERS[e.kind], "label": _event_label(e.kind, e.data)}
               for e in data.events if e.kind in EVENT_MARKERS]
    for f in doc.get("findings") or []:
        kind = str(f.get("kind", "")).replace("_", " ")
        marker = "note" if f.get("severity") == "info" else "finding"
        markers.append({"step": int(f["step"]), "kind": marker, "label": f"{kind} ({f.get('metric', '')}, {f.get('severity', '')})",
                        "short": kind})
    return charts.Timeline(x_domain=(first, last), phases=phases, markers=markers)


def _event_label(kind: str, data: Mapping[str, Any]) -> str:
    if kind == "resample":
        n = data.get("n")
        ok = isinstance(n, (int, float)) and not isinstance(n, bool) and 0 <= n < 2**62  # NaN/inf fail too
        return f"resampled {int(n):,} features" if ok else "resample"
    if kind in ("l1_change", "lr_change"):
        frm, to = data.get("from"), data.get("to")
        name = "l1_alpha" if kind == "l1_change" else "lr"
        if isinstance(to, (int, float)) and not isinstance(to, bool):
            return (f"{name} {frm:.4g} -> {to:.4g}" if isinstance(frm, (int, float)) and not isinstance(frm, bool)
                    else f"{name} -> {to:.4g}")
        return f"{name} change"
    return kind


def _keep_steps(tl: charts.Timeline, doc: Mapping[str, Any]) -> list[int]:
    keep = [m["step"] for m in tl.markers]
    for p in tl.phases:
        keep += [p["start"], p["end"]]
    for f in doc.get("findings") or []:
        if f.get("end_step") is not None:
            keep.append(int(f["end_step"]))
    return keep


def _l0_target(doc: Mapping[str, Any]) -> float | None:
    for t in doc.get("targets") or []:
        if "l0" in str(t.get("metric", "")).lower() and isinstance(t.get("target"), (int, float)):
            return float(t["target"])
    tgt = (doc["run"].get("config") or {}).get("target_l0")
    return float(tgt) if isinstance(tgt, (int, float)) and not isinstance(tgt, bool) else None


def build_figures(doc: Mapping[str, Any], data: RunData, *, n_points: int = MAX_POINTS) -> list[Figure]:
    """The report's figures for this run, in report order; charts without data are left out."""
    m = data.metrics
    if m.height == 0 or "step" not in m.columns:
        return []
    tl = timeline(doc, data)
    keep = _keep_steps(tl, doc)

    def s(col: str):
        return thin(m, col, keep_steps=keep, n_points=n_points)

    figs: list[Figure] = []
    l0_frac = s("l0_frac")
    target = _l0_target(doc)
    if l0_frac is not None:
        c = charts.l0_chart(l0_frac, tl, as_fraction=True, target=target if target is not None and target <= 1 else None)
    else:
        c = charts.l0_chart(s("l0"), tl, as_fraction=False, target=target if target is not None and target > 1 else None)
    _add(figs, "l0", "L0 over training steps", "L0 on a log axis; shaded bands are the detected phases; "
         "dashed rules mark resamples, schedule changes and findings (named at the bottom).", c)
    dead_frac = s("dead_frac")
    window = (doc["run"].get("config") or {}).get("dead_window")
    wtxt = f"linear axis; dead = no firing in the last {int(window):,} steps" if isinstance(window, (int, float)) else ""
    c = charts.dead_chart(dead_frac, tl, as_fraction=True, window=wtxt) if dead_frac is not None \
        else charts.dead_chart(s("dead"), tl, as_fraction=False, window=wtxt)
    _add(figs, "dead", "Dead features over training steps", "Linear axis: the dead count starts at 0 until the "
         "dead window has filled.", c)
    ce = s("ce_loss_score")
    _add(figs, "fidelity", "Explained variance over training steps" if ce is None else
         "Explained variance and spliced-in LM loss over training steps",
         ("Reconstruction fidelity: explained variance = 1 - FVU, read from the log's FVU." if fvu_logged(doc)
          else "Reconstruction fidelity: the share of the input's variance the SAE reconstructs.")
         + ("" if ce is None else " Beside it, ce_loss_score: the share of the LM's loss gap (zero-ablated vs clean) "
            "recovered with the SAE spliced in."),
         charts.fidelity_chart(s("explained_variance"), tl, from_fvu=fvu_logged(doc), ce_score=ce))
    _add(figs, "loss", "Loss and MSE over training steps", "Total loss and reconstruction MSE.",
         charts.loss_chart(s("loss"), s("mse"), tl))
    arch = doc.get("architecture") or {}
    coef = arch.get("coefficient") or ("k" if arch.get("fixed_l0") else "l1_alpha")
    _add(figs, "schedules", "Schedules", f"{coef} and learning rate over the same steps.",
         charts.schedule_chart(s("lr"), s(coef), tl, coef))
    _add(figs, "shrinkage", "Shrinkage over training steps", "l2_ratio = ||x_hat|| / ||x||: below 1 the "
         "reconstructions are smaller than the inputs (the L1 penalty's shrinkage).", charts.shrinkage_chart(s("l2_ratio"), tl))
    _add(figs, "density", "Feature density over training steps", "Share of the dictionary firing on fewer than "
         "1e-5 / 1e-6 of the tokens: an ultra-low-density cluster below the healthy bulk.",
         charts.density_chart(s("density_below_1e-5"), s("density_below_1e-6"), tl))
    _add(figs, "dense", "Dense latents over training steps", "Features firing on more than 10% of the tokens.",
         charts.dense_chart(s("dense_features"), tl))
    _add(figs, "feature_freq", "Feature firing frequency", "How often each feature fired at the end of training "
         "(log10 of the fraction of tokens).", charts.frequency_chart(data.feature_freq))
    _add(figs, "density_hist", "Feature density over training", "Histograms of log10 firing frequency at a few "
         "recorded steps: how the healthy bulk, an ultra-low-density cluster and dense latents moved.",
         charts.density_change_chart(getattr(data, "feature_density", None) or {}))
    dims, mean, absmax = _input_dims(data)
    outliers = list(doc.get("input_outliers") or [])
    if not outliers and data.input_dims is not None and "outlier" in data.input_dims.columns and absmax is not None:
        flags = data.input_dims["outlier"].to_numpy()
        outliers = [{"dim": int(d), "absmax": float(a)} for d, a, o in zip(dims, absmax, flags) if bool(o)]
    if dims is not None and len(dims) > n_points:  # wide inputs: keep each bucket's extremes and the outliers
        keep = [minmax_indices(np.nan_to_num(mean), n_points)]
        if absmax is not None:
            keep.append(minmax_indices(np.nan_to_num(absmax), n_points))
        wanted = {int(o["dim"]) for o in outliers if o.get("dim") is not None}
        keep.append(np.flatnonzero(np.isin(dims, list(wanted))))
        idx = np.unique(np.concatenate(keep))
        dims, mean, absmax = dims[idx], mean[idx], (absmax[idx] if absmax is not None else None)
    if dims is not None:
        _add(figs, "input_dims", "Input activation per dimension", "Mean and max |activation| of each input "
             "dimension; outlier dimensions in red.", charts.input_dims_chart(dims, mean, absmax, outliers))
    return figs


def _add(figs: list[Figure], id_: str, title: str, caption: str, chart: Any) -> None:
    if chart is None:
        return
    spec = charts.spec_of(chart)
    spec.pop("$schema", None)  # no URL in an offline file; vega-embed is told the mode, vl_convert the version
    spec.setdefault("config", {}).update({"background": "white", "view": {"stroke": "#ddd"},
                                          "axis": {"labelFontSize": 11, "titleFontSize": 12},
                                          # a fixed y-axis extent lines the plots of all time charts up
                                          "axisY": {"minExtent": 48, "maxExtent": 48}})
    figs.append(Figure(id=id_, title=title, caption=caption, spec=spec, zoom=id_ in TIME_CHARTS))


def _input_dims(data: RunData) -> tuple[Any, Any, Any]:
    """Per-dimension (dims, mean, absmax) from ``stats/input_dims.csv`` or the input sample."""
    frame = data.input_dims
    if frame is not None and "mean" in frame.columns and frame.height:
        dims = frame["dim"].to_numpy() if "dim" in frame.columns else np.arange(frame.height)
        absmax = frame["absmax"].cast(float).to_numpy() if "absmax" in frame.columns else None
        return dims, frame["mean"].cast(float).to_numpy(), absmax
    sample = data.input_sample
    if sample is not None and getattr(sample, "ndim", 0) == 2 and sample.shape[1] > 0:
        sample = np.asarray(sample, dtype=np.float64)
        return np.arange(sample.shape[1]), np.nanmean(sample, axis=0), np.nanmax(np.abs(sample), axis=0)
    return None, None, None
