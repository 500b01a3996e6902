"""The detectors against generated runs with known ground truth, at 1K and 200M steps alike."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from sae_report.analysis import analyze
from sae_report.analysis.config import AnalyzerConfig
from sae_report.analysis.result import FindingKind
from sae_report.fixtures import SCENARIOS, write_run
from sae_report.runlog import RunData, read_run

K = FindingKind


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_matches_its_ground_truth_off_the_grid(tmp_path: Path, scenario: str) -> None:
    """A length, row count and seed the grid does not use (tests/test_claims.py runs the grid)."""
    steps = 300_000 if SCENARIOS[scenario].log_every is None else 3_000 * SCENARIOS[scenario].log_every
    run = write_run(tmp_path, scenario, steps=steps, seed=11, rows=1_300)
    analysis = analyze(read_run(run.run_dir))
    assert run.truth.problems(analysis) == []


def test_every_kind_is_detected_somewhere(tmp_path: Path) -> None:
    seen = set()
    for name in SCENARIOS:
        seen |= {f.kind for f in analyze(read_run(write_run(tmp_path, name, steps=50_000, rows=600).run_dir)).findings}
    assert seen == set(FindingKind)


@pytest.fixture(scope="module")
def writeup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("writeup")
    run = write_run(root, "writeup", steps=100_000, seed=0, rows=2000, with_stats=True)
    data = read_run(run.run_dir)
    return data, analyze(data)


def _one(analysis, kind: FindingKind, metric: str = "l0_frac"):
    hits = [f for f in analysis.findings if f.kind == kind and f.metric == metric]
    assert len(hits) == 1, [(f.kind, f.metric, f.step) for f in analysis.findings]
    return hits[0]


def test_writeup_collapse_recovery_oscillation_late_spike(writeup) -> None:
    _, a = writeup
    col = _one(a, K.COLLAPSE)
    assert col.evidence.mode == "undershoot" and 18_000 <= col.end_step <= 22_000
    assert col.evidence.trough == pytest.approx(0.007, rel=0.2)
    assert col.evidence.dead_frac_at_trough > 0.85
    rec = _one(a, K.RECOVERY)
    # dated where L0 starts climbing, after the trough, not at it
    assert col.end_step < rec.step <= 30_000 and 25_000 <= rec.end_step <= 50_000 and rec.evidence.partial is True
    assert rec.coincides_with is not None and rec.coincides_with.kind == "resample"
    osc = _one(a, K.OSCILLATION)
    assert 45_000 <= osc.step <= 60_000 and osc.end_step >= 95_000
    spike = _one(a, K.LATE_SPIKE)
    assert 89_500 <= spike.step <= 90_600 and spike.end_step < 96_000
    assert spike.evidence.peak == pytest.approx(0.0466, rel=0.15)
    assert spike.coincides_with is not None and (spike.coincides_with.kind, spike.coincides_with.step) == ("resample", 90_000)
    thrash = _one(a, K.RESAMPLE_THRASH, "dead_frac")
    assert thrash.evidence.died == 9 and 2_000 <= thrash.evidence.median_back <= 5_000
    assert not [f for f in a.findings if f.kind in (K.DIVERGED, K.DORMANCY)]
    # dead-fraction dips at resamples are resampling dynamics (see a.resampling), not late spikes
    assert not [f for f in a.findings if f.kind == K.LATE_SPIKE and f.metric == "dead_frac"]
    # every number of every sentence is a claim: no literal digits in the templates
    from sae_report.analysis.claims import literal_digits, render
    for f in a.findings:
        assert literal_digits(f.template) == "" and render(f.template, f.claims) == f.explanation


def test_writeup_phases_read_like_the_writeup(writeup) -> None:
    _, a = writeup
    got = [(p.name, p.start_step, p.end_step) for p in a.phases if p.metric == "l0_frac"]
    assert [g[0] for g in got] == ["Initial collapse", "Recovery & instability", "Oscillation with late spike"]
    assert got[0][1] == 0 and got[-1][2] == 100_000
    assert abs(got[0][2] - 20_000) <= 2_000 and abs(got[1][2] - 50_000) <= 5_000


def test_writeup_summary_step_table_targets_resampling(writeup) -> None:
    data, a = writeup
    l0 = a.summary["l0_frac"]
    assert l0.final == pytest.approx(data.metrics["l0_frac"][-1])
    second = data.metrics.filter(pl.col("step") >= 50_000)["l0_frac"]
    assert l0.second_half_mean == pytest.approx(second.mean()) and l0.second_half_std == pytest.approx(second.std(ddof=0))
    rows = {r.step: r for r in a.step_table}
    logged = set(data.metrics["step"].to_list())
    assert set(rows) <= logged and len(rows) == 11
    for st, r in rows.items():  # each row shows the values logged at exactly its step
        raw = data.metrics.filter(pl.col("step") == st).row(0, named=True)
        assert r.values["l0_frac"] == raw["l0_frac"] and r.values["dead"] == raw["dead"]
    assert rows[10_000].annotation == "<- Rapid decay"
    assert rows[20_000].annotation == "<- Collapse"
    assert "late_spike" in rows[90_000].tags and "closest_to_target" not in rows[90_000].tags
    t = {x.metric: x for x in a.targets}
    assert t["Final L0"].status == "warn" and 30 <= t["Final L0"].percent_of_target <= 60
    assert t["Second Half Avg L0"].status == "warn"
    assert t["Dead features"].status == "fail" and t["Dead features"].comparison == "<75%"
    assert t["Final Loss"].status == "ok" and t["Explained variance"].status == "none"
    assert [r.step for r in a.resampling] == list(range(10_000, 100_000, 10_000))
    assert all(r.outcome == "died" and r.dead_before > r.dead_after for r in a.resampling)
    assert [o["dim"] for o in a.input_outliers] == [17, 301]


def test_clean_run_raises_no_alarm_and_meets_its_targets(tmp_path: Path) -> None:
    a = analyze(read_run(write_run(tmp_path, "clean", steps=30_000, seed=3).run_dir))
    assert [f.severity for f in a.findings if f.severity != "info"] == []
    assert all(t.status in ("ok", "none") for t in a.targets)
    assert {t.metric: t.status for t in a.targets}["Final L0"] == "ok"
    assert {f.kind for f in a.findings} <= {K.SPARSIFICATION, K.PLATEAU, K.DORMANCY}
    assert a.verdict is not None and a.verdict.status == "ok"


def test_sparsification_of_the_001_curve_is_not_a_collapse(tmp_path: Path) -> None:
    a = analyze(read_run(write_run(tmp_path, "l0_001", steps=200_000_000, rows=1000).run_dir))
    sp = _one(a, K.SPARSIFICATION)
    assert sp.evidence.fall > 50 and sp.end_step <= 40_000_000
    nc = _one(a, K.NOT_CONVERGED)
    assert nc.evidence.late < nc.evidence.early
    assert "still falling" in nc.explanation


def test_dead_000_dormancy_plateau_secondary_rise(tmp_path: Path) -> None:
    a = analyze(read_run(write_run(tmp_path, "dead_000", steps=200_000_000, rows=2000).run_dir))
    dorm = _one(a, K.DORMANCY, "dead_frac")
    assert 10_000_000 <= dorm.end_step <= 18_000_000 and "dead window" in dorm.explanation
    assert any(f.kind == K.PLATEAU and f.metric == "dead_frac" and f.step <= 110e6 and f.end_step >= 160e6
               for f in a.findings)
    rise = _one(a, K.SECONDARY_RISE, "dead_frac")
    assert 165e6 <= rise.step <= 185e6
    assert [p.name for p in a.phases if p.metric == "dead_frac"] == [
        "Dormancy", "Rapid accumulation", "Plateau", "Secondary rise"]


def test_diverged_names_the_lr_change_and_fails_the_loss_target(tmp_path: Path) -> None:
    a = analyze(read_run(write_run(tmp_path, "diverged", steps=20_000).run_dir))
    div = _one(a, K.DIVERGED, "loss")
    assert div.severity == "fail" and div.evidence.first_nonfinite == 13_600
    assert div.coincides_with is not None and div.coincides_with.kind == "lr_change"
    assert {t.metric: t.status for t in a.targets}["Final Loss"] == "fail"
    assert a.summary["loss"].final != a.summary["loss"].final  # the log ends in NaN: so does "final"
    assert a.phases[-1].name == "Divergence"
    assert a.verdict is not None and a.verdict.status == "fail"


def test_missing_metrics_are_skipped_with_reasons(tmp_path: Path) -> None:
    run = write_run(tmp_path, "clean", steps=5_000, rows=300)
    data = read_run(run.run_dir)
    only_loss = RunData(path=data.path, run_id="x", config={}, metrics=data.metrics.select("step", "loss"))
    a = analyze(only_loss)
    reasons = {s.analysis: s.reason for s in a.skipped}
    assert reasons["collapse"] == "no L0 or dead-feature metric in the log"
    assert reasons["dormancy"].startswith("no dead-feature metric")
    assert "diverged" not in reasons
    assert [t.metric for t in a.targets] == ["Final Loss"]


def test_l0_count_with_d_sae_override_is_reported_both_ways(tmp_path: Path) -> None:
    run = write_run(tmp_path, "clean", steps=5_000, rows=300)
    data = read_run(run.run_dir)
    counts = RunData(path=data.path, run_id="x", config={"target_l0": 0.05},
                     metrics=data.metrics.select("step", "l0", "loss"))
    without = analyze(counts)
    assert "l0_frac" in {s.analysis for s in without.skipped}
    a = analyze(counts, overrides={"d_sae": 8192, "target_l0": "409.6"})
    assert a.run.d_sae == 8192
    assert a.summary["l0_frac"].final == pytest.approx(a.summary["l0"].final / 8192)
    assert {t.metric: t.status for t in a.targets}["Final L0"] == "ok"


def test_target_override_changes_the_verdict(tmp_path: Path) -> None:
    data = read_run(write_run(tmp_path, "clean", steps=5_000, rows=300).run_dir)
    assert {t.metric: t.status for t in analyze(data, overrides={"target_l0": 0.5}).targets}["Final L0"] == "fail"


def test_analyzer_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="late_frac must be a fraction"):
        AnalyzerConfig(late_frac=1.5)
    with pytest.raises(ValueError, match="bins must be at least 20"):
        AnalyzerConfig(bins=5)
    with pytest.raises(ValueError, match="must nest"):
        AnalyzerConfig(target_ok_band=(0.3, 1.2))


def test_analysis_json_keys(writeup) -> None:
    doc = writeup[1].to_dict()
    assert doc["schema_version"] == 2
    assert set(doc) >= {"schema_version", "run", "summary", "targets", "phases", "findings", "recommendations",
                        "verdict", "resampling_summary", "root_causes", "interventions"}
    f = doc["findings"][0]
    assert set(f) == {"kind", "metric", "step", "end_step", "severity", "evidence", "coincides_with", "explanation",
                      "template", "claims"}
    assert set(doc["targets"][0]) >= {"metric", "result", "target", "percent_of_target", "status", "claim"}
    assert set(doc["phases"][0]) == {"name", "metric", "start_step", "end_step", "claims"}
    assert set(doc["step_table"][0]) >= {"step", "values"}
    assert "final" in doc["summary"]["l0_frac"]
