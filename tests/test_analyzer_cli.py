"""`sae-report analyze` through the CLI: outputs, exit codes and exact error texts."""

from __future__ import annotations

import json
import re
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
    for text in ("Results", "Findings", "Phases", "Initial collapse", "Settled", "collapse", "late_spike"):
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


# --- issue 12: the terminal summary, the comparison in analysis.json, one report folder per run, umask ---


@pytest.fixture(scope="module")
def siblings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The write-up's three runs side by side (what `sae-report fixtures demo/` writes)."""
    from sae_report.fixtures import write_siblings

    root = tmp_path_factory.mktemp("demo")
    write_siblings(root, steps=100_000, rows=400)
    return root / "train_e01c6183"


def _at(columns: int, *args: str):
    """`analyze` through the CLI with the terminal `columns` wide (rich reads COLUMNS; no TTY here)."""
    return CliRunner().invoke(main, ["analyze", *args], env={"COLUMNS": str(columns)}, catch_exceptions=False)


@pytest.mark.parametrize("columns", [80, 200])
def test_terminal_summary_fits_the_width_verdict_first(siblings: Path, tmp_path: Path, columns: int) -> None:
    res = _at(columns, str(siblings), "--out", str(tmp_path / "r"), "--format", "json")
    assert res.exit_code == 0, res.output
    out = res.stdout
    lines = out.splitlines()
    # Nothing wider than the terminal (the only exception: "Wrote PATH", a path kept whole) and nothing cut.
    assert all(len(ln.rstrip()) <= columns for ln in lines if not ln.startswith("Wrote ")), \
        [ln for ln in lines if len(ln.rstrip()) > columns]
    assert "…" not in out and "..." not in out
    # Verdict first: the verdict, L0 and fidelity against their targets, the most severe finding, the next config.
    assert lines[1].startswith("Verdict: ⚠ Worth acting on.")
    head = out.split("Results (")[0]
    flat = " ".join(head.split())
    for text in ("L0 2.", "settled (second-half median)", "% of target (settled, undershooting)",
                 "Fidelity explained variance", "MSE", "Most severe Collapse, steps", "Next run l1_alpha 0.065 ->"):
        assert text in flat, (text, flat)
    # Results: final and settled, % of target on one basis, a mark only where there is a target.
    results = out.split("Results (")[1].split("Findings")[0]
    assert "% of target on the settled L0" in " ".join(results.split())
    for metric in ("L0", "Dead", "Explained", "MSE", "Loss"):
        assert metric in results, metric
    assert "no target" in results and "✓" in results  # the loss meets its <0.02 target; MSE has none
    mse_line = next(ln for ln in results.splitlines() if ln.strip().startswith("MSE"))
    assert "✓" not in mse_line and "⚠" not in mse_line
    # Findings by severity: every warn before every info finding.
    findings = out.split("Findings (most severe first)")[1].split("Phases")[0]
    marks = [m for m in re.findall(r"^ ?(⚠|·|✗) ", findings, re.M)]
    assert marks and marks == sorted(marks, key="✗⚠·".index), marks
    # The sibling comparison and the l1_alpha fit the README promises for `analyze`.
    flat_all = " ".join(out.split())
    assert "Compared with the runs beside it" in flat_all
    for run in ("train_0314574b", "train_05555a4b", "train_e01c6183 *", "(* this run;"):
        assert run in flat_all, run
    assert "l1_alpha fit 0.02" in flat_all and "lower l1_alpha -> weaker sparsity penalty" in flat_all
    assert "Confounder: resample_interval changed together with l1_alpha" in flat_all
    assert "l1_alpha: 0.065 -> 0.02" in flat_all  # the fit is the l1_alpha recommendation
    # Wide terminals get the findings as a table, narrow ones as blocks.
    assert ("What happened" in out) == (columns >= 120)


def test_analysis_json_carries_the_comparison_and_the_fit(siblings: Path, tmp_path: Path) -> None:
    from claimcheck import RawLog, check_document

    res = _run(str(siblings), "--json", "--out", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    comp = doc["comparison"]
    assert [r["id"] for r in comp["runs"]] == ["train_0314574b", "train_05555a4b", "train_e01c6183"]
    assert all("config" not in r for r in comp["runs"])  # bookkeeping left out: the rows only
    assert comp["recommendation"]["direction"] == "lower" and comp["key_finding"].startswith("L0 falls as l1_alpha rises")
    assert any(w.startswith("Confounder: resample_interval") for w in comp["warnings"])
    (l1,) = [r for r in doc["recommendations"] if r["parameter"] == "l1_alpha"]
    assert l1["proposed"] == pytest.approx(comp["recommendation"]["l1_alpha"]) and l1["current"] == 0.065
    assert l1["low"] < l1["proposed"] < l1["high"] < 0.05 and "lower l1_alpha" in l1["reason"]
    # Fidelity and the settled basis are claims: the settled L0 row, MSE in the results and step tables.
    rows = {t["metric"]: t for t in doc["targets"]}
    assert rows["Settled L0"]["claim"]["stat"] == "median" and rows["Settled L0"]["status"] == "warn"
    assert rows["MSE"]["status"] == "none" and rows["Explained variance"]["status"] == "none"
    assert all("mse" in r["values"] and "explained_variance" in r["values"] for r in doc["step_table"])
    assert check_document(doc, RawLog.read(siblings)) == []
    # Without siblings: no comparison.
    alone = json.loads(_run(str(siblings), "--json", "--no-siblings", "--out", str(tmp_path / "a")).stdout)
    assert alone["comparison"] is None


def test_two_runs_of_one_store_get_two_report_folders(tmp_path: Path) -> None:
    """A store holding several runs (here a folder of two tables; W&B, TensorBoard and MLflow stores the
    same): each run's report goes to report/<run id>/, so the second never overwrites the first."""
    rows = "\n".join(f"{s},{50 * 0.97 ** s:.4f},{1 / (s + 1):.5f}" for s in range(0, 300))
    (tmp_path / "a.csv").write_text("_step,l0_pct,loss\n" + rows + "\n")
    (tmp_path / "b.csv").write_text("_step,l0_pct,loss\n" + rows.replace(",0.", ",0.1") + "\n")
    (tmp_path / "config.yaml").write_text("d_sae: 2000\n")
    for run in ("a", "b"):
        res = _run(str(tmp_path), "--source", "csv", "--run", run, "--no-siblings")
        assert res.exit_code == 0, res.output
    for run in ("a", "b"):
        doc = json.loads((tmp_path / "report" / run / "analysis.json").read_text())
        assert doc["run"]["id"] == run
        assert (tmp_path / "report" / run / "report.md").read_text().startswith(f"# Training Results Analysis: {run}\n")
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["a", "b"]
    from sae_report.pipeline import run_folder_name

    assert run_folder_name("../x y/é") == "_x_y__" and run_folder_name("...") == "run"


@pytest.mark.parametrize("mask", [0o002, 0o022, 0o077])
def test_report_folders_and_files_follow_the_umask(run_dir: Path, tmp_path: Path, mask: int) -> None:
    import os
    import stat

    old = os.umask(mask)
    try:
        out = tmp_path / "shared" / "report"
        res = _run(str(run_dir), "--out", str(out), "--no-siblings")
        assert res.exit_code == 0, res.output
        cmp_out = tmp_path / "shared" / "cmp"
        res = CliRunner().invoke(main, ["compare", str(run_dir), "--out", str(cmp_out)], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    finally:
        os.umask(old)
    for folder in (out.parent, out, out / "charts", cmp_out):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~mask, (folder, oct(folder.stat().st_mode))
    for f in [*out.iterdir(), *(out / "charts").iterdir(), *cmp_out.iterdir()]:
        if f.is_file():
            assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, (f, oct(f.stat().st_mode))


def test_map_reads_metric_names_the_aliases_do_not_know(tmp_path) -> None:
    import numpy as np
    import polars as pl

    steps = np.arange(0, 2000, 10)
    pl.DataFrame({"step": steps, "loss/total": 1 / (steps + 10.0),
                  "my_l0": np.maximum(20, 400 * np.exp(-steps / 200))}).write_csv(tmp_path / "m.csv")
    plain = CliRunner().invoke(main, ["analyze", str(tmp_path / "m.csv"), "--json"])
    assert plain.exit_code == 2
    assert plain.stderr.strip().endswith("map a name with --map NAME=COLUMN (e.g. --map loss/total=loss)")
    mapped = CliRunner().invoke(main, ["analyze", str(tmp_path / "m.csv"), "--json", "--map", "loss/total=loss",
                                       "--map", "my_l0=l0", "--d-sae", "800"])
    assert mapped.exit_code == 0, mapped.output
    doc = json.loads(mapped.stdout)
    assert doc["summary"]["loss"]["final"] == pytest.approx(1 / 2000.0)
    assert doc["summary"]["l0"]["final"] == pytest.approx(20.0)
    assert "loss/total -> loss (--map)" in doc["run"]["notes"]
