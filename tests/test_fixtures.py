"""The synthetic-run generator: real run directories, deterministic, any length, with ground truth."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from sae_report.analysis import analyze
from sae_report.analysis.result import FindingKind
from sae_report.fixtures import SCENARIOS, WRITEUP_RUNS, generate, write_run, write_siblings
from sae_report.runlog import read_run


def test_same_seed_same_curves_other_seed_other_noise() -> None:
    a = generate("writeup", steps=10_000, seed=3, rows=500)
    b = generate("writeup", steps=10_000, seed=3, rows=500)
    c = generate("writeup", steps=10_000, seed=4, rows=500)
    assert np.array_equal(a.columns["l0_frac"], b.columns["l0_frac"])
    assert not np.array_equal(a.columns["l0_frac"], c.columns["l0_frac"])


@pytest.mark.parametrize("steps,rows", [(1_000, 2000), (200_000_000, 1500), (37_777, 400)])
def test_any_length_is_logged_in_about_rows_rows(steps: int, rows: int) -> None:
    g = generate("clean", steps=steps, rows=rows)
    step = g.columns["step"]
    assert step[0] == 0 and step[-1] == steps
    assert np.all(np.diff(step) > 0)
    assert len(step) <= min(rows, steps) + 2


def test_writeup_curve_passes_through_the_writeups_numbers() -> None:
    g = generate("writeup", steps=100_000, seed=0, rows=1000, noise=0.0)
    step, l0, dead = g.columns["step"], g.columns["l0_frac"], g.columns["dead_frac"]
    at = {int(s): (float(l), float(d)) for s, l, d in zip(step, l0, dead)}
    assert at[0][0] == pytest.approx(0.504, rel=1e-3)
    assert at[20_000][0] == pytest.approx(0.007, rel=1e-3)
    assert at[90_000][0] == pytest.approx(0.0466, rel=1e-3)
    assert at[100_000][0] == pytest.approx(0.0218, rel=1e-3)
    assert at[100_000][1] == pytest.approx(0.89, abs=0.005)
    assert g.config["l1_alpha"] == 0.065 and g.config["resample_interval"] == 10_000 and g.config["target_l0"] == 0.05
    assert [e["step"] for e in g.events if e["kind"] == "resample"] == list(range(10_000, 100_000, 10_000))


def test_write_run_is_a_real_run_directory_with_events_resume_and_stats(tmp_path: Path) -> None:
    run = write_run(tmp_path, "writeup", steps=20_000, rows=400, resume_at=0.5, with_stats=True)
    assert run.run_dir == tmp_path / "train_e01c6183"
    data = read_run(run.run_dir)
    steps = data.metrics["step"].to_list()
    assert steps == sorted(set(steps)) and steps[-1] == 20_000
    assert any("superseded" in n for n in data.notes)
    # the re-run stretch logged before the resume (loss x1.5) was replaced by the later write
    fresh = generate("writeup", steps=20_000, rows=400)
    loss = dict(zip(data.metrics["step"].to_list(), data.metrics["loss"].to_list()))
    assert loss[10_500] == pytest.approx(float(fresh.columns["loss"][fresh.columns["step"] == 10_500][0]))
    kinds = [e.kind for e in data.events]
    assert kinds.count("resume") == 1 and kinds.count("resample") == 9
    assert data.input_dims is not None and data.input_dims.height == 512
    assert data.feature_freq is not None and data.feature_freq.shape == (8192,)


def test_siblings_are_the_writeups_three_runs(tmp_path: Path) -> None:
    runs = write_siblings(tmp_path, steps=5_000, rows=200)
    assert sorted(r.run_dir.name for r in runs) == sorted(WRITEUP_RUNS.values())
    finals = {r.config["l1_alpha"]: read_run(r.run_dir).metrics["l0_frac"][-1] for r in runs}
    assert finals[0.005] > finals[0.05] > finals[0.065]


def test_truth_reports_a_missing_and_a_forbidden_finding(tmp_path: Path) -> None:
    run = write_run(tmp_path, "writeup", steps=10_000, rows=500)
    analysis = analyze(read_run(run.run_dir))
    assert run.truth.problems(analysis) == []
    without = dataclasses.replace(analysis, findings=[f for f in analysis.findings if f.kind != FindingKind.COLLAPSE])
    assert any(p.startswith("missing collapse") for p in run.truth.problems(without))
    bad = dataclasses.replace(analysis.findings[0], kind=FindingKind.DIVERGED)
    assert any(p.startswith("unexpected diverged") for p in run.truth.problems(
        dataclasses.replace(analysis, findings=[*analysis.findings, bad])))


def test_unknown_scenario_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        generate("nope")
    assert {"writeup", "sibling_low", "sibling_mid", "dead_000", "l0_001", "clean", "diverged", "thrash"} <= set(SCENARIOS)
