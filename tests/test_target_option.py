"""One type for a target L0 in every command: a fraction, a percent or a count of features, with the
same errors (issue 16: two types used to accept different inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sae_report.cli import main
from sae_report.fixtures import write_run
from sae_report.runlog import read_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("tgt")
    return [write_run(root / n, n, steps=20_000, rows=1_000).run_dir for n in ("jumprelu", "jumprelu_low")]


def _d_sae(run: Path) -> int:
    return int(read_run(run).config["d_sae"])


@pytest.mark.parametrize("command", ["analyze", "compare", "recommend", "tune", "sweep"])
@pytest.mark.parametrize("value,message", [
    ("abc", "'abc' is not a fraction like 0.05, a percent like 5% or a count like 32"),
    ("150%", "'150%' must be a fraction of the dictionary between 0 and 1 (0.05 = 5%) or a count of features (32)"),
    ("-1", "'-1' must be a fraction of the dictionary between 0 and 1 (0.05 = 5%) or a count of features (32)"),
])
def test_the_same_errors_everywhere(command: str, value: str, message: str, runs: list[Path]) -> None:
    res = CliRunner().invoke(main, [command, str(runs[0]), "--target-l0", value])
    assert res.exit_code == 2
    assert f"Invalid value for '--target-l0': {message}" in res.output


def test_a_count_is_read_with_the_dictionary_size(runs: list[Path], tmp_path: Path) -> None:
    d_sae = _d_sae(runs[0])
    res = CliRunner().invoke(main, ["analyze", str(runs[0]), "--out", str(tmp_path / "a"), "--target-l0", "300",
                                    "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert [t["target"] for t in doc["targets"] if t["metric"] == "Settled L0"] == [pytest.approx(300 / d_sae)]
    res = CliRunner().invoke(main, ["compare", *map(str, runs), "--target-l0", "300", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["target_l0"] == pytest.approx(300 / d_sae)
    pct = CliRunner().invoke(main, ["recommend", *map(str, runs), "--target-l0", "5%", "--json"])
    frac = CliRunner().invoke(main, ["recommend", *map(str, runs), "--target-l0", "0.05", "--json"])
    assert pct.exit_code == 0 and pct.output == frac.output


def test_a_count_with_runs_of_several_sizes_is_a_usage_error(runs: list[Path], tmp_path: Path) -> None:
    other = write_run(tmp_path, "clean", steps=20_000, rows=1_000, d_sae=4096).run_dir
    assert _d_sae(other) != _d_sae(runs[0])
    res = CliRunner().invoke(main, ["compare", str(runs[0]), str(other), "--target-l0", "300"])
    assert res.exit_code == 2
    assert "a target L0 of 300 features needs the runs' dictionary size, and they have several" in res.output


def test_tune_reads_a_count_with_the_configs_dictionary(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    res = CliRunner().invoke(main, ["tune", "--target-l0", "100000", "--out", str(tmp_path / "t")])
    assert res.exit_code != 0
    assert "a target L0 of 100000 features is not below d_sae (512)" in res.output
    assert not (tmp_path / "t").exists()
