"""The synthetic-run generator: real run directories, deterministic, any length, with ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from click.testing import CliRunner

from sae_report.cli import main
from sae_report.fixtures import PHASE_NAMES, SCENARIOS, WRITEUP_RUNS, generate, write_run, write_siblings
from sae_report.ingest import load_run
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


def test_unknown_scenario_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        generate("nope")
    assert {"writeup", "sibling_low", "sibling_mid", "dead_000", "l0_001", "clean", "diverged", "thrash", "glitch",
            "late_shift", "healthy_noisy", "sawtooth", "early_collapse", "warmup_collapse", "nan_continue", "ends_inf",
            "l0_count", "sparse_logging", "jitter", "dead_sae", "lr_decay_rise", "resample_inferred",
            "healthy_warmup"} <= set(SCENARIOS)


# --- every scenario: written, read back, its truth consistent with what was written ---------------


def _read(tmp_path: Path, name: str, **kw):
    run = write_run(tmp_path, name, **kw)
    data = read_run(run.run_dir)
    m = data.metrics
    col = {c: m[c].to_numpy() for c in m.columns if m[c].null_count() < m.height}
    return run, data, col, col["step"] / run.steps


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_writes_a_run_the_readers_read_back_with_its_truth(tmp_path: Path, name: str) -> None:
    steps = 4_000 if SCENARIOS[name].log_every is None else 100_000
    run = write_run(tmp_path, name, steps=steps, rows=400, seed=1)
    data = read_run(run.run_dir)
    assert load_run(run.run_dir).metrics.equals(data.metrics)
    step = data.metrics["step"].to_list()
    assert step == sorted(set(step)) and step[0] == 0
    assert step[-1] == (steps if name != "diverged" else round(0.72 * steps))
    assert [e.kind for e in data.events][0] == "start" and data.events[-1].kind == "end"
    assert data.config["total_steps"] == steps and data.config["run_id"] == run.run_dir.name
    logged = {c for c in data.metrics.columns if data.metrics[c].null_count() < data.metrics.height}
    truth = run.truth
    for e in truth.must + truth.must_not_in:
        metrics = (e.metric,) if isinstance(e.metric, str) else e.metric or ()
        assert set(metrics) <= logged, (e, logged)
        assert 0 <= e.lo <= e.hi <= steps
    for p in truth.phases:
        assert p.metric in logged and set(p.names) <= PHASE_NAMES and 0 <= p.start_step <= p.end_step <= steps
    assert not (truth.no_alarm and any(e.severity in ("warn", "fail") for e in truth.must))
    assert not {e.kind for e in truth.must} & truth.must_not


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_fixtures_command_writes_every_scenario(tmp_path: Path, name: str) -> None:
    res = CliRunner().invoke(main, ["fixtures", str(tmp_path), "--scenario", name, "--steps", "2000", "--rows", "100"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert read_run(run_dir).metrics.height >= 2 and name in res.output


def test_healthy_noisy_has_35_percent_per_point_noise_around_a_settled_level(tmp_path: Path) -> None:
    _, _, c, t = _read(tmp_path, "healthy_noisy", steps=20_000, rows=2000, seed=2)
    late = np.log(c["l0_frac"][t > 0.3])
    assert 0.25 < np.std(late) < 0.35 and abs(np.median(late) - np.log(0.05)) < 0.05
    assert np.std(np.diff(c["dead_frac"][t > 0.3])) > 0.005 and np.std(np.diff(np.log(c["loss"][t > 0.3]))) > 0.15
    assert np.all(c["dead"][t <= 0.025] == 0)


def test_sawtooth_climbs_slowly_and_drops_sharply_every_8_percent(tmp_path: Path) -> None:
    _, _, c, t = _read(tmp_path, "sawtooth", steps=20_000, rows=2000, noise=0.0)
    l0 = c["l0_frac"]
    assert np.allclose(l0[(t > 0.2) & (t < 0.5)], 0.05, rtol=0.05)
    second = l0[t >= 0.5]
    assert second.max() / 0.05 == pytest.approx(1.4, abs=0.04) and second.min() / 0.05 == pytest.approx(0.6, abs=0.04)
    jumps = np.diff(np.log(second))
    drops = np.flatnonzero(jumps < -0.5)
    assert len(drops) == 6 and np.allclose(np.diff(t[t >= 0.5][drops + 1]), 0.08, atol=0.002)
    assert np.all(jumps[jumps > -0.5] >= 0)  # between the drops it only climbs


def test_early_collapse_troughs_inside_the_first_1_percent_and_recovers_by_10(tmp_path: Path) -> None:
    run, _, c, t = _read(tmp_path, "early_collapse", steps=100_000, rows=20_000, noise=0.0)
    first = t <= 0.01
    i = int(np.argmin(c["l0_frac"][first]))
    assert c["l0_frac"][first][i] == pytest.approx(0.003, rel=0.01) and t[first][i] == pytest.approx(0.008, abs=5e-4)
    assert c["dead_frac"][first][i] == pytest.approx(0.9, abs=0.01)
    assert np.all(c["dead"][c["step"] < run.config["dead_window"]] == 0)
    assert np.all(np.abs(c["l0_frac"][t >= 0.1] / 0.046 - 1) < 0.03)


def test_warmup_collapse_lr_rises_linearly_then_stays_and_no_event_says_so(tmp_path: Path) -> None:
    _, data, c, t = _read(tmp_path, "warmup_collapse", steps=100_000, rows=2000)
    lr = c["lr"]
    warm = t < 0.05
    assert np.all(np.diff(lr[warm]) > 0) and np.allclose(np.diff(lr[warm]), np.diff(lr[warm])[0])
    assert np.all(lr[~warm] == 1e-4)
    assert {e.kind for e in data.events} == {"start", "end"}
    i = int(np.argmin(c["l0_frac"]))
    assert 0.07 <= t[i] <= 0.09 and c["l0_frac"][i] < 0.007 and c["dead_frac"][i] > 0.8
    assert 0.02 < np.median(c["l0_frac"][t > 0.5]) < 0.035


def test_nan_continue_logs_garbage_from_60_percent_to_the_end(tmp_path: Path) -> None:
    run, data, c, t = _read(tmp_path, "nan_continue", steps=20_000, rows=2000)
    bad = c["step"] >= 12_000
    assert np.all(np.isnan(c["loss"][bad])) and np.all(np.isfinite(c["loss"][~bad]))
    assert np.all(np.isnan(c["mse"][bad])) and np.all(np.isnan(c["explained_variance"][bad]))
    assert np.all(c["l0"][bad] == 0) and np.all(c["l0_frac"][bad] == 0) and np.all(c["l0_frac"][~bad] > 0)
    assert len(set(c["dead"][bad].tolist())) == 1 and c["dead"][bad][0] == c["dead"][~bad][-1]
    assert bad.sum() == 801 and c["step"][-1] == 20_000
    assert {e.kind for e in data.events} == {"start", "end"} and data.summary["status"] == "completed"


def test_ends_inf_ends_with_about_1_percent_of_rows_of_inf_loss(tmp_path: Path) -> None:
    _, data, c, t = _read(tmp_path, "ends_inf", steps=20_000, rows=2000)
    inf = np.isinf(c["loss"])
    n = int(inf.sum())
    assert 15 <= n <= 25 and np.all(inf[-n:]) and np.all(np.isfinite(c["loss"][:-n]))
    grow = c["loss"][(t > 0.92) & ~inf]
    assert grow[-1] / grow[0] > 50
    (ev,) = [e for e in data.events if e.kind == "nonfinite"]
    assert ev.step == int(c["step"][-n]) and ev.data["loss"] == "inf"
    assert data.summary["status"] == "diverged" and data.events[-1].data["status"] == "diverged"


def test_l0_count_has_counts_only_and_no_d_sae(tmp_path: Path) -> None:
    run, data, c, _ = _read(tmp_path, "l0_count", steps=20_000, rows=2000, seed=4)
    assert "l0_frac" not in data.metrics.columns and "dead_frac" not in data.metrics.columns
    assert "d_sae" not in data.config and "d_sae" not in run.config
    clean = generate("clean", steps=20_000, rows=2000, seed=4)
    assert np.array_equal(c["l0"], clean.columns["l0"]) and np.array_equal(c["dead"], clean.columns["dead"])
    assert all(p.metric == "l0" for p in run.truth.phases) and run.truth.must[0].metric == "l0"


def test_sparse_logging_logs_every_1000_steps_and_shows_the_collapse(tmp_path: Path) -> None:
    _, _, c, t = _read(tmp_path, "sparse_logging", rows=5000)  # rows are ignored: the interval is fixed
    assert len(c["step"]) == 101 and np.all(np.diff(c["step"]) == 1000)
    assert c["l0_frac"][20] == pytest.approx(0.007, rel=0.25) and c["l0_frac"][20] < 0.3 * c["l0_frac"][10]


def test_jitter_moves_late_l0_by_one_feature_per_token(tmp_path: Path) -> None:
    run, _, c, t = _read(tmp_path, "jitter", steps=20_000, rows=2000, seed=3)
    assert run.config["d_sae"] == 49152
    late = c["l0"][t >= 0.7]
    assert np.all(late == np.round(late)) and late.max() - late.min() == 2
    assert np.all(np.abs(late - 2458) <= 1) and np.abs(np.diff(late)).max() <= 2
    assert 1 / 49152 == pytest.approx(0.00002, rel=0.05)  # one feature is 0.002% of the dictionary
    assert np.all(c["l0"][(t > 0.3) & (t < 0.7)] == 2458)


def test_dead_sae_ends_far_below_one_feature_per_token_reconstructing_nothing(tmp_path: Path) -> None:
    run, data, c, t = _read(tmp_path, "dead_sae", steps=3_000, rows=1500)
    after = t >= 0.05
    assert np.median(c["l0"][after]) == pytest.approx(0.33, rel=0.1) and c["l0"][after].max() < 1.0
    assert np.median(c["l0_frac"][after]) == pytest.approx(0.00004, rel=0.1)
    assert np.all(c["explained_variance"] <= 0) and np.all(c["dead_frac"][t > 0.1] > 0.95)
    assert c["loss"][-1] > 0.6 and run.config["l1_alpha"] == 1.0 and "target_l0" not in {
        k for k, v in data.config.items() if v is not None}


def test_lr_decay_rise_decays_the_lr_one_dead_window_before_the_rise(tmp_path: Path) -> None:
    run, data, c, t = _read(tmp_path, "lr_decay_rise", steps=200_000_000, rows=2000)
    lr = c["lr"]
    assert np.all(lr[t <= 0.79] == 1e-4) and np.all(np.diff(lr[t >= 0.79]) < 0)
    assert lr[-1] == pytest.approx(0, abs=1e-12)
    assert run.config["dead_window"] == 12_000_000 and 0.85 - 0.79 == pytest.approx(0.06)
    assert {e.kind for e in data.events} == {"start", "end"}
    dead = c["dead"]
    assert dead[-1] - dead[np.searchsorted(t, 0.85)] > 400 and np.all(dead[t <= 0.06] == 0)
    (rise,) = [e for e in run.truth.must if e.kind.value == "secondary_rise"]
    assert rise.inferred is True and rise.at_step == int(c["step"][np.argmax(lr < 1e-4)])


def test_resample_inferred_has_the_drops_but_no_resample_events(tmp_path: Path) -> None:
    run, data, c, t = _read(tmp_path, "resample_inferred", steps=50_000, rows=2000, noise=0.0)
    assert not [e for e in data.events if e.kind == "resample"] and data.config["resample_interval"] == 5_000
    drops = np.flatnonzero(np.diff(c["dead_frac"]) < -0.2)
    assert c["step"][drops + 1].tolist() == list(range(5_000, 50_000, 5_000))
    (thrash,) = run.truth.must
    assert thrash.inferred is True and thrash.at_step == tuple(range(5_000, 50_000, 5_000))


def test_healthy_warmup_has_no_deaths_until_the_readme_dead_window_fills(tmp_path: Path) -> None:
    run, data, c, t = _read(tmp_path, "healthy_warmup", steps=20_000, rows=2000)
    window = data.config["dead_window_steps"]
    assert window == 2_000 and "dead_window" not in data.config
    assert np.all(c["dead"][c["step"] < window] == 0) and np.all(c["dead"][t > 0.15] > 0)
    assert np.median(c["dead_frac"][t > 0.3]) == pytest.approx(0.03, abs=0.003)


def test_dead_000_logs_no_lr_and_diverged_logs_its_lr_change(tmp_path: Path) -> None:
    _, data, c, _ = _read(tmp_path, "dead_000", steps=2_000, rows=200)
    assert "lr" not in c and data.metrics["lr"].null_count() == data.metrics.height
    _, data, c, _ = _read(tmp_path, "diverged", steps=20_000, rows=2000)
    (ev,) = [e for e in data.events if e.kind == "lr_change"]
    assert ev.step == 11_600 and ev.data["value"] == 1e-3 and ev.data["reason"]
    assert np.all(c["lr"][c["step"] < ev.step] == 1e-4) and np.all(c["lr"][c["step"] >= ev.step] == 1e-3)
    (nf,) = [e for e in data.events if e.kind == "nonfinite"]
    assert nf.step == int(c["step"][np.argmax(~np.isfinite(c["loss"]))]) and nf.data["metrics"][0] == "loss"
