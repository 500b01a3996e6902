"""The analyzer, the recommender, compare and tune read the SAE's architecture (issue 14).

TopK / BatchTopK runs (ours and a sparsify-style log with ``k`` in its config) get no sparsity
coefficient advice and no L0-target status; JumpReLU runs are fitted on ``l0_coefficient`` with the
same direction rule as ``l1_alpha``. The settled L0 of each run is recomputed here from the raw
metrics (the second-half median), not taken from the tool.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from sae_report.analysis import analyze
from sae_report.analysis.architecture import architecture, architecture_of
from sae_report.cli import main
from sae_report.fixtures import write_run
from sae_report.runlog import read_run

SPARSITY_KEYS = {"l1_alpha", "l0_coefficient", "l1_warmup_steps", "l0_warmup_steps"}


def _settled_l0(run_dir: Path) -> float:
    """Second-half median of the logged L0 fraction, read from the raw parts with polars."""
    df = pl.concat([pl.read_parquet(p) for p in sorted((run_dir / "metrics").glob("*.parquet"))], how="diagonal")
    df = df.sort("step").unique("step", keep="last").sort("step")
    last = int(df["step"].max())
    col = "l0_frac" if "l0_frac" in df.columns else None
    assert col is not None
    return float(df.filter(pl.col("step") >= last / 2)[col].median())


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("arch")
    names = ("topk", "topk_dead", "topk_sparsify", "jumprelu", "jumprelu_low", "jumprelu_high", "clean")
    return {n: write_run(root / n, n, steps=20_000, rows=2_001).run_dir for n in names}


@pytest.mark.parametrize("config,name", [
    ({"sae_variant": "topk", "k": 32}, "topk"),
    ({"architecture": "batchtopk"}, "batchtopk"),
    ({"architecture": "JumpReLU"}, "jumprelu"),
    ({"sae": {"k": 32, "num_latents": 0}, "auxk_alpha": 0.03}, "topk"),  # sparsify
    ({"trainer": {"trainer_class": "BatchTopKTrainer", "k": 64}}, "batchtopk"),  # dictionary_learning
    ({"trainer": {"trainer_class": "JumpReluTrainer"}}, "jumprelu"),
    ({"trainer": {"trainer_class": "StandardTrainerAprilUpdate"}}, "april2024"),
    ({"k": 8, "l1_coefficient": 0.1}, None),  # a k beside an L1 coefficient: not a TopK trainer
    ({"l1_coefficient": 5}, None),
])
def test_the_architecture_is_read_from_each_tools_config(config, name) -> None:
    assert architecture_of(config) == name
    assert architecture(config).coefficient == {"topk": None, "batchtopk": None, "jumprelu": "l0_coefficient"}.get(
        name or "", "l1_alpha")


@pytest.mark.parametrize("name", ["topk", "topk_dead", "topk_sparsify"])
def test_a_topk_run_gets_no_coefficient_advice_and_no_l0_target(fx, name, tmp_path) -> None:
    run = fx[name]
    res = CliRunner().invoke(main, ["analyze", str(run), "--out", str(tmp_path / "r"), "--target-l0", "0.05"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r" / "analysis.json").read_text())
    assert doc["architecture"]["name"] == "topk" and doc["architecture"]["fixed_l0"] is True
    assert not SPARSITY_KEYS & {r["parameter"] for r in doc["recommendations"]}
    for t in doc["targets"]:
        if "L0" in t["metric"]:
            assert t["status"] == "none" and t["target"] is None, t
    assert not [f for f in doc["findings"] if f["metric"] in ("l0", "l0_frac")]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "**Architecture:** TopK" in md
    assert "l1_alpha" not in md and "l0_coefficient" not in md
    assert "Architecture: TopK" in res.output


def test_topk_advice_follows_the_dead_latents_and_reconstruction(fx, tmp_path) -> None:
    """AuxK off with many dead latents -> AuxK on; poor explained variance -> a larger k. The numbers
    quoted are those of the raw log."""
    from dataclasses import asdict

    from sae_report.recommend import rules_for

    recs = {r.parameter: asdict(r) for r in rules_for(analyze(read_run(fx["topk_dead"])))}
    assert set(recs) == {"aux_loss_coefficient", "k"}
    assert recs["aux_loss_coefficient"]["current"] == 0 and recs["aux_loss_coefficient"]["proposed"] > 0
    assert recs["k"]["current"] == 32 and recs["k"]["proposed"] > 32
    df = read_run(fx["topk_dead"]).metrics
    last = int(df["step"].max())
    ev = float(df.filter(pl.col("step") >= last / 2)["explained_variance"].median())
    assert f"{100 * ev:.1f}%" in recs["k"]["reason"]
    # AuxK on and reviving the dead: no advice at all
    assert rules_for(analyze(read_run(fx["topk"]))) == []


def test_a_topk_run_whose_latents_stay_dead_is_worth_acting_on(fx) -> None:
    """The dead_latents finding (TopK only): its median over the last fifth of the second half is the
    raw log's, the verdict warns; a TopK run whose AuxK revives the dead gets none."""
    a = analyze(read_run(fx["topk_dead"]))
    (f,) = [f for f in a.findings if f.kind.value == "dead_latents"]
    assert f.severity == "warn" and a.verdict.status == "warn"
    df = read_run(fx["topk_dead"]).metrics
    first, last = int(df["step"].min()), int(df["step"].max())
    half = first + (last - first) / 2
    fifth = (last - half) / 5
    late = float(df.filter((pl.col("step") >= last - fifth) & (pl.col("step") <= last))["dead_frac"].median())
    assert f"A median of {100 * late:.3g}% of the latents were dead" in f.explanation
    assert "AuxK is off" in f.explanation
    assert not [f for f in analyze(read_run(fx["topk"])).findings if f.kind.value == "dead_latents"]
    assert not [f for f in analyze(read_run(fx["clean"])).findings if f.kind.value == "dead_latents"]


def test_a_topk_run_beside_a_jumprelu_sweep_gets_no_fit_from_it(fx, tmp_path) -> None:
    """Sibling runs of another architecture are not points on the run's curve."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for n in ("topk_dead", "jumprelu", "jumprelu_low", "jumprelu_high"):
        shutil.copytree(fx[n], folder / n)
    res = CliRunner().invoke(main, ["analyze", str(folder / "topk_dead"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r" / "analysis.json").read_text())
    assert {r["parameter"] for r in doc["recommendations"]} == {"aux_loss_coefficient", "k"}
    assert "l0_coefficient" not in (tmp_path / "r" / "report.md").read_text()
    assert "l0_coefficient" not in res.output
    # the JumpReLU run beside them is compared with the other JumpReLU runs only
    res = CliRunner().invoke(main, ["analyze", str(folder / "jumprelu"), "--out", str(tmp_path / "j")])
    doc = json.loads((tmp_path / "j" / "analysis.json").read_text())
    ids = {r["id"] for r in doc["comparison"]["runs"]}
    assert ids == {"synthetic_jumprelu", "synthetic_jumprelu_low", "synthetic_jumprelu_high"}


def test_a_jumprelu_sweep_is_fitted_on_l0_coefficient_inside_the_bracket(fx, tmp_path) -> None:
    runs = [fx["jumprelu_low"], fx["jumprelu"], fx["jumprelu_high"]]
    coef = {r: float(read_run(r).config["l0_coefficient"]) for r in runs}
    settled = {r: _settled_l0(r) for r in runs}
    target = 0.05
    above = [r for r in runs if settled[r] > target]
    below = [r for r in runs if settled[r] < target]
    lo = max(coef[r] for r in above)  # the strongest penalty still above the target
    hi = min(coef[r] for r in below)  # the weakest penalty already below it
    assert lo < hi  # the sweep brackets the target the right way round
    res = CliRunner().invoke(main, ["recommend", *map(str, runs), "--target-l0", str(target), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)
    fit = rec["recommendation"] if "recommendation" in rec else rec
    assert fit["coefficient"] == "l0_coefficient"
    assert lo < fit["l1_alpha"] < hi
    assert lo <= fit["low"] <= fit["l1_alpha"] <= fit["high"] <= hi
    res = CliRunner().invoke(main, ["recommend", *map(str, runs), "--target-l0", str(target)])
    assert res.output.startswith("l0_coefficient: ") and "l1_alpha" not in res.output
    assert "lower l0_coefficient -> weaker sparsity penalty -> more active features -> higher L0" in res.output


def test_compare_excludes_runs_of_another_coefficient(fx, tmp_path) -> None:
    res = CliRunner().invoke(main, ["compare", str(fx["jumprelu"]), str(fx["jumprelu_low"]), str(fx["jumprelu_high"]),
                                    str(fx["clean"]), str(fx["topk"]), "--target-l0", "0.05", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["coefficient"] == "l0_coefficient"
    excluded = {r["id"]: r["excluded"] for r in doc["runs"] if r.get("excluded")}
    assert set(excluded) == {"synthetic_clean", "synthetic_topk"}
    assert "l1_alpha is not on the same scale" in excluded["synthetic_clean"]


def test_a_jumprelu_report_names_its_coefficient_everywhere(fx, tmp_path) -> None:
    res = CliRunner().invoke(main, ["analyze", str(fx["jumprelu"]), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "r" / "report.md").read_text()
    html = (tmp_path / "r" / "report.html").read_text()
    assert "**Architecture:** JumpReLU" in md
    assert "l1_alpha" not in md and "l1_alpha" not in html
    assert "l0_coefficient" in md


@pytest.mark.slow
def test_tune_moves_l0_coefficient_the_right_way_and_refuses_topk(tmp_path) -> None:
    pytest.importorskip("torch")
    import yaml

    cfg = tmp_path / "jr.yaml"
    cfg.write_text(yaml.safe_dump({"sae_variant": "jumprelu", "l0_coefficient": 0.005, "total_steps": 600,
                                   "batch_size": 128, "d_in": 32, "expansion_factor": 4, "learning_rate": 0.01,
                                   "checkpoint_every": 0, "threads": 1}))
    out = tmp_path / "camp"
    res = CliRunner().invoke(main, ["tune", str(cfg), "--target-l0", "0.05", "--tolerance", "0.2", "--max-runs", "3",
                                    "--out", str(out)])
    assert res.exit_code in (0, 1), res.output
    state = json.loads((out / "campaign.json").read_text())
    its = state["iterations"]
    assert len(its) >= 2
    for k in range(1, len(its)):  # each proposal moves l0_coefficient the right way from every run before it
        new = its[k]["l1_alpha"]
        for prev in its[:k]:
            assert (new > prev["l1_alpha"]) if prev["row"]["settled_l0"] > 0.05 else (new < prev["l1_alpha"])
        run = read_run(out / its[k]["run_id"])
        assert float(run.config["l0_coefficient"]) == pytest.approx(new)
        assert run.config.get("l1_alpha") is None
    assert "l1_alpha" not in (out / "campaign.md").read_text()
    topk = tmp_path / "topk.yaml"
    topk.write_text(yaml.safe_dump({"sae_variant": "topk", "k": 8, "d_in": 32, "expansion_factor": 4}))
    res = CliRunner().invoke(main, ["tune", str(topk), "--target-l0", "0.05", "--out", str(tmp_path / "t")])
    assert res.exit_code != 0
    assert res.output.startswith("Error: sae_variant topk: L0 is set by k (8)")
    assert not (tmp_path / "t").exists()
