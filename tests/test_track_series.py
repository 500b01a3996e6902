"""SAE-Track training end to end with tiny SAEs: the series, its controls, reuse, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from sae_report.cli import main  # noqa: E402
from sae_report.runlog import read_run  # noqa: E402
from sae_report.track import analyze_series, read_manifest  # noqa: E402
from trainer.track import TrackConfig, resolve_controls, train_series  # noqa: E402

SAE = {"total_steps": 200, "batch_size": 128, "d_sae": 64, "l1_alpha": 0.01, "checkpoint_every": 0,
       "dead_window": 50, "threads": 1, "shuffle_buffer_tokens": 4096, "shuffle_block_tokens": 256}


def _write_acts(folder, n_ckpt=3, n=4096, d=16, seed=0):
    """Sparse combinations of a dictionary that rotates a little from checkpoint to checkpoint."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(48, d))
    drift = rng.normal(size=(48, d))
    codes = rng.random((n, 48)) < 0.06
    mags = rng.exponential(1.0, size=(n, 48)) * codes
    paths = []
    for k in range(n_ckpt):
        dic = base + 0.15 * k * drift
        dic /= np.linalg.norm(dic, axis=1, keepdims=True)
        x = (mags @ dic + 0.01 * rng.normal(size=(n, d))).astype(np.float32)
        paths.append(folder / f"ckpt_{k}.npy")
        np.save(paths[-1], x)
    return paths


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("track")
    acts = _write_acts(root)
    result = train_series(acts, root / "out", TrackConfig(base=SAE, fraction=0.05))
    return acts, root / "out", result


def test_series_runs_are_ordinary_run_dirs_initialised_from_the_previous(trained):
    acts, out, result = trained
    m = result.manifest
    assert [e.run_dir.name for e in m.checkpoints] == ["sae_00", "sae_01", "sae_02"]
    assert [e.init for e in m.checkpoints] == ["scratch", "recurrent", "recurrent"]
    assert [c.run_dir.name for c in m.controls] == ["fresh_02"]
    runs = [read_run(e.run_dir) for e in m.checkpoints]
    assert runs[0].config["total_steps"] == 200 and runs[1].config["total_steps"] == 10
    assert runs[1].config["init_from"] == str(out / "sae_00")
    assert runs[2].config["data_path"] == str(acts[2].resolve())
    # the warm start begins far below where the first SAE began
    first = [r.metrics["loss"][0] for r in runs]
    assert first[1] < 0.5 * first[0] and first[2] < 0.5 * first[0]
    ctrl = read_run(m.controls[0].run_dir)
    assert ctrl.config["seed"] == 1002 and ctrl.config.get("init_from") is None


def test_probe_continues_the_series_run_exactly(trained):
    _, out, result = trained
    probe = result.manifest.probes[0]
    assert (probe.index, probe.run_dir.name, probe.budget_tokens) == (2, "probe_02", 50 * 128)
    series_run, probe_run = read_run(out / "sae_02"), read_run(probe.run_dir)
    assert probe_run.config["init_from"] == str(out / "sae_01") and probe_run.config["total_steps"] == 50
    # same start, seed and data order: its first 10 steps are the series' run, step for step
    np.testing.assert_allclose(probe_run.metrics["loss"][:10].to_numpy(), series_run.metrics["loss"].to_numpy(), rtol=1e-6)


def test_recurrent_sae_reaches_the_fresh_loss_with_a_fraction_of_the_tokens(trained):
    _, out, _ = trained
    t = analyze_series(read_manifest(out), n_eval=2048)
    loss = next(s for s in t.speedups if s.metric == "loss")
    assert loss.recurrent_run == "probe" and loss.recurrent_budget == 50 * 128
    assert loss.fresh_tokens and loss.recurrent_tokens is not None
    assert loss.ratio <= 0.1
    cons = [m for m in t.matches if m.kind == "consecutive"]
    assert all(m.by_index >= 0.9 for m in cons)  # identities kept across a short fine-tune


def test_second_call_reuses_completed_runs(trained):
    acts, out, _ = trained
    again = train_series(acts, out, TrackConfig(base=SAE, fraction=0.05))
    assert again.trained == [] and len(again.reused) == 5  # 3 series SAEs, 1 control, 1 probe
    changed = train_series(acts, out, TrackConfig(base=SAE, fraction=0.05, controls=()))
    assert changed.trained == [] and changed.manifest.controls == []


def test_resolve_controls():
    assert resolve_controls(None, 5) == [4]
    assert resolve_controls([2, -1], 5) == [2, 4]
    with pytest.raises(ValueError, match="control checkpoint 0 is outside 1..4"):
        resolve_controls([0], 5)


def test_cli_builtin_tiny_study_end_to_end(tmp_path):
    runner = CliRunner()
    args = ["track", "--builtin", "--lm-preset", "tiny", "--lm-steps", "30", "--lm-checkpoints", "3", "--steps", "100",
            "--batch-size", "128", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
            "--threads", "1", "--eval-tokens", "2048"]
    res = runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "reached the fresh SAE's final loss" in res.output or "did not reach the fresh SAE's final loss" in res.output
    data = json.loads((tmp_path / "out" / "track" / "track.json").read_text())
    assert [c["label"] for c in data["checkpoints"]] == ["LM step 10", "LM step 20", "LM step 30"]
    assert data["source"]["kind"].startswith("built-in byte-level LM")
    assert (tmp_path / "out" / "track" / "report.html").exists()
    res2 = runner.invoke(main, args)
    assert res2.exit_code == 0 and "reusing cached series" in res2.output and "sae_00: reusing the completed run" in res2.output


def test_cli_usage_errors(tmp_path):
    runner = CliRunner()
    a = tmp_path / "a.npy"
    np.save(a, np.zeros((8, 4), np.float32))
    res = runner.invoke(main, ["track", str(a), str(a), "--builtin"])
    assert res.exit_code == 2 and "give activation sources (one per checkpoint) or --builtin, not both" in res.output
    res = runner.invoke(main, ["track", str(a), str(a), "--fraction", "0"])
    assert res.exit_code == 2 and "--fraction must be in (0, 1], got 0.0" in res.output
    res = runner.invoke(main, ["track", str(a), str(a), "--set", "l1_alpah=1", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "unknown key 'l1_alpah' (did you mean 'l1_alpha'?)" in res.output
    b = tmp_path / "b.npy"
    np.save(b, np.zeros((8, 5), np.float32))
    res = runner.invoke(main, ["track", str(a), str(b), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == f"Error: {a}: activation sources have different widths [4, 5]; a series needs one d_in"


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    acts = _write_acts(tmp_path, n_ckpt=2, n=256)
    foreign = tmp_path / "out" / "sae_00"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="sae_00: exists and was not written by this track series; choose another --out"):
        train_series(acts, tmp_path / "out", TrackConfig(base=SAE))
    assert (foreign / "notes.txt").read_text() == "mine"


def test_recurrent_runs_drop_the_warmups(tmp_path):
    acts = _write_acts(tmp_path, n_ckpt=2, n=1024)
    base = {**SAE, "total_steps": 40, "l1_warmup_steps": 20, "lr_schedule": "warmup", "lr_warmup_steps": 10}
    m = train_series(acts, tmp_path / "out", TrackConfig(base=base, fraction=0.25, controls=())).manifest
    first, second = (read_run(e.run_dir).config for e in m.checkpoints)
    assert (first["l1_schedule"], first["l1_warmup_steps"], first["lr_schedule"]) == ("warmup", 20, "warmup")
    assert (second["l1_schedule"], second["l1_warmup_steps"], second["lr_schedule"], second["total_steps"]) == \
        ("constant", 0, "constant", 10)
