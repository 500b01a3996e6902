"""SAE-Track analysis (numpy only) against synthetic series with known ground truth."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from sae_report.cli import main
from sae_report.runlog import RunLogError
from sae_report.track import (
    analyze_series,
    compute_drift,
    lifecycle,
    load_weights,
    match_by_assignment,
    match_by_index,
    read_manifest,
    segment_levels,
)
from sae_report.report.track import write_track_report
from sae_report.track.activations import load_sample
from sae_report.track.fixtures import DEFAULT_BOUNDARIES, write_series
from sae_report.track.speedup import Curve, running_median, tokens_to_reach


def _unit(w):
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def test_assignment_recovers_a_permutation_that_index_matching_misses():
    rng = np.random.default_rng(1)
    a = _unit(rng.normal(size=(40, 24)))
    perm = rng.permutation(40)
    b = _unit(a[perm] + 0.02 * rng.normal(size=a.shape))
    asg = match_by_assignment(a, b, threshold=0.9)
    # feature i of a sits at row where perm == i in b
    assert np.array_equal(asg.partner, np.argsort(perm))
    assert asg.matched_fraction == 1.0
    assert match_by_index(a, b, threshold=0.9).matched_fraction < 0.2


def test_matched_fraction_counts_only_pairs_above_threshold():
    a = np.eye(4)
    b = np.array([[1, 0, 0, 0], [0, 0.8, 0.6, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=float)
    m = match_by_index(a, b, threshold=0.9)
    assert m.matched_fraction == 0.25  # only row 0 stays above 0.9
    np.testing.assert_allclose(m.cosine, [1.0, 0.8, 0.0, 0.0])
    assert match_by_assignment(a, b, threshold=0.9).matched_fraction == 0.75


def test_segment_levels_finds_two_known_changes_and_none_in_a_flat_series():
    x = np.array([0.3, 0.32, 0.29, 0.08, 0.07, 0.09, 0.08, 0.005, 0.004, 0.006])
    assert segment_levels(x) == [0, 3, 7]
    flat = 0.1 + 0.001 * np.random.default_rng(0).normal(size=12)
    assert segment_levels(flat) == [0] or len(segment_levels(flat, min_gain=0.9)) == 1


def test_drift_phases_match_the_generated_boundaries(tmp_path):
    series = write_series(tmp_path)
    weights = [load_weights(e.run_dir) for e in series.manifest.checkpoints]
    drift = compute_drift([w.W_dec for w in weights])
    assert [p.name for p in drift.phases] == ["initial drift", "semantic stabilisation", "final stabilisation"]
    assert tuple(p.start for p in drift.phases[1:]) == DEFAULT_BOUNDARIES
    medians = [s.quantiles["q50"] for s in drift.per_checkpoint]
    assert medians[-1] == pytest.approx(1.0)
    assert all(b >= a - 1e-9 for a, b in zip(medians, medians[1:]))  # drifts towards the final direction
    assert medians[0] == pytest.approx(np.cos(0.935), abs=1e-5)


def test_lifecycle_counts_births_and_deaths():
    masks = [np.array([0, 0, 1, 1], bool), np.array([1, 0, 1, 0], bool), np.array([1, 1, 1, 0], bool)]
    lc = lifecycle(masks)
    assert lc.births == [0, 1, 1] and lc.deaths == [0, 1, 0]
    assert lc.alive == [2, 2, 3] and lc.born_late == 2 and lc.died_late == 1


def test_tokens_to_reach_uses_the_smoothed_curve():
    tokens = np.arange(1, 11) * 100.0
    values = np.array([5, 4, 0.5, 3, 2.5, 1.9, 1.8, 1.2, 1.1, 1.0])  # one noisy dip at 300
    assert tokens_to_reach(Curve(tokens, values), 2.0, higher_is_better=False, window=1) == 300
    assert tokens_to_reach(Curve(tokens, values), 2.0, higher_is_better=False, window=3) == 700  # median(2.5, 1.9, 1.8)
    assert tokens_to_reach(Curve(tokens, values), 0.1, higher_is_better=False, window=3) is None
    np.testing.assert_allclose(running_median(np.array([1.0, 3.0, 2.0]), 2), [1.0, 2.0, 2.5])


def test_series_analysis_reports_known_speedup_matching_and_lifecycle(tmp_path):
    series = write_series(tmp_path)
    t = analyze_series(read_manifest(tmp_path))
    loss = next(s for s in t.speedups if s.metric == "loss")
    target = loss.target
    exact_fresh = series.fresh_curve.tokens_to(target)
    exact_rec = series.recurrent_curve.tokens_to(target)
    step_f = series.fresh_curve.tokens / series.fresh_curve.points
    step_r = series.recurrent_curve.tokens / series.recurrent_curve.points
    # first logged point at/after the exact crossing, delayed by the running median (window 5 -> 2 points)
    assert exact_fresh <= loss.fresh_tokens <= exact_fresh + 4 * step_f
    assert exact_rec <= loss.recurrent_tokens <= exact_rec + 4 * step_r
    assert loss.ratio == pytest.approx(loss.recurrent_tokens / loss.fresh_tokens)
    assert loss.ratio < 0.1
    cons = [m for m in t.matches if m.kind == "consecutive"]
    assert len(cons) == 9
    # angle steps 0.3 early (cos 0.955 >= 0.9): all matched by index; identities kept
    assert all(m.by_index == 1.0 and m.identity_kept == 1.0 for m in cons)
    ctrl = next(m for m in t.matches if m.kind == "fresh_vs_recurrent")
    assert ctrl.by_assignment == 1.0 and ctrl.identity_kept < 0.2 and ctrl.by_index < 0.2
    assert t.lifecycle.births == [0, 0, 0, 0, 0, 4, 0, 0, 0, 0]
    assert t.lifecycle.deaths == [0, 0, 0, 0, 0, 0, 4, 0, 0, 0]
    assert [c.alive for c in t.checkpoints] == [int(m.sum()) for m in series.alive]


def test_track_json_and_report_are_written_and_escape_labels(tmp_path):
    write_series(tmp_path)
    manifest = read_manifest(tmp_path)
    bad = "<script>alert(1)</script>"
    entries = [type(e)(**{**e.__dict__, "label": f"{bad} {e.index}"}) for e in manifest.checkpoints]
    t = analyze_series(type(manifest)(**{**manifest.__dict__, "checkpoints": entries}))
    files = write_track_report(t, tmp_path / "track", formats=("md", "html", "json"))
    names = {f.name for f in files}
    assert {"track.json", "report.md", "report.html", "drift.svg", "matched.svg", "l0_dead.svg", "speedup.svg"} <= names
    data = json.loads((tmp_path / "track" / "track.json").read_text())
    assert data["schema_version"] == 1 and data["speedups"][0]["ratio"] < 0.1
    assert [p["name"] for p in data["drift"]["phases"]] == ["initial drift", "semantic stabilisation", "final stabilisation"]
    html = (tmp_path / "track" / "report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; 0" in html
    assert html.count("<svg") == 4
    # No script at all; the one style sheet allowed by its hash (the report's CSP builder).
    import base64
    import hashlib

    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">', html).group(1)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert "unsafe" not in csp and "script-src 'none'" in csp and f"style-src 'sha256-{digest}'" in csp
    assert len(styles) == 1 and "<script" not in html and ' style="' not in html
    md = (tmp_path / "track" / "report.md").read_text()
    assert not re.search(r"(?<!\\)<script>", md) and "\\<script>alert(1)\\</script> 0" in md
    assert "![Decoder drift](charts/drift.svg)" in md and "![L0 and dead features](charts/l0_dead.svg)" in md
    assert not list((tmp_path / "track").glob(".*.tmp"))


def test_cli_reanalyze_prints_headline_and_writes_report(tmp_path):
    write_series(tmp_path)
    res = CliRunner().invoke(main, ["track", "--reanalyze", "--out", str(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert "At step 1000: the recurrently initialised SAE reached" in res.output and "fewer)" in res.output
    assert "Decoder drift phases: initial drift step 100 to step 300" in res.output
    assert (tmp_path / "track" / "track.json").exists() and not (tmp_path / "track" / "report.html").exists()


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["track", "--reanalyze", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == f"Error: {tmp_path}: no track/series.json (not a track output folder)"
    res = runner.invoke(main, ["track"])
    assert res.exit_code == 2 and "give activation sources (one per checkpoint, in training order) or --builtin" in res.output
    res = runner.invoke(main, ["track", str(tmp_path / "a.npy")])
    assert res.exit_code == 2 and "at least two activation sources" in res.output
    res = runner.invoke(main, ["track", "--reanalyze", "--format", "pdf"])
    assert res.exit_code == 2 and "unknown format 'pdf'" in res.output


def test_cli_bad_activation_file_exits_2_naming_it(tmp_path):
    good = tmp_path / "a.npy"
    np.save(good, np.zeros((10, 4), np.float32))
    bad = tmp_path / "b.npy"
    bad.write_bytes(b"not numpy")
    pytest.importorskip("torch")
    res = CliRunner().invoke(main, ["track", str(good), str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines()[-1].startswith(f"Error: {bad}: cannot read activations (")
    assert not (tmp_path / "o").exists()


def test_activation_sample_reads_shards_in_order(tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    np.save(d / "00.npy", np.arange(12, dtype=np.float32).reshape(6, 2))
    np.save(d / "01.npy", np.arange(12, 20, dtype=np.float32).reshape(4, 2))
    x = load_sample(d, 100)
    assert x.shape == (10, 2) and x[-1, 1] == 19
    assert load_sample(d, 4, seed=3).shape == (4, 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunLogError, match=f"^{empty}: no activation shards"):
        load_sample(empty, 4)
    with pytest.raises(RunLogError, match="missing: no such file or directory"):
        load_sample(tmp_path / "missing", 4)


def test_short_series_get_fewer_phases():
    from sae_report.track.drift import drift_phases

    phases, note = drift_phases(np.array([0.9, 0.95, 0.99]))
    assert phases == [] and note == "too few checkpoints to cut drift phases (4; need at least 5, and 7 for all three)"
    phases, note = drift_phases(np.array([0.7, 0.72, 0.99, 0.995]))
    assert [(p.name, p.start, p.end) for p in phases] == [("initial drift", 0, 2), ("final stabilisation", 2, 4)]
    assert note == ""
    phases, note = drift_phases(np.array([0.99, 0.99, 0.7, 0.7]))
    assert [p.name for p in phases] == ["early low drift", "main drift"]
    assert note.startswith("drift does not fall from phase to phase here (drift per checkpoint 0.01, 0.3)")
    # rise then fall, as on the built-in LM: early low drift, main drift, final stabilisation
    phases, _ = drift_phases(np.array([0.99, 0.99, 0.95, 0.95, 0.96, 0.995, 0.995]))
    assert [(p.name, p.start) for p in phases] == [("early low drift", 0), ("main drift", 2), ("final stabilisation", 5)]
