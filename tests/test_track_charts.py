"""SAE-Track charts: checkpoints named by their step sit on a log step axis with thinned labels;
other names on a categorical axis that writes at most MAX_LABELS of them."""

from __future__ import annotations

import dataclasses

from sae_report.track import analyze_series, read_manifest
from sae_report.report.charts.track import CHARTS, MAX_LABELS, checkpoint_steps
from sae_report.track.fixtures import write_series


def _analysis(tmp_path, labels=None):
    write_series(tmp_path)
    manifest = read_manifest(tmp_path)
    if labels is not None:
        entries = [dataclasses.replace(e, label=labels(e.index)) for e in manifest.checkpoints]
        manifest = dataclasses.replace(manifest, checkpoints=entries)
    return analyze_series(manifest)


def _x_encodings(spec):
    if isinstance(spec, dict):
        enc = spec.get("encoding", {})
        if "x" in enc:
            yield enc["x"]
        for v in spec.values():
            yield from _x_encodings(v)
    elif isinstance(spec, list):
        for v in spec:
            yield from _x_encodings(v)


def test_step_named_checkpoints_are_on_a_log_axis_with_thinned_labels(tmp_path):
    t = _analysis(tmp_path)
    assert checkpoint_steps(t) == {f"step {100 * (k + 1)}": 100 * (k + 1) for k in range(len(t.checkpoints))}
    for name in ("drift", "matched", "l0_dead"):
        xs = list(_x_encodings(CHARTS[name](t).to_dict()))
        assert xs and all(x["field"] == "step" and x["type"] == "quantitative" for x in xs), name
        assert all(x["scale"]["type"] == "log" and x["axis"]["labelOverlap"] == "greedy" for x in xs), name


def test_step_zero_uses_symlog_and_other_names_a_thinned_category_axis(tmp_path):
    t = _analysis(tmp_path / "zero", labels=lambda i: f"LM step {0 if i == 0 else 2 ** i}")  # the built-in LM's names
    assert checkpoint_steps(t)["LM step 0"] == 0
    xs = list(_x_encodings(CHARTS["drift"](t).to_dict()))
    assert all(x["scale"]["type"] == "symlog" for x in xs)
    names = [f"ckpt-{chr(97 + i)}" for i in range(30)]
    t = _analysis(tmp_path / "names", labels=lambda i: names[i])
    xs = list(_x_encodings(CHARTS["drift"](t).to_dict()))
    assert all(x["type"] == "nominal" and len(x["axis"]["values"]) <= MAX_LABELS for x in xs)
