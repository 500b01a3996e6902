"""The Python front door: ``sae_report.load_run``, ``analyze``, ``write_report`` give what the
command line gives (it goes through the same code)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import sae_report
from sae_report.cli import main
from sae_report.fixtures import write_run
from sae_report.runlog import RunLogError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("api"), "writeup", steps=20_000, rows=1_000).run_dir


def test_analyze_gives_what_the_cli_writes(run_dir: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["analyze", str(run_dir), "--out", str(tmp_path / "r"), "--format", "json"])
    assert res.exit_code == 0, res.output
    cli = json.loads((tmp_path / "r" / "analysis.json").read_text())
    api = json.loads(json.dumps(sae_report.analyze(run_dir).to_dict()))
    for key in ("findings", "verdict", "recommendations", "targets", "phases", "architecture"):
        assert api[key] == cli[key], key
    # a RunData already read gives the same analysis
    again = json.loads(json.dumps(sae_report.analyze(sae_report.load_run(run_dir)).to_dict()))
    assert again["findings"] == cli["findings"] and again["recommendations"] == cli["recommendations"]


def test_target_and_overrides_stand_in_for_the_flags(run_dir: Path) -> None:
    a = sae_report.analyze(run_dir, target_l0=0.02)
    (row,) = [t for t in a.targets if t.metric == "Settled L0"]
    assert row.target == 0.02
    b = sae_report.analyze(run_dir, overrides={"target_l0": 0.08})
    assert [t.target for t in b.targets if t.metric == "Settled L0"] == [0.08]


def test_write_report_writes_the_files_and_reads_only(run_dir: Path, tmp_path: Path) -> None:
    before = sorted((p.relative_to(run_dir), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file())
    result = sae_report.write_report(run_dir, tmp_path / "out")
    assert {p.name for p in result.files} >= {"report.md", "report.html", "analysis.json"}
    assert all(p.exists() and p.parent.is_relative_to(tmp_path / "out") for p in result.files)
    after = sorted((p.relative_to(run_dir), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file())
    assert before == after


def test_unusable_input_is_one_line_naming_the_path(tmp_path: Path) -> None:
    with pytest.raises(RunLogError) as err:
        sae_report.analyze(tmp_path / "nope")
    assert str(err.value).startswith(str(tmp_path / "nope")) and "\n" not in str(err.value)


def test_importing_and_analyzing_needs_no_torch_import(tmp_path: Path) -> None:
    """Reading, analyzing and comparing with the runs beside it (which reads the trainer's config
    keys) never loads torch: ``analyze`` works without the training extra and starts fast."""
    for name in ("jumprelu", "jumprelu_low"):
        write_run(tmp_path, name, steps=20_000, rows=500)
    run = next(tmp_path.glob("*jumprelu"))
    code = (f"import sys, sae_report; a = sae_report.analyze({str(run)!r}); "
            "print(a.comparison is not None, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
