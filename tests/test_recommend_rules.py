"""Rules beyond l1_alpha, the next config, and `sae-report recommend` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sae_report.analysis.result import Analysis, Finding, FindingKind, RunInfo
from sae_report.cli import main
from sae_report.fixtures import write_run, write_siblings
from sae_report.recommend import PastRun, next_config, recommend_l1, rules_for, RunPoint

K = FindingKind


def _analysis(findings, **config) -> Analysis:
    cfg = {"l1_alpha": 0.065, "learning_rate": 1e-4, "resample_interval": 10_000, "total_steps": 100_000,
           "d_sae": 8192, **config}
    return Analysis(run=RunInfo(id="train_e01c6183", path="x", config=cfg, source="sae-report", rows=1000,
                                first_step=0, last_step=100_000, sampled=False, d_sae=8192),
                    summary={}, step_table=[], targets=[], phases=[], findings=findings, resampling=[],
                    input_outliers=[], recommendations=[], skipped=[])


def _f(kind, step, metric="l0_frac", end=None, explanation="x."):
    return Finding(kind=kind, metric=metric, step=step, end_step=end, severity="warn", evidence={},
                   coincides_with=None, explanation=explanation)


def test_clean_run_gets_no_rules():
    assert rules_for(_analysis([_f(K.SPARSIFICATION, 0, end=20_000)])) == []


def test_late_spike_lengthens_the_run():
    (rec,) = rules_for(_analysis([_f(K.LATE_SPIKE, 90_000)]))
    assert rec.parameter == "total_steps" and rec.current == 100_000 and rec.proposed == 150_000
    assert (rec.low, rec.high) == (150_000, 200_000)
    assert "late spike in l0_frac at step 90,000" in rec.reason
    assert "raise total_steps -> longer training" in rec.reason


def test_not_converged_lengthens_the_run():
    (rec,) = rules_for(_analysis([_f(K.NOT_CONVERGED, 60_000)]))
    assert rec.parameter == "total_steps" and "still trending" in rec.reason


def test_thrash_restores_the_interval_before_the_thrash():
    history = [PastRun("train_0314574b", 15_000, False), PastRun("train_05555a4b", 15_000, False)]
    (rec,) = rules_for(_analysis([_f(K.RESAMPLE_THRASH, 20_000, metric="dead_frac")]), history=history)
    assert rec.parameter == "resample_interval" and rec.current == 10_000 and rec.proposed == 15_000
    assert "train_0314574b, train_05555a4b" in rec.reason
    (alone,) = rules_for(_analysis([_f(K.RESAMPLE_THRASH, 20_000, metric="dead_frac")]))
    assert alone.proposed == 15_000 and "1.5x" in alone.reason
    # an earlier run that thrashed at a larger interval is not a calm value
    (other,) = rules_for(_analysis([_f(K.RESAMPLE_THRASH, 20_000, metric="dead_frac")]),
                         history=[PastRun("a", 30_000, True)])
    assert other.proposed == 15_000


def test_early_collapse_adds_l1_warmup_and_late_collapse_does_not():
    (rec,) = rules_for(_analysis([_f(K.COLLAPSE, 20_000)]))
    assert rec.parameter == "l1_warmup_steps" and rec.current == 0 and rec.proposed == 20_000
    assert "Collapse came early (step 20,000 of 100,000)" in rec.reason
    assert rules_for(_analysis([_f(K.COLLAPSE, 60_000)])) == []


def test_divergence_lowers_the_learning_rate():
    (rec,) = rules_for(_analysis([_f(K.DIVERGED, 14_000, metric="loss", explanation="Loss became inf.")],
                                 learning_rate=1e-3))
    assert rec.parameter == "learning_rate" and rec.proposed == pytest.approx(3e-4)
    assert rec.low < rec.proposed < rec.high < 1e-3
    assert "lower learning_rate" in rec.reason


def test_next_config_applies_l1_and_rules_and_validates():
    l1 = recommend_l1([RunPoint("a", 0.005, 0.1129), RunPoint("b", 0.05, 0.0419)], 0.05)
    recs = rules_for(_analysis([_f(K.COLLAPSE, 20_000), _f(K.RESAMPLE_THRASH, 20_000, metric="dead_frac")]),
                     history=[PastRun("b", 15_000, False)])
    base = {"run_id": "train_e01c6183", "schema_version": 1, "l1_alpha": 0.065, "learning_rate": 1e-4,
            "resample_interval": 10_000, "total_steps": 100_000, "l1_schedule": "constant", "l1_warmup_steps": 0}
    nxt = next_config(base, l1=l1, rules=recs, base_id="train_e01c6183")
    assert nxt.config["l1_alpha"] == l1.l1_alpha
    assert nxt.config["resample_interval"] == 15_000
    assert nxt.config["l1_warmup_steps"] == 20_000 and nxt.config["l1_schedule"] == "warmup"
    assert "run_id" not in nxt.config and "schema_version" not in nxt.config
    text = nxt.yaml()
    assert text.startswith("# Next run, based on train_e01c6183")
    assert "# l1_alpha: 0.065 -> " in text
    assert yaml.safe_load(text)["resample_interval"] == 15_000


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rec")
    write_siblings(root, steps=20_000, rows=300)
    return root


def test_cli_recommend_json_and_write_config(runs, tmp_path):
    cfg = tmp_path / "next.yaml"
    res = CliRunner().invoke(main, ["recommend", str(runs), "--target-l0", "0.05", "--json",
                                    "--write-config", str(cfg), "--base", "train_05555a4b"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert list(doc)[:7] == ["l1_alpha", "low", "high", "predicted_l0", "basis", "direction", "explanation"]
    assert doc["direction"] == "lower" and 0.005 < doc["l1_alpha"] < 0.05
    written = yaml.safe_load(cfg.read_text())
    assert written["l1_alpha"] == doc["l1_alpha"]
    assert doc["base_run"] == "train_05555a4b"
    base = yaml.safe_load((runs / "train_05555a4b" / "config.yaml").read_text())
    changed = {c["key"]: c["new"] for c in doc["changes"]}
    assert changed["l1_alpha"] == doc["l1_alpha"]
    for rule in doc["rules"]:  # every rule's proposal is in the file
        assert written[rule["parameter"]] == rule["proposed"]
    for key, value in written.items():
        assert value == changed.get(key, base.get(key)), key
    assert "run_id" not in written and "scenario" not in written
    try:
        from trainer.config import TrainConfig
    except ImportError:  # pragma: no cover
        return
    TrainConfig.from_yaml(cfg)  # ready for `sae-report train CONFIG`


def test_cli_recommend_text_states_direction(runs):
    res = CliRunner().invoke(main, ["recommend", str(runs / "train_05555a4b"), str(runs / "train_0314574b"),
                                    "--target-l0", "5%", "--no-rules"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("l1_alpha: ")
    assert "lower l1_alpha -> weaker sparsity penalty -> more active features -> higher L0" in res.output


def test_cli_recommend_errors(runs, tmp_path):
    res = CliRunner().invoke(main, ["recommend", str(tmp_path / "none"), "--target-l0", "0.05"])
    assert res.exit_code == 2 and res.output.strip() == f"Error: {tmp_path / 'none'}: no such file or directory"
    res = CliRunner().invoke(main, ["recommend", str(runs), "--base", "nope", "--no-rules"])
    assert res.exit_code == 2 and "--base nope: not one of the compared runs" in res.output
    bad = write_run(tmp_path, "diverged", steps=2_000, rows=200, run_id="train_div").run_dir
    res = CliRunner().invoke(main, ["recommend", str(bad), "--target-l0", "0.05", "--no-rules"])
    assert res.exit_code == 1
    assert res.output.strip().startswith("Error: no run can be used for the l1_alpha fit (train_div: diverged")


def test_diverged_last_run_is_the_base_and_gets_a_lower_learning_rate(tmp_path):
    import os
    import time

    write_run(tmp_path, "sibling_low", steps=10_000, rows=300)
    write_run(tmp_path, "sibling_mid", steps=10_000, rows=300, seed=1)
    div = write_run(tmp_path, "diverged", steps=10_000, rows=300, run_id="train_diverged").run_dir
    later = time.time() + 60
    os.utime(div / "summary.json", (later, later))  # the most recent run
    res = CliRunner().invoke(main, ["recommend", str(tmp_path), "--target-l0", "0.05", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["base_run"] == "train_diverged"
    assert {"id": "train_diverged", "reason": doc["excluded"][0]["reason"]} in doc["excluded"]
    assert doc["excluded"][0]["reason"].startswith("diverged")
    lr = [r for r in doc["rules"] if r["parameter"] == "learning_rate"]
    assert lr and lr[0]["proposed"] < lr[0]["current"]
    assert "train_diverged" not in doc["basis"]
