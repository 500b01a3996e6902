"""A real SAELens run, logged to W&B offline by SAELens' own trainer, analysed with its density keys
(issue 17): ``sparsity/below_1e-5`` / ``below_1e-6`` (counts, read as shares of d_sae) and
``metrics/mean_log10_feature_sparsity`` are columns of the analysis, not "columns not used", and the
values equal what SAELens handed to W&B (recorded in the writing process, not read by our reader)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sae_lens")
pytest.importorskip("wandb")

from sae_report import load_run  # noqa: E402

D_IN, D_SAE, BATCH, STEPS, WINDOW = 16, 64, 64, 60, 10

SCRIPT = r"""
import json, sys, torch, wandb
from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.config import LoggingConfig
from sae_lens.training.sae_trainer import SAETrainer, SAETrainerConfig
a = json.loads(sys.argv[1])
torch.manual_seed(0)
torch.set_num_threads(1)
feats = torch.randn(24, a["d_in"])
def provider():
    g = torch.Generator().manual_seed(1)
    while True:
        on = (torch.rand(a["batch"], 24, generator=g) < 0.15).float()
        yield on @ feats
run = wandb.init(project="sae", config={"architecture": "standard", "d_in": a["d_in"], "d_sae": a["d_sae"],
                                       "l1_coefficient": 5.0, "lr": 3e-4})
logged = []
_log = wandb.log  # (wandb.init sets it: wrap it after)
def log(d, step=None, **kw):  # what SAELens hands to W&B, kept for the test to compare against
    logged.append([step, {k: v for k, v in d.items() if isinstance(v, (int, float))}])
    return _log(d, step=step, **kw)
wandb.log = log
sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=a["d_in"], d_sae=a["d_sae"], l1_coefficient=5.0, device="cpu"))
cfg = SAETrainerConfig(total_training_samples=a["steps"] * a["batch"], train_batch_size_samples=a["batch"], lr=3e-4,
                       lr_end=3e-4, device="cpu", n_batches_for_norm_estimate=1, feature_sampling_window=a["window"],
                       dead_feature_window=a["window"],
                       logger=LoggingConfig(log_to_wandb=True, wandb_log_frequency=1))
SAETrainer(cfg=cfg, sae=sae, data_provider=provider()).fit()
json.dump(logged, open(a["out"], "w"))
print(run.id)
wandb.finish()
"""


@pytest.fixture(scope="module")
def saelens_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("saelens_wandb")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(root), "WANDB_SILENT": "true",
           "WANDB_CONSOLE": "off", "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
           "WANDB_API_KEY": "", "WANDB_BASE_URL": "http://127.0.0.1:9"}
    args = json.dumps({"d_in": D_IN, "d_sae": D_SAE, "batch": BATCH, "steps": STEPS, "window": WINDOW,
                       "out": str(root / "logged.json")})
    proc = subprocess.run([sys.executable, "-c", SCRIPT, args], env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(proc.stderr[-3000:])
    return root


def _logged(root: Path) -> dict[int, dict[str, float]]:
    """What SAELens handed to ``wandb.log`` (recorded by the script, not read back by our reader):
    the rows with the density keys, by step."""
    rows = json.loads((root / "logged.json").read_text())
    return {int(step): row for step, row in rows if "sparsity/below_1e-5" in row}


def test_saelens_density_keys_are_read_as_our_columns(saelens_run: Path) -> None:
    logged = _logged(saelens_run)
    assert len(logged) >= STEPS // WINDOW - 1  # one row per feature-sampling window
    data = load_run(saelens_run)
    assert not any("sparsity/below_1e-5" in n or "mean_log10_feature_sparsity" in n for n in data.notes
                   if n.startswith("columns not used"))
    m = data.metrics
    for col in ("density_below_1e-5", "density_below_1e-6", "mean_log10_density"):
        assert col in m.columns, (col, m.columns)
    for step, row in logged.items():
        (ours,) = m.filter(m["step"] == step).iter_rows(named=True)
        assert ours["density_below_1e-5"] == pytest.approx(row["sparsity/below_1e-5"] / D_SAE)
        assert ours["density_below_1e-6"] == pytest.approx(row["sparsity/below_1e-6"] / D_SAE)
        assert ours["mean_log10_density"] == pytest.approx(row["metrics/mean_log10_feature_sparsity"])


def test_the_analysis_of_a_saelens_run_summarises_its_density(saelens_run: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sae_report.cli import main

    res = CliRunner().invoke(main, ["analyze", str(saelens_run), "--out", str(tmp_path / "r"), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "r" / "analysis.json").read_text())
    assert doc["run"]["source"] == "wandb"
    logged = _logged(saelens_run)
    last = max(logged)
    assert doc["summary"]["mean_log10_density"]["final"] == pytest.approx(
        logged[last]["metrics/mean_log10_feature_sparsity"])
