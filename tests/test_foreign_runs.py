"""Runs logged by other tools (SAELens, sparsify, a TensorBoard log with tags of its own) through
`import`, `compare` and `recommend`: only training settings are compared, the next config is also
written in the source tool's key names, `--map` names metrics the aliases do not know, and
sparsify's dead-feature window (in tokens) is converted to steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from ingest_support import cli

D_SAE = 256
BATCH_TOKENS = 4096


def _saelens_run(folder: Path, name: str, coef: float, level: float, *, lr: float = 3e-4, steps: int = 2000,
                 trend: bool = False, seed: int = 0) -> Path:
    """A SAELens-style W&B history export (``metrics/l0`` a count every 10 steps) with SAELens'
    config beside it: bookkeeping sections (``logger``, ``sae``) that differ from run to run."""
    rng = np.random.default_rng(seed)
    s = np.arange(0, steps + 1, 10)
    l0 = level + (0.5 * D_SAE - level) * np.exp(-s / (steps / 13))
    if trend:  # still falling steadily through the second half
        l0 = l0 * (1.6 - 0.6 * s / steps)
    l0 = l0 * (1 + rng.normal(0, 0.01, len(s)))
    d = folder / name
    d.mkdir(parents=True)
    pl.DataFrame({"_step": s, "losses/overall_loss": 1 / (1 + s / 100), "metrics/l0": l0,
                  "details/l1_coefficient": np.full(len(s), coef),
                  "sparsity/dead_features": np.zeros(len(s))}).write_csv(d / f"{name}.csv")
    cfg = {"l1_coefficient": coef, "lr": lr, "d_in": 16, "d_sae": D_SAE, "training_tokens": BATCH_TOKENS * steps,
           "train_batch_size_tokens": BATCH_TOKENS, "dead_feature_window": 1000, "dead_feature_threshold": 1e-8,
           "seed": 42, "hook_name": "blocks.0.hook_resid_pre", "model_name": "tiny", "context_size": 128,
           "logger": {"wandb_project": "sweep", "run_name": name, "log_every": 10, "wandb_id": f"{name}-{seed}"},
           "sae": {"d_in": 16, "d_sae": D_SAE, "l1_coefficient": coef, "architecture": "standard",
                   "metadata": {"sae_lens_version": "6.54", "hook": name, "notes": "x" * 2000}}}
    (d / f"{name}.config.yaml").write_text(yaml.safe_dump(cfg))
    return d / f"{name}.csv"


def _imported_sweep(tmp_path: Path, **kw) -> Path:
    """Three SAELens runs (l1_coefficient 1, 3, 10), imported into sibling run directories."""
    logs = tmp_path / "logs"
    sweep = tmp_path / "sweep"
    for i, (name, coef, level) in enumerate((("run_a", 1.0, 40.0), ("run_b", 3.0, 15.0), ("run_c", 10.0, 5.0))):
        src = _saelens_run(logs, name, coef, level, seed=i, **kw.get(name, {}))
        res = cli("import", src, "--out", sweep / name)
        assert res.exit_code == 0, res.output
    return sweep


def test_imported_saelens_sweep_compares_training_settings_only(tmp_path):
    sweep = _imported_sweep(tmp_path)
    res = cli("compare", sweep, "--target-l0", "0.1", "--json", "--no-files")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["confounders"] == [] and not any("Confounder" in w for w in doc["warnings"])
    res = cli("recommend", sweep, "--target-l0", "0.1", "--no-rules")
    assert res.exit_code == 0, res.output
    assert "Confounder" not in res.output and "imported_from" not in res.output and "logger" not in res.output
    # a real training setting that changed is still a confounder, under our name (SAELens' lr)
    other = tmp_path / "other"
    _imported_sweep(other, run_c={"lr": 1e-3})
    doc = json.loads(cli("compare", other / "sweep", "--target-l0", "0.1", "--json", "--no-files").stdout)
    assert [c["key"] for c in doc["confounders"]] == ["learning_rate"]
    assert doc["confounders"][0]["message"].startswith("Confounder: learning_rate changed together with l1_alpha (")


def test_training_settings_come_from_the_trainer_and_the_aliases():
    from sae_report.compare.comparison import training_keys

    keys = training_keys()
    assert {"learning_rate", "resample_interval", "batch_size", "d_sae", "lr_schedule", "sae_variant",
            "l1_warmup_steps", "total_steps"} <= keys
    assert not {"imported_from", "logger", "sae", "run_id", "seed", "device", "threads", "log_every",
                "training_tokens"} & keys  # tokens are compared as the steps they give


def test_write_config_on_saelens_runs_also_writes_saelens_keys(tmp_path):
    # run_c (the latest, the base) is still falling: the rules lengthen it (total_steps x1.5)
    sweep = _imported_sweep(tmp_path, run_c={"trend": True})
    nxt = tmp_path / "next.yaml"
    res = cli("recommend", sweep, "--target-l0", "0.1", "--write-config", nxt, "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    ours = yaml.safe_load(nxt.read_text())
    from trainer.config import TrainConfig

    TrainConfig.from_dict(ours)  # still loadable by `sae-report train`
    src_file = tmp_path / "next.saelens.yaml"
    assert doc["source_config_written"] == str(src_file) and doc["source_changes"]["tool"] == "SAELens"
    theirs = yaml.safe_load(src_file.read_text())
    assert theirs["l1_coefficient"] == theirs["sae"]["l1_coefficient"] == ours["l1_alpha"] == doc["l1_alpha"]
    assert ours["total_steps"] == 3000  # 2,000 x 1.5: the base run had not converged
    assert theirs["training_tokens"] == 3000 * BATCH_TOKENS
    text = src_file.read_text()
    assert "# The next run in the key names of SAELens, based on run" in text
    assert f"#   training_tokens: {2000 * BATCH_TOKENS} -> {3000 * BATCH_TOKENS}  (total_steps 2000 -> 3000 steps x " \
           f"{BATCH_TOKENS:,} tokens per step (train_batch_size_tokens {BATCH_TOKENS} tokens per step); " in text
    head = nxt.read_text()
    assert "# The base run was trained with SAELens: the same changes in its own key names are in next.saelens.yaml." in head
    assert "uses its built-in synthetic data; add data_source: files and data_path" in head
    res = cli("recommend", sweep, "--target-l0", "0.1", "--write-config", tmp_path / "n2.yaml")
    assert "wrote " + str(tmp_path / "n2.saelens.yaml") + ": the same changes in the key names of SAELens (" in res.output


def test_write_config_on_our_runs_writes_one_file(tmp_path):
    from sae_report.fixtures import write_siblings

    write_siblings(tmp_path / "runs", steps=10_000, rows=200)
    res = cli("recommend", tmp_path / "runs", "--target-l0", "0.05", "--write-config", tmp_path / "next.yaml",
              "--no-rules", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["source_changes"] is None and doc["source_config_written"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["next.yaml", "runs"]


def _custom_csv(folder: Path, name: str, coef: float, level: float) -> Path:
    """A log whose metric names no alias knows (``loss/total``, ``my_l0`` as a count)."""
    folder.mkdir(parents=True, exist_ok=True)
    s = np.arange(1, 401)
    l0 = level + (50 - level) * np.exp(-s / 40)
    f = folder / f"{name}.csv"
    pl.DataFrame({"step": s, "loss/total": 1 / s, "my_l0": l0}).write_csv(f)
    (folder / f"{name}.config.yaml").write_text(yaml.safe_dump({"l1_alpha": coef, "d_sae": 100}))
    return f


def test_map_names_unknown_metrics_on_import_compare_recommend(tmp_path):
    a = _custom_csv(tmp_path / "logs", "a", 0.01, 20.0)
    b = _custom_csv(tmp_path / "logs", "b", 0.04, 4.0)
    res = cli("import", a, "--out", tmp_path / "r_a")
    assert res.exit_code == 2
    assert res.stderr == (f"Error: {a}: no known metric column (found: step, loss/total, my_l0); map a name with "
                          "--map NAME=COLUMN (e.g. --map loss/total=loss)\n")
    res = cli("import", a, "--out", tmp_path / "r_a", "--map", "loss/total=loss", "--map", "my_l0=l0")
    assert res.exit_code == 0, res.output
    assert "columns loss, l0, l0_frac" in res.stdout
    back = yaml.safe_load((tmp_path / "r_a" / "config.yaml").read_text())
    assert "loss/total -> loss (--map)" in back["imported_from"]["notes"]
    for command in ("compare", "recommend"):
        args = [command, a, b, "--target-l0", "0.1", "--map", "loss/total=loss,my_l0=l0", "--json"]
        res = cli(*args, *(["--no-files"] if command == "compare" else []))
        assert res.exit_code == 0, (command, res.output)
        doc = json.loads(res.stdout)
        rec = doc["recommendation"] if command == "compare" else doc
        assert 0.01 < rec["l1_alpha"] < 0.04  # 20% and 4% bracket the 10% target
    res = cli("compare", a, "--map", "my_l0=l0_avg", "--no-files")
    assert res.exit_code == 2
    assert "Invalid value for '--map': my_l0=l0_avg: 'l0_avg' is not a metric column; use one of step," in res.output
    res = cli("compare", a, "--map", "my_l0", "--no-files")
    assert res.exit_code == 2 and "my_l0: expected NAME=COLUMN (e.g. loss/total=loss)" in res.output


def test_map_reads_tensorboard_tags(tmp_path):
    from test_ingest_tensorboard import _write_events

    from sae_report.ingest import load_run

    events = [(s, tag, v) for s in range(0, 200, 10)
              for tag, v in (("loss/total", 1 / (1 + s)), ("sparsity/l0_mean", 30 * np.exp(-s / 50) + 5))]
    _write_events(tmp_path / "events.out.tfevents.1.host", events)
    res = cli("import", tmp_path, "--out", tmp_path.parent / "tb_run", "--map", "loss/total=loss",
              "--map", "sparsity/l0_mean=l0")
    assert res.exit_code == 0, res.output
    data = load_run(tmp_path, column_map={"loss/total": "loss", "sparsity/l0_mean": "l0"})
    assert {"loss", "l0"} <= set(data.metrics.columns)
    assert data.metrics.filter(pl.col("step") == 10)["loss"][0] == pytest.approx(1 / 11)
    with pytest.raises(ValueError, match="'nope' is not a metric column"):
        load_run(tmp_path, column_map=["loss/total=nope"])


def test_sparsify_dead_window_counts_tokens_and_is_converted(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    s = np.arange(1, 401)
    pl.DataFrame({"step": s, "fvu/layers.0": 0.5 * np.exp(-s / 100) + 0.1,
                  "dead_pct/layers.0": np.minimum(0.3, s / 1000)}).write_csv(logs / "history.csv")
    cfg = {"sae": {"num_latents": 0, "expansion_factor": 8, "k": 16}, "batch_size": 8, "ctx_len": 256,
           "grad_acc_steps": 1, "dead_feature_threshold": 204_800, "hookpoints": ["layers.0"], "lr": 0.001}
    (logs / "history.config.yaml").write_text(yaml.safe_dump(cfg))
    note = ("config: dead_feature_threshold 204,800 counts tokens, not steps (the dead-feature window): dead_window = "
            "204,800 / 2,048 tokens per step (sparsify: batch_size 8 sequences x ctx_len 256 tokens per step) = 100 steps")
    res = cli("import", logs / "history.csv", "--out", tmp_path / "run")
    assert res.exit_code == 0, res.output
    back = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert back["dead_window"] == 100 and back["dead_window_tokens"] == 204_800  # never 204,800 steps
    assert note in back["imported_from"]["notes"]
    from sae_report.runlog import read_run

    assert read_run(tmp_path / "run").notes.count(f"imported from csv: {note}") == 1  # said once
    # without ctx_len the tokens per step are unknown: the window is left unknown, not read as steps
    cfg.pop("ctx_len")
    (logs / "history.config.yaml").write_text(yaml.safe_dump(cfg))
    from sae_report.ingest import load_run
    from sae_report.runlog.aliases import canonical_config

    data = load_run(logs / "history.csv")
    assert canonical_config(data.config).get("dead_window") is None
    assert any("dead_feature_threshold 204,800 counts tokens, not steps" in n and "not read as steps" in n
               for n in data.notes)
    # SAELens' dead_feature_threshold is a firing frequency (1e-8), never a window; its window is in steps
    saelens = canonical_config({"dead_feature_threshold": 1e-8, "dead_feature_window": 1000, "train_batch_size_tokens": 4096})
    assert saelens["dead_window"] == 1000
