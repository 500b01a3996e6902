"""Charts: thinning keeps extremes, events, first and last points; specs hold no NaN and no dotted fields."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from sae_report.fixtures import write_run
from sae_report.report import charts
from sae_report.report.figures import build_figures
from sae_report.report.points import histogram_log10, minmax_indices, thin
from sae_report.runlog import read_run
from test_report_support import writeup_analysis, writeup_data


def _fields(obj, out=None):
    out = [] if out is None else out
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "field" and isinstance(v, str):
                out.append(v)
            _fields(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _fields(v, out)
    return out


def test_minmax_keeps_extremes_first_and_last() -> None:
    rng = np.random.default_rng(0)
    y = np.cumsum(rng.normal(size=1_000_003))
    y[123_457] = 1e6
    y[765_431] = -1e6
    idx = minmax_indices(y, 2000)
    assert len(idx) <= 2002 and np.all(np.diff(idx) > 0)
    assert {0, len(y) - 1, 123_457, 765_431} <= set(idx.tolist())
    # Every bucket's extremes survive: the thinned series spans the same range.
    assert y[idx].max() == y.max() and y[idx].min() == y.min()
    assert minmax_indices(np.arange(10.0), 2000).tolist() == list(range(10))


def test_thin_keeps_events_and_drops_nonfinite() -> None:
    n = 50_000
    steps = np.arange(n, dtype=np.int64) * 10
    vals = np.sin(np.arange(n) / 500.0)
    vals[100] = np.nan
    vals[200] = np.inf
    frame = pl.DataFrame({"step": steps, "l0_frac": vals})
    s = thin(frame, "l0_frac", keep_steps=[123_450, 333_330], n_points=500)
    assert s.dropped_nonfinite == 2 and s.total == n - 2
    assert {123_450, 333_330, 0, int(steps[-1])} <= set(s.steps.tolist())
    assert np.isfinite(s.values).all() and len(s.steps) <= 504
    assert thin(frame, "dead_frac") is None
    assert thin(frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("x")), "x") is None


def test_histogram_counts_never_fired_apart() -> None:
    freq = np.array([0.0, 0.0, 1e-6, 1e-3, 1e-3, 0.1, np.nan])
    bars, never, total = histogram_log10(freq)
    assert never == 2 and total == 6 and sum(b["features"] for b in bars) == 4
    assert bars[0]["start"] <= -6 and bars[-1]["end"] >= -1


@pytest.fixture(scope="module")
def long_writeup(tmp_path_factory):
    # 200K logged rows: far past altair's 5,000-row limit.
    return writeup_data(tmp_path_factory.mktemp("run"), rows=200_000, with_stats=True)


def test_figures_of_a_long_run_are_thinned_and_clean(long_writeup) -> None:
    doc = writeup_analysis().to_dict()
    figs = build_figures(doc, long_writeup)
    assert [f.id for f in figs] == ["l0", "dead", "fidelity", "loss", "schedules", "feature_freq", "input_dims"]
    for f in figs:
        text = json.dumps(f.spec, allow_nan=False)  # raises on NaN/inf
        assert "NaN" not in text and "Infinity" not in text
        assert all("." not in field for field in _fields(f.spec)), f.id
        for name, rows in f.spec.get("datasets", {}).items():
            assert len(rows) <= 2 * 2000 + 200, (f.id, name, len(rows))
    l0 = figs[0].spec
    assert l0["layer"][-3]["encoding"]["y"]["scale"]["type"] == "log"
    assert min(r["value"] for r in l0["datasets"]["l0"]) > 0
    steps = {r["step"] for r in l0["datasets"]["l0"]}
    assert {0, 100_000, 20_000, 90_000} <= steps  # first, last, phase/finding/resample steps
    assert l0["datasets"]["target"][0]["target"] == 5.0
    # findings worth acting on are red "finding" markers; info findings calm blue "note" markers
    assert {r["kind"] for r in l0["datasets"]["markers"]} == {"resample", "finding", "note"}
    assert {r["text"] for r in l0["datasets"]["marker_labels"]} >= {"collapse", "late spike"}  # markers are named
    dead = figs[1].spec
    assert dead["layer"][-1]["encoding"]["y"]["scale"].get("type") in (None, "linear")
    # Every time chart shares the run's x domain, so stacked charts line up.
    domains = [layer["encoding"]["x"]["scale"]["domain"] for f in figs[:4] for layer in f.spec["layer"]
               if "scale" in layer.get("encoding", {}).get("x", {})]
    assert domains and all(d == [0, 100_000] for d in domains)


def test_time_charts_zoom_on_the_step_axis_and_share_one_target_colour(long_writeup) -> None:
    """Every time chart binds an x-only interval selection to its scales (zoom and pan in the HTML);
    the histogram and the input chart do not; the target is drawn in the one target colour."""
    from sae_report.recommend.fit import RunPoint
    from sae_report.report.charts import l1_l0_chart

    figs = {f.id: f for f in build_figures(writeup_analysis().to_dict(), long_writeup)}
    for fid, fig in figs.items():
        params = fig.spec.get("params") or []
        zooms = [p for p in params if p.get("bind") == "scales"]
        if fid in ("l0", "dead", "fidelity", "loss", "schedules"):
            assert fig.zoom and zooms and all(p["select"] == {"type": "interval", "encodings": ["x"]} for p in zooms), fid
        else:
            assert not fig.zoom and not zooms, fid
    text = json.dumps(figs["l0"].spec)
    assert charts.TARGET_COLOR in text and "#d62728" not in text.split('"target"')[0][-200:]
    target = [layer for layer in figs["l0"].spec["layer"] if layer.get("data", {}).get("name") == "target"]
    assert target and all(layer["mark"]["color"] == charts.TARGET_COLOR for layer in target)
    l1 = json.dumps(l1_l0_chart([RunPoint("a", 0.01, 0.1), RunPoint("b", 0.1, 0.01)], None, 0.05).to_dict())
    assert charts.TARGET_COLOR in l1


def test_diverged_run_draws_no_nonfinite_values(tmp_path) -> None:
    run = write_run(tmp_path, "diverged", seed=0, rows=2000)
    data = read_run(run.run_dir)
    assert data.metrics["loss"].is_infinite().any() or data.metrics["loss"].is_nan().any()
    doc = writeup_analysis().to_dict()
    doc["phases"], doc["findings"] = [], []
    figs = {f.id: f for f in build_figures(doc, data)}
    loss = figs["loss"].spec
    json.dumps(loss, allow_nan=False)
    assert "non-finite values not drawn" in loss["title"]["subtitle"]
    assert [m["kind"] for m in loss["datasets"]["markers"]] == ["lr change"]
    assert loss["datasets"]["markers"][0]["label"] == "lr 0.0001 -> 0.001"


def test_chart_functions_skip_missing_data() -> None:
    tl = charts.Timeline(x_domain=(0, 10))
    assert charts.l0_chart(None, tl, as_fraction=True) is None
    assert charts.dead_chart(None, tl, as_fraction=True) is None
    assert charts.loss_chart(None, None, tl) is None
    assert charts.schedule_chart(None, None, tl) is None
    assert charts.frequency_chart(None) is None and charts.frequency_chart(np.zeros(5)) is None
    assert charts.input_dims_chart([], np.array([]), None, []) is None


def test_wide_input_dims_are_thinned_keeping_outliers(long_writeup) -> None:
    import dataclasses

    d_in = 20_000
    rng = np.random.default_rng(1)
    mean = rng.normal(0, 0.05, d_in)
    absmax = rng.uniform(3, 5, d_in)
    absmax[[7, 12_345]] = [300.0, 150.0]
    dims = pl.DataFrame({"dim": np.arange(d_in), "mean": mean, "std": np.ones(d_in), "absmax": absmax,
                         "outlier": np.isin(np.arange(d_in), [7, 12_345])})
    data = dataclasses.replace(long_writeup, input_dims=dims, feature_freq=None)
    fig = {f.id: f for f in build_figures(writeup_analysis().to_dict(), data)}["input_dims"]
    rows = fig.spec["datasets"]["dims"]
    assert len(rows) <= 2 * 2 * 2000 + 4
    assert {r["dim"] for r in fig.spec["datasets"]["outliers"]} == {7, 12_345}
    assert max(r["value"] for r in rows) == 300.0
