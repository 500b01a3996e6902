"""compare / recommend with a floor on the model's spliced-in loss score: "the lowest L0 whose
ce_loss_score stays above X" (issue 17). Runs are written as CSV logs with known columns; the
expected choice is computed here from the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from sae_report.cli import main

#: run id -> (l1_alpha, settled L0 fraction, settled ce_loss_score)
RUNS = {"run_a": (0.01, 0.10, 0.97), "run_b": (0.02, 0.05, 0.90), "run_c": (0.04, 0.02, 0.80)}


def _write(root: Path, with_score: bool = True) -> list[Path]:
    out = []
    steps = np.arange(0, 10_001, 50)
    for rid, (l1, l0, score) in RUNS.items():
        d = root / rid
        (d / "metrics").mkdir(parents=True)
        rng = np.random.default_rng(len(rid) + int(l1 * 1000))
        l0_col = np.where(steps < 2000, 0.4, l0) * np.exp(rng.normal(0, 0.01, steps.shape))
        cols = {"step": steps, "l0_frac": l0_col, "loss": 0.1 + 0.0 * steps, "l1_alpha": np.full(steps.shape, l1)}
        if with_score:
            cols["ce_loss_score"] = np.where(steps < 2000, 0.5, score) + rng.normal(0, 0.002, steps.shape)
        header = ",".join(cols)
        body = "\n".join(",".join(repr(float(cols[c][i])) if c != "step" else str(int(steps[i])) for c in cols)
                         for i in range(len(steps)))
        (d / "metrics" / "part-000000.csv").write_text(header + "\n" + body + "\n")
        (d / "config.yaml").write_text(yaml.safe_dump({"run_id": rid, "l1_alpha": l1, "d_sae": 4096, "d_in": 512,
                                                       "target_l0": 0.05, "schema_version": 1}))
        out.append(d)
    return out


def _expected(floor: float) -> str | None:
    ok = [(l0, rid) for rid, (_, l0, score) in RUNS.items() if score >= floor]
    return min(ok)[1] if ok else None


@pytest.mark.parametrize("floor", [0.85, 0.95, 0.99])
def test_compare_names_the_sparsest_run_above_the_floor(tmp_path: Path, floor: float) -> None:
    runs = _write(tmp_path)
    res = CliRunner().invoke(main, ["compare", *map(str, runs), "--json", "--min-ce-loss-score", str(floor)])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    f = doc["faithful"]
    assert f["run_id"] == _expected(floor) and f["considered"] == 3
    for r in doc["runs"]:
        assert r["ce_loss_score"] == pytest.approx(RUNS[r["id"]][2], abs=0.005)
    if f["run_id"]:
        assert f"the sparsest that keeps ce_loss_score at or above {floor:g} is run {f['run_id']}" in doc["key_finding"]
    else:
        assert f"No run keeps ce_loss_score at or above {floor:g}: the best is run run_a" in doc["key_finding"]


def test_recommend_prints_the_choice_and_says_when_no_run_logged_it(tmp_path: Path) -> None:
    runs = _write(tmp_path / "with")
    res = CliRunner().invoke(main, ["recommend", *map(str, runs), "--min-ce-loss-score", "0.85", "--no-rules"])
    assert res.exit_code == 0, res.output
    assert "the sparsest that keeps ce_loss_score at or above 0.85 is run run_b" in res.output
    bare = _write(tmp_path / "without", with_score=False)
    res = CliRunner().invoke(main, ["compare", *map(str, bare), "--json", "--min-ce-loss-score", "0.85"])
    doc = json.loads(res.output)
    assert doc["faithful"]["run_id"] is None and doc["faithful"]["considered"] == 0
    assert "No compared run logged ce_loss_score" in doc["key_finding"]
