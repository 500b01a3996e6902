"""W&B: offline run files (committed, and written here by wandb in offline mode), history exports
(full and bucketed UI), run choice, truncation, and the error without the wandb package."""

from __future__ import annotations

import shutil
import sys

import pytest
from ingest_support import INGEST, assert_matches, cli, mk

from sae_report.ingest import load_run
from sae_report.ingest import wandb as wb
from sae_report.runlog import RunLogError

WB = INGEST / "wandb"
RUN_FILE = next(WB.glob("wandb/offline-run-*/run-*.wandb"))
RUN_ID = RUN_FILE.stem.removeprefix("run-")


def test_offline_run_committed_fixture():
    pytest.importorskip("wandb")
    data = load_run(WB)
    assert (data.source, data.sampled, data.run_id) == ("wandb", False, RUN_ID)
    assert_matches(data, mk.truth(**mk.FIXTURE))
    assert data.config["d_sae"] == 64 and data.config["l1_alpha"] == 5.0 and data.config["learning_rate"] == 3e-4
    assert data.notes[0] == (f"source: W&B run {RUN_ID} (saelens-style), 41 history record(s) from {RUN_FILE.name}; "
                             "41 rows, steps 0-2000, 10 of 10 logged metric(s) used; full history, not sampled")
    assert ("metrics logged at different cadences (every 50, every 1000, every 2000 steps), joined on step; "
            "a metric is null on the steps it was not logged at (never forward-filled)") in data.notes
    # the same run through the file, the run directory and the wandb/ directory
    for p in (RUN_FILE, RUN_FILE.parent, WB / "wandb"):
        assert load_run(p).metrics.equals(data.metrics, null_equal=True)


def test_without_wandb_package_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    monkeypatch.setitem(sys.modules, "wandb.proto", None)
    res = cli("import", RUN_FILE.parent, "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert res.stderr == (f"Error: {RUN_FILE}: reading a W&B run file needs the wandb package: "
                          "pip install 'sae-report[wandb]'\n")


def test_offline_run_written_by_wandb(tmp_path):
    pytest.importorskip("wandb")
    points = mk.truth(total=200, every=10, dead_every=100, rare_every=200)
    run_dir = mk.write_wandb(tmp_path, points)
    data = load_run(tmp_path)  # the project directory holding wandb/
    assert data.source == "wandb" and data.run_id == run_dir.name.rsplit("-", 1)[1]
    assert_matches(data, points)
    assert data.config["d_sae"] == 64 and data.config["l1_alpha"] == 5.0
    assert data.metrics["elapsed_s"].is_not_null().all()  # from W&B's _runtime
    # a second run in the same wandb/ directory: --run picks, no --run lists the ids
    other = tmp_path / "wandb" / RUN_FILE.parent.name
    shutil.copytree(RUN_FILE.parent, other)
    ids = [d.name.rsplit("-", 1)[1] for d in sorted([run_dir, other], key=lambda d: d.name)]
    res = cli("import", tmp_path / "wandb", "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert res.stderr == f"Error: {tmp_path / 'wandb'}: holds 2 W&B runs; pick one with --run ({', '.join(ids)})\n"
    picked = load_run(tmp_path / "wandb", run=RUN_ID)
    assert picked.metrics.height == 41 and picked.run_id == RUN_ID


def test_framing_without_wandb(tmp_path):
    # the LevelDB-style framing is ours: checked here with no wandb package needed
    notes: list[str] = []
    records = wb._records(RUN_FILE, notes)
    assert notes == [] and len(records) > 41  # 41 history records plus run, config, summary, exit...
    raw = RUN_FILE.read_bytes()
    cut = tmp_path / "run-cut.wandb"
    cut.write_bytes(raw[: len(raw) - 100])
    assert len(wb._records(cut, notes)) < len(records)
    assert len(notes) == 1 and notes[0].startswith("run-cut.wandb: cut short after ")
    flipped = bytearray(raw)
    flipped[40] ^= 0xFF  # inside the first record's payload: its CRC no longer matches
    bad = tmp_path / "run-bad.wandb"
    bad.write_bytes(bytes(flipped))
    notes.clear()
    assert wb._records(bad, notes) == []
    assert notes == ["run-bad.wandb: corrupt record after 0 record(s); read the ones before it"]


def test_truncated_run_file(tmp_path):
    pytest.importorskip("wandb")
    run = tmp_path / "offline-run-20260101_000000-abc123"
    run.mkdir()
    raw = RUN_FILE.read_bytes()
    (run / "run-abc123.wandb").write_bytes(raw[: len(raw) // 2])
    data = load_run(run)
    assert 0 < data.metrics.height < 41
    assert any(n.startswith("run-abc123.wandb: cut short after ") for n in data.notes)
    assert "no exit record: the run was still running, or was killed before W&B closed it" in data.notes
    (run / "run-abc123.wandb").write_bytes(raw[:7])
    with pytest.raises(RunLogError) as err:
        load_run(run)
    assert str(err.value) == f"{run / 'run-abc123.wandb'}: no history records (nothing was logged)"
    (run / "run-abc123.wandb").write_bytes(b"not wandb")
    res = cli("import", run, "--out", tmp_path / "out")
    assert (res.exit_code, res.stderr) == (2, f"Error: {run / 'run-abc123.wandb'}: not a W&B run file (no :W&B header)\n")


def test_files_config_yaml(tmp_path):
    pytest.importorskip("wandb")
    run = tmp_path / RUN_FILE.parent.name
    shutil.copytree(RUN_FILE.parent, run)
    (run / "files").mkdir()
    (run / "files" / "config.yaml").write_text(
        "wandb_version: 1\n_wandb:\n  desc: null\n  value: {cli_version: 0.15.0}\n"
        "dead_feature_window:\n  desc: null\n  value: 1000\nd_sae:\n  desc: null\n  value: 999\n")
    data = load_run(run)
    assert data.config["dead_feature_window"] == 1000 and data.config["dead_window"] == 1000
    assert data.config["d_sae"] == 64  # the run's own config records win over the yaml
    assert "config from files/config.yaml and the run's config records" in data.notes


def test_history_export_is_detected_as_wandb_and_full():
    data = load_run(INGEST / "wandb_history_export.csv")
    assert (data.source, data.sampled) == ("wandb", False)
    assert_matches(data, mk.truth(**mk.FIXTURE))
    assert data.config["d_sae"] == 64  # from the W&B-layout config.yaml beside it
    assert "config from wandb_history_export.config.yaml (W&B layout) beside the export" in data.notes


def test_history_export_parquet_and_history_sample(tmp_path):
    import polars as pl

    frame = pl.read_csv(INGEST / "wandb_history_export.csv").drop("")
    frame.write_parquet(tmp_path / "history.parquet")
    data = load_run(tmp_path / "history.parquet")
    assert data.source == "wandb" and data.metrics.height == 41 and data.sampled is False
    # run.history()'s default: 500 rows at uneven gaps -> read as sampled, with the reason
    for steps, sampled in (([i * 10 + i % 3 for i in range(500)], True), ([i * 10 for i in range(500)], False),
                           ([i * 10 + i % 3 for i in range(499)], False)):
        pl.DataFrame({"_step": steps, "metrics/l0": [1.0] * len(steps)}).write_csv(tmp_path / "h.csv")
        got = load_run(tmp_path / "h.csv")
        assert got.sampled is sampled
        assert any("run.history()'s default 500-row sample" in n for n in got.notes) is sampled


def test_ui_panel_export_is_sampled(tmp_path):
    data = load_run(INGEST / "wandb_ui_panel_export.csv")
    assert (data.source, data.sampled, data.run_id) == ("wandb", True, "saelens-style")
    assert data.metrics.columns == ["step", "l0"] and data.metrics.height == 11
    assert "SAMPLED: a bucketed or down-sampled export" in data.notes[0]
    res = cli("import", INGEST / "wandb_ui_panel_export.csv", "--out", tmp_path / "ui")
    assert res.exit_code == 0
    assert res.stdout.splitlines()[0] == "Imported wandb run saelens-style: 11 rows, columns l0; SAMPLED (not every step)"


def test_ui_panel_export_several_runs(tmp_path):
    f = tmp_path / "panel.csv"
    f.write_text('"Step","a - metrics/l0","a - metrics/l0__MIN","a - metrics/l0__MAX","b - metrics/l0",'
                 '"b - metrics/l0__MIN","b - metrics/l0__MAX"\n0,10,9,11,20,19,21\n100,5,4,6,8,7,9\n')
    res = cli("import", f, "--out", tmp_path / "o")
    assert (res.exit_code, res.stderr) == (2, f"Error: {f}: holds 2 W&B runs; pick one with --run (a, b)\n")
    assert load_run(f, run="b").metrics["l0"].to_list() == [20.0, 8.0]


def test_ui_panel_export_against_wall_time(tmp_path):
    f = tmp_path / "wall.csv"
    f.write_text('"Relative Time (Process)","r - metrics/l0","r - metrics/l0__MIN","r - metrics/l0__MAX"\n0.5,3,2,4\n')
    res = cli("import", f, "--out", tmp_path / "o")
    assert (res.exit_code, res.stderr) == (2, f"Error: {f}: no Step column (the panel's x axis was Relative Time "
                                              "(Process)); export the panel with Step on the x axis\n")


def test_export_unknown_columns_only(tmp_path):
    f = tmp_path / "export.csv"
    f.write_text("_step,_runtime,accuracy,val/acc\n0,0.1,0.5,0.4\n10,1.1,0.6,0.5\n")
    res = cli("import", f, "--out", tmp_path / "o")
    assert (res.exit_code, res.stderr) == (2, f"Error: {f}: no known metric (found: accuracy, val/acc); map a name with --map NAME=COLUMN (e.g. --map loss/total=loss)\n")


def test_detect():
    assert wb.detect(WB) and wb.detect(RUN_FILE) and wb.detect(INGEST / "wandb_ui_panel_export.csv")
    assert not wb.detect(INGEST / "mlruns") and not wb.detect(INGEST / "tensorboard")
    assert not wb.detect(INGEST / "wandb_history_export.config.yaml")


def test_input_never_modified(tmp_path):
    pytest.importorskip("wandb")
    from ingest_support import digest

    src = tmp_path / "src"
    shutil.copytree(WB, src)
    before = digest(src)
    assert cli("import", src, "--out", tmp_path / "o").exit_code == 0
    assert digest(src) == before


def test_plain_config_beside_a_history_export_is_used(tmp_path):
    """A history export with `_step` and a plain (non-W&B-layout) config.yaml beside it: d_sae is
    taken from that config, so the L0 count is also reported as a fraction."""
    from sae_report.ingest import load_run

    (tmp_path / "history.csv").write_text("_step,metrics/l0\n10,400\n20,300\n30,200\n")
    (tmp_path / "config.yaml").write_text("d_sae: 4000\nl1_coefficient: 0.05\n")
    run = load_run(tmp_path / "history.csv")
    assert run.source == "wandb"
    assert run.config["d_sae"] == 4000 and run.config["l1_alpha"] == 0.05
    assert run.metrics["l0_frac"].to_list() == [0.1, 0.075, 0.05]
    assert any("config from config.yaml beside the export" in n for n in run.notes)
