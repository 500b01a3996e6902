"""Issue 17, the analyzer and report side: dense latents, an ultra-low-density cluster, shrinkage
(``l2_ratio``) and the spliced-in LM loss (``ce_loss_score``), from our run format and from a
SAELens-keyed W&B log. Every number checked here is computed from the raw log in the test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from claimcheck import RawLog, check_document
from sae_report.analysis import AnalyzerConfig, analyze
from sae_report.analysis.claims import literal_digits
from sae_report.analysis.result import FindingKind
from sae_report.fixtures import write_run
from sae_report.fixtures.scenarios_diagnostics import DENSE_PLANTED, SHRINKAGE_LEVEL, SPLICED_SCORE
from sae_report.ingest import load_run
from sae_report.report import write_report
from sae_report.runlog import METRIC_COLUMNS, read_run

K = FindingKind


def _one(analysis, kind: FindingKind):
    hits = [f for f in analysis.findings if f.kind == kind]
    assert len(hits) == 1, [(f.kind.value, f.metric, f.step) for f in analysis.findings]
    return hits[0]


def _raw(run_dir: Path) -> pl.DataFrame:
    """The metrics parts read with polars alone (one run, no resume: the parts simply concatenate)."""
    frames = []
    for p in sorted((run_dir / "metrics").glob("part-*")):
        f = pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p, infer_schema_length=None)
        frames.append(f.select([pl.col(c).cast(pl.Int64 if c == "step" else pl.Float64) for c in f.columns]))
    return pl.concat(frames, how="diagonal_relaxed").sort("step")


def test_the_new_columns_are_in_the_run_format() -> None:
    for c in ("l2_ratio", "density_below_1e-5", "density_below_1e-6", "mean_log10_density", "dense_features",
              "ce_loss_clean", "ce_loss_with_sae", "ce_loss_ablated", "ce_loss_score"):
        assert c in METRIC_COLUMNS
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "| `l2_ratio` |" in readme and "| `ce_loss_score` |" in readme and "| `dense_features` |" in readme


def test_dense_latents_count_since_and_growth(tmp_path: Path) -> None:
    run = write_run(tmp_path, "dense_latents", steps=30_000, rows=1_500, seed=4)
    analysis = analyze(read_run(run.run_dir))
    assert run.truth.all_problems(analysis) == []
    f = _one(analysis, K.DENSE_LATENTS)
    raw = _raw(run.run_dir).select("step", "dense_features").drop_nulls()
    steps, dense = raw["step"].to_numpy(), raw["dense_features"].to_numpy()
    final = dense[-1]
    assert final == DENSE_PLANTED
    assert f.evidence.final == final and f.claims["final"].step == steps[-1]
    assert f"{int(final)} features fire on more than a tenth of the tokens at step {steps[-1]:,}" in f.explanation
    # since: the first step after the low point above half the final count
    low = int(np.argmin(dense))
    since = steps[low:][dense[low:] > 0.5 * final][0]
    assert f.evidence.since == since and f.step == since and f"since step {since:,}" in f.explanation
    assert f.evidence.growing and "still growing" in f.explanation and f.severity == "warn"
    assert f.evidence.d_sae == 8192 and f"({100 * final / 8192:.3f}% of the dictionary)" in f.explanation
    # fewer than the warning threshold: reported for the record only
    quiet = analyze(read_run(run.run_dir), config=AnalyzerConfig(dense_warn=100.0))
    assert _one(quiet, K.DENSE_LATENTS).severity == "info"
    assert not [x for x in analyze(read_run(run.run_dir), config=AnalyzerConfig(dense_report=60.0)).findings
                if x.kind == K.DENSE_LATENTS]


def test_strong_l1_shrinkage_says_l2_ratio_is_well_below_one(tmp_path: Path) -> None:
    run = write_run(tmp_path, "shrinkage", steps=20_000, rows=2_000, seed=2)
    analysis = analyze(read_run(run.run_dir))
    assert run.truth.all_problems(analysis) == []
    f = _one(analysis, K.SHRINKAGE)
    raw = _raw(run.run_dir).select("step", "l2_ratio").drop_nulls()
    second = raw.filter(pl.col("step") >= 10_000)["l2_ratio"].to_numpy()
    med = float(np.median(second))
    assert med == pytest.approx(SHRINKAGE_LEVEL, abs=0.02)
    assert f.evidence.median == pytest.approx(med, rel=1e-12)
    assert f"has a median of {med:.4g} over the second half" in f.explanation and "well below one" in f.explanation
    assert "l1_alpha is constant at 0.2 over the run" in f.explanation and f.severity == "warn"
    assert f.evidence.l1_alpha == 0.2 and f.evidence.tracks is None and f.evidence.l1_penalty
    u = _one(analysis, K.ULTRA_LOW_DENSITY)
    last = _raw(run.run_dir).select("step", "density_below_1e-5").drop_nulls()[-1]
    assert u.evidence.final == last["density_below_1e-5"][0] and "no resampling" in u.explanation


def test_shrinkage_that_tracks_an_l1_alpha_change(tmp_path: Path) -> None:
    """l1_alpha steps up at 60% of the run and the ratio drops with it: the sentence says it tracks."""
    from sae_report.runlog import RunLogWriter

    n = 4001
    step = np.arange(n, dtype=np.int64) * 5
    t = step / step[-1]
    l1 = np.where(t < 0.6, 0.05, 0.2)
    rng = np.random.default_rng(0)
    l2 = np.where(t < 0.6, 0.85, 0.7) + rng.normal(0, 0.005, n)
    l0 = 0.05 + 0.45 * np.exp(-t / 0.02)
    run_dir = tmp_path / "run"
    with RunLogWriter(run_dir) as w:
        w.write_config({"run_id": "l1_step", "d_sae": 1024, "l1_alpha": 0.05, "total_steps": int(step[-1])})
        w.log_metrics({"step": step, "l0_frac": l0, "l0": l0 * 1024, "loss": 0.01 + np.exp(-t / 0.05), "l1_alpha": l1, "l2_ratio": l2})
        w.log_event("l1_change", int(step[t >= 0.6][0]), value=0.2, reason="step change")
    analysis = analyze(read_run(run_dir))
    f = _one(analysis, K.SHRINKAGE)
    assert f.evidence.tracks is True and "It tracks l1_alpha" in f.explanation
    assert f.evidence.before == pytest.approx(0.85, abs=0.01) and f.evidence.after == pytest.approx(0.7, abs=0.01)
    doc = json.loads(json.dumps(analysis.to_dict()))
    assert check_document(doc, RawLog.read(run_dir)) == []


def test_resampling_that_feeds_an_ultra_low_density_cluster(tmp_path: Path) -> None:
    """The share below 1e-5 jumps by 4 points right after each of three resamples: resampling feeds it."""
    from sae_report.runlog import RunLogWriter

    step = np.arange(0, 30_001, 50, dtype=np.int64)
    t = step / step[-1]
    resamples = [7_500, 15_000, 22_500]
    share = 0.08 + sum(np.where(step >= r, 0.04, 0.0) for r in resamples)
    run_dir = tmp_path / "fed"
    with RunLogWriter(run_dir) as w:
        w.write_config({"run_id": "fed", "d_sae": 2048, "l1_alpha": 0.05, "resample_interval": 7_500})
        w.log_metrics({"step": step, "l0_frac": 0.05 + 0.45 * np.exp(-t / 0.02), "l0": (0.05 + 0.45 * np.exp(-t / 0.02)) * 2048,
                       "loss": 0.01 + np.exp(-t / 0.05), "density_below_1e-5": share})
        for r in resamples:
            w.log_event("resample", r, n=100)
    analysis = analyze(read_run(run_dir))
    f = _one(analysis, K.ULTRA_LOW_DENSITY)
    assert f.evidence.fed and f.evidence.resamples == 3 and f.evidence.jump == pytest.approx(0.04)
    assert f.evidence.final == pytest.approx(0.2) and "Resampling feeds it" in f.explanation
    assert "4.0 points right after each of 3 resamples" in f.explanation
    doc = json.loads(json.dumps(analysis.to_dict()))
    assert check_document(doc, RawLog.read(run_dir)) == []


def test_poor_spliced_loss_at_a_fine_l0(tmp_path: Path) -> None:
    run = write_run(tmp_path, "poor_spliced", steps=20_000, rows=2_000, seed=1)
    analysis = analyze(read_run(run.run_dir))
    assert run.truth.all_problems(analysis) == []
    f = _one(analysis, K.POOR_SPLICED_LOSS)
    raw = _raw(run.run_dir).filter(pl.col("step") >= 10_000)
    clean, with_sae, ablated = (raw[c].to_numpy() for c in ("ce_loss_clean", "ce_loss_with_sae", "ce_loss_ablated"))
    score = float(np.median((ablated - with_sae) / (ablated - clean)))  # SAELens' definition, by hand
    assert score == pytest.approx(SPLICED_SCORE, abs=0.02) and f.evidence.score == pytest.approx(score, rel=1e-9)
    assert f.evidence.l0_on_target is True and "L0 looks fine" in f.explanation and f.severity == "warn"
    # the report shows the spliced-in loss beside explained variance, and the new charts
    data = read_run(run.run_dir)
    write_report(analysis, data, tmp_path / "report", date="2025-11-01")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "spliced-in LM loss (ce_loss_score)" in md and "| **Spliced-in LM loss (ce_loss_score)** |" in md
    assert "| **Shrinkage (l2_ratio)** |" in md and "charts/shrinkage.svg" in md
    assert "Poor spliced-in loss" in md


def test_density_snapshots_are_read_and_drawn(tmp_path: Path) -> None:
    """stats/feature_density/step_N.npy (the trainer keeps the per-feature density at intervals): at
    most four snapshots read, evenly spread, the last one included; drawn as overlaid histograms."""
    run = write_run(tmp_path, "dense_latents", steps=20_000, rows=500)
    folder = run.run_dir / "stats" / "feature_density"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for step in range(2_000, 20_001, 2_000):
        freq = 10 ** rng.normal(-3, 1, 512)
        freq[: step // 2_000] = 0.3  # dense latents appear over training
        np.save(folder / f"step_{step:08d}.npy", freq)
    (folder / "step_bad.npy").write_text("not an array")
    data = read_run(run.run_dir)
    assert sorted(data.feature_density) == [2_000, 8_000, 14_000, 20_000]
    assert (data.feature_density[20_000][:10] == 0.3).all()
    write_report(analyze(data), data, tmp_path / "report", date="2025-11-01")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "charts/density_hist.svg" in md and (tmp_path / "report" / "charts" / "density_hist.svg").is_file()
    assert "charts/density.svg" in md and "charts/dense.svg" in md


def test_no_diagnostic_columns_no_diagnostic_findings(tmp_path: Path) -> None:
    run = write_run(tmp_path, "clean", steps=20_000, rows=1_000)
    analysis = analyze(read_run(run.run_dir))
    kinds = {K.DENSE_LATENTS, K.ULTRA_LOW_DENSITY, K.SHRINKAGE, K.POOR_SPLICED_LOSS}
    assert not [f for f in analysis.findings if f.kind in kinds]
    assert not [s for s in analysis.skipped if s.analysis in {k.value for k in kinds}]


def test_topk_shrinkage_is_not_blamed_on_an_l1_penalty(tmp_path: Path) -> None:
    from sae_report.runlog import RunLogWriter

    step = np.arange(0, 20_001, 10, dtype=np.int64)
    t = step / step[-1]
    run_dir = tmp_path / "topk"
    with RunLogWriter(run_dir) as w:
        w.write_config({"run_id": "topk_l2", "d_sae": 4096, "sae_variant": "topk", "k": 32})
        w.log_metrics({"step": step, "l0": np.full(t.shape, 32.0), "mse": 0.01 + np.exp(-t / 0.05),
                       "l2_ratio": np.full(t.shape, 0.8)})
    f = _one(analyze(read_run(run_dir)), K.SHRINKAGE)
    assert f.severity == "info" and not f.evidence.l1_penalty and "not L1 shrinkage" in f.explanation
    assert "l1_alpha" not in f.explanation.split("not L1 shrinkage")[1]


# --- a SAELens-keyed W&B log ------------------------------------------------------------------------


D_SAE = 256


def _saelens_points(total: int = 4000, every: int = 10, eval_every: int = 200) -> list[tuple[int, dict[str, float]]]:
    """SAELens' keys as its trainer and evals log them: the training metrics every ``every`` steps,
    the sparsity summary (COUNTS of features) and the evals (l2_ratio, CE losses) every ``eval_every``."""
    out = []
    for step in range(0, total + 1, every):
        t = step / total
        l0 = 128.0 * math.exp(-t / 0.03) + 12.0
        loss = 0.01 + 0.5 * math.exp(-t / 0.05)
        row = {"losses/overall_loss": loss, "losses/mse_loss": 0.8 * loss, "losses/l1_loss": 0.2 * loss,
               "metrics/explained_variance": 1.0 - 0.8 * loss, "metrics/l0": l0,
               "details/current_learning_rate": 3e-4, "details/current_l1_coefficient": 5.0,
               "sparsity/dead_features": float(round(10 * min(1.0, t / 0.3)))}
        if step % eval_every == 0:
            below5 = round(D_SAE * min(0.35, 0.35 * t / 0.4))  # an ultra-low cluster of 35% of the features
            row.update({"sparsity/below_1e-5": float(below5), "sparsity/below_1e-6": float(round(0.7 * below5)),
                        "metrics/mean_log10_feature_sparsity": -2.5 - 2.0 * min(1.0, t / 0.4)})
            clean, ablated = 3.3, 9.1
            score = 0.55 * (1 - math.exp(-t / 0.05))
            with_sae = ablated - score * (ablated - clean)
            row.update({"metrics/l2_ratio": 0.72 + 0.25 * math.exp(-t / 0.05),
                        "metrics/ce_loss_with_sae": with_sae, "metrics/ce_loss_without_sae": clean,
                        "metrics/ce_loss_with_ablation": ablated,
                        "metrics/ce_loss_score": (ablated - with_sae) / (ablated - clean)})
        out.append((step, row))
    return out


def _history_export(folder: Path, points) -> Path:
    """A W&B full-history export (``pd.DataFrame(run.scan_history()).to_csv()``) and its config."""
    keys = list(dict.fromkeys(k for _, r in points for k in r))
    lines = [",".join(["", "_step", "_runtime", "_timestamp", *keys])]
    for i, (step, row) in enumerate(points):
        cells = [str(i), str(step), f"{step * 0.01:.2f}", f"{1.7e9 + step * 0.01:.2f}"]
        cells += ["" if k not in row else repr(row[k]) for k in keys]
        lines.append(",".join(cells))
    path = folder / "wandb_history_export.csv"
    path.write_text("\n".join(lines) + "\n")
    cfg = {"d_in": 64, "d_sae": D_SAE, "l1_coefficient": 5.0, "lr": 3e-4, "train_batch_size_tokens": 4096,
           "architecture": "standard", "target_l0": 12}
    yaml_lines = ["wandb_version: 1"]
    for key, value in cfg.items():
        yaml_lines += [f"{key}:", "  desc: null", f"  value: {value}"]
    (folder / "wandb_history_export.config.yaml").write_text("\n".join(yaml_lines) + "\n")
    return path


def test_saelens_keys_are_read_as_the_new_columns_and_produce_the_findings(tmp_path: Path) -> None:
    points = _saelens_points()
    path = _history_export(tmp_path, points)
    data = load_run(path)
    assert data.source == "wandb"
    notes = " | ".join(data.notes)
    for key in ("sparsity/below_1e-5", "sparsity/below_1e-6", "metrics/mean_log10_feature_sparsity",
                "metrics/l2_ratio", "metrics/ce_loss_score", "metrics/ce_loss_with_sae",
                "metrics/ce_loss_without_sae", "metrics/ce_loss_with_ablation"):
        assert key in notes, key
    assert not [n for n in data.notes if n.startswith("columns not used")], data.notes
    m = data.metrics
    by_step = {s: r for s, r in points}
    rows = {r["step"]: r for r in m.iter_rows(named=True)}
    for step in (0, 1600, 4000):
        raw = by_step[step]
        assert rows[step]["density_below_1e-5"] == raw["sparsity/below_1e-5"] / D_SAE  # a count -> a share
        assert rows[step]["density_below_1e-6"] == raw["sparsity/below_1e-6"] / D_SAE
        assert rows[step]["l2_ratio"] == raw["metrics/l2_ratio"]
        assert rows[step]["ce_loss_score"] == raw["metrics/ce_loss_score"]
        assert rows[step]["ce_loss_clean"] == raw["metrics/ce_loss_without_sae"]
        assert rows[step]["ce_loss_ablated"] == raw["metrics/ce_loss_with_ablation"]
        assert rows[step]["mean_log10_density"] == raw["metrics/mean_log10_feature_sparsity"]
    assert rows[10]["ce_loss_score"] is None  # logged at the eval interval only: never forward-filled

    analysis = analyze(data)
    shrink = _one(analysis, K.SHRINKAGE)
    evals = [(s, r["metrics/l2_ratio"]) for s, r in points if "metrics/l2_ratio" in r and s >= 2000]
    assert shrink.evidence.median == pytest.approx(float(np.median([v for _, v in evals])), rel=1e-12)
    assert "l1_alpha is constant at 5 over the run" in shrink.explanation
    ultra = _one(analysis, K.ULTRA_LOW_DENSITY)
    assert ultra.metric == "density_below_1e-5"
    assert ultra.evidence.final == points[-1][1]["sparsity/below_1e-5"] / D_SAE
    spliced = _one(analysis, K.POOR_SPLICED_LOSS)
    scores = [r["metrics/ce_loss_score"] for s, r in points if "metrics/ce_loss_score" in r and s >= 2000]
    assert spliced.evidence.score == pytest.approx(float(np.median(scores)), rel=1e-12)
    assert spliced.evidence.l0_on_target is True
    for f in analysis.findings:
        assert literal_digits(f.template) == "", f.template

    # --map still wins over the aliases; and without d_sae the counts cannot become shares
    (tmp_path / "wandb_history_export.config.yaml").unlink()
    bare = load_run(path)
    assert "density_below_1e-5" not in bare.metrics.columns
    assert any("no share of the dictionary" in n for n in bare.notes)
