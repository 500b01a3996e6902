"""`sae-report analyze` through the CLI: outputs, exit codes and exact error texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sae_report.cli import main
from sae_report.fixtures import write_run
from sae_report.pipeline import analyze_path


def _run(*args: str):
    return CliRunner().invoke(main, ["analyze", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_run(tmp_path_factory.mktemp("runs"), "writeup", steps=20_000, rows=800).run_dir


def test_json_prints_the_document_and_writes_analysis_json_only(run_dir: Path) -> None:
    res = _run(str(run_dir), "--json", "--no-siblings")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema_version"] == 2 and doc["run"]["id"] == "train_e01c6183"
    assert {f["kind"] for f in doc["findings"]} >= {"collapse", "recovery", "oscillation", "late_spike"}
    assert sorted(p.name for p in (run_dir / "report").iterdir()) == [".sae-report-manifest.json", "analysis.json"]
    assert json.loads((run_dir / "report" / "analysis.json").read_text()) == doc


def test_summary_tables_and_out_dir(run_dir: Path, tmp_path: Path) -> None:
    res = _run(str(run_dir), "--out", str(tmp_path / "rep"), "--format", "json", "--no-siblings")
    assert res.exit_code == 0, res.output
    for text in ("Results", "Findings", "Phases", "Initial collapse", "Final L0", "collapse", "late_spike"):
        assert text in res.stdout
    assert f"Wrote {tmp_path / 'rep' / 'analysis.json'}" in res.stdout


def test_flags_override_the_config(run_dir: Path) -> None:
    res = _run(str(run_dir), "--json", "--target-l0", "2%", "--format", "json", "--no-siblings")
    doc = json.loads(res.stdout)
    final = next(t for t in doc["targets"] if t["metric"] == "Final L0")
    assert final["target"] == pytest.approx(0.02) and doc["run"]["config"]["target_l0"] == pytest.approx(0.02)


def test_fail_on_exits_1_when_the_kind_is_found(run_dir: Path) -> None:
    res = _run(str(run_dir), "--format", "json", "--fail-on", "collapse,diverged", "--no-siblings")
    assert res.exit_code == 1
    assert res.stderr.strip().startswith("Failing: 1 finding(s) of kind collapse (first: collapse in l0_frac at step ")
    assert _run(str(run_dir), "--format", "json", "--fail-on", "diverged", "--no-siblings").exit_code == 0


def test_fail_on_unknown_kind_is_a_usage_error(run_dir: Path) -> None:
    res = _run(str(run_dir), "--fail-on", "explosion")
    assert res.exit_code == 2 and "unknown finding kind(s) explosion (choose from sparsification," in res.stderr


def test_missing_path_is_exit_2_with_one_line(tmp_path: Path) -> None:
    res = _run(str(tmp_path / "nope"))
    assert res.exit_code == 2
    assert res.stderr == f"Error: {tmp_path / 'nope'}: no such file or directory\n"


def test_empty_csv_is_exit_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("")
    res = _run(str(tmp_path / "metrics.csv"))
    assert res.exit_code == 2
    assert res.stderr == f"Error: {tmp_path / 'metrics.csv'}: empty file\n"
    assert not (tmp_path / "report").exists()


def test_csv_input_writes_report_beside_it_and_leaves_the_input_alone(tmp_path: Path) -> None:
    rows = "\n".join(f"{s},{50 * 0.97 ** s:.4f},{1 / (s + 1):.5f}" for s in range(0, 400))
    f = tmp_path / "metrics.csv"
    f.write_text("step,l0_pct,loss\n" + rows + "\n")
    before = f.read_bytes()
    res = _run(str(f), "--json", "--d-sae", "1000", "--no-siblings")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["run"]["source"] == "csv" and doc["run"]["d_sae"] == 1000
    assert doc["summary"]["l0"]["final"] == pytest.approx(doc["summary"]["l0_frac"]["final"] * 1000)
    assert f.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "report"]


def test_read_only_input_asks_for_out(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sae_report.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_writable", lambda folder: False)
    res = _run(str(run_dir), "--format", "json", "--no-siblings")
    assert res.exit_code == 1
    assert res.stderr == (f"Error: {run_dir / 'report'}: the input is read-only, so the report cannot go beside it; "
                          "choose a folder with --out DIR\n")


def test_analyze_path_without_formats_writes_nothing(tmp_path: Path) -> None:
    run = write_run(tmp_path, "clean", steps=2_000, rows=200).run_dir
    res = analyze_path(run, formats=(), siblings=False)
    assert res.out_dir is None and res.files == [] and not (run / "report").exists()
    assert res.analysis.run.id == "synthetic_clean"


def test_source_and_run_pick_the_reader_and_the_table(tmp_path: Path) -> None:
    rows = "\n".join(f"{s},{50 * 0.97 ** s:.4f},{1 / (s + 1):.5f}" for s in range(0, 300))
    (tmp_path / "a.csv").write_text("_step,l0_pct,loss\n" + rows + "\n")
    (tmp_path / "b.csv").write_text("_step,l0_pct,loss\n" + rows + "\n")
    (tmp_path / "config.yaml").write_text("d_sae: 2000\n")
    res = _run(str(tmp_path), "--json", "--source", "csv", "--run", "b", "--no-siblings")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["run"]["id"] == "b" and doc["run"]["source"] == "csv" and doc["run"]["d_sae"] == 2000
    res = _run(str(tmp_path), "--json", "--source", "csv", "--no-siblings")
    assert res.exit_code == 2
    assert res.stderr == (f"Error: {tmp_path}: several metrics files (a.csv, b.csv); "
                          "pick one with --run NAME or pass the file\n")
