"""`sae-report train` takes the SAELens / sparsify / dictionary_learning names the analyzer reads in
their logs (one alias table: ``sae_report.runlog.aliases.CONFIG_ALIASES``); counts in tokens become
steps with the batch size; an unknown name gets a hint."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("torch")

from sae_report.cli import main  # noqa: E402
from trainer.config import ConfigError, TrainConfig  # noqa: E402

TINY = ["--set", "d_in=16", "--set", "d_sae=64", "--set", "threads=1", "--set", "synth_active=3",
        "--set", "checkpoint_every=0", "-q"]


def _train(tmp_path: Path, *args: str):
    return CliRunner().invoke(main, ["train", *args, *TINY, "--out", str(tmp_path / "runs")])


def _config(tmp_path: Path) -> dict:
    (run,) = (tmp_path / "runs").iterdir()
    return yaml.safe_load((run / "config.yaml").read_text())


def test_train_accepts_saelens_names(tmp_path):
    cfg = tmp_path / "saelens.yaml"
    cfg.write_text(yaml.safe_dump({"lr": 0.003, "l1_coefficient": 0.05, "train_batch_size_tokens": 128,
                                   "training_tokens": 128 * 60, "dead_feature_window": 40, "l1_warm_up_steps": 10,
                                   "feature_sampling_window": 30}))
    res = _train(tmp_path, str(cfg))
    assert res.exit_code == 0, res.output + res.stderr
    got = _config(tmp_path)
    assert (got["learning_rate"], got["l1_alpha"], got["batch_size"], got["total_steps"]) == (0.003, 0.05, 128, 60)
    assert (got["dead_window"], got["l1_warmup_steps"], got["l1_schedule"], got["resample_interval"]) == (40, 10, "warmup", 30)
    assert not {"lr", "l1_coefficient", "training_tokens"} & set(got)  # recorded under our names


def test_train_set_with_other_tools_names_and_tokens(tmp_path):
    # sparsify's dead_feature_threshold counts tokens: 6,400 tokens / 128 per step = 50 steps
    res = _train(tmp_path, "--set", "lr=0.002", "--set", "batch_size=128", "--set", "num_tokens=5120",
                 "--set", "dead_feature_threshold=6400", "--set", "dict_size=32")
    assert res.exit_code == 0, res.output + res.stderr
    got = _config(tmp_path)
    # dict_size=32 came before TINY's d_sae=64: the later setting wins, whatever its name
    assert (got["learning_rate"], got["total_steps"], got["dead_window"], got["d_sae"]) == (0.002, 40, 50, 64)


def test_unknown_and_conflicting_names_say_what_to_use(tmp_path):
    res = _train(tmp_path, "--set", "lrr=0.1")
    assert res.exit_code == 2 and res.stderr == "Error: --set lrr=0.1: unknown key 'lrr' (did you mean 'lr'?)\n"
    res = _train(tmp_path, "--set", "l1_coeficient=0.1")
    assert res.stderr == "Error: --set l1_coeficient=0.1: unknown key 'l1_coeficient' (did you mean 'l1_coefficient'?)\n"
    res = _train(tmp_path, "--set", "lr=fast")
    assert res.stderr == "Error: --set lr=fast: lr (our learning_rate): must be a number, got 'fast'\n"
    both = tmp_path / "both.yaml"
    both.write_text("lr: 0.001\nlearning_rate: 0.002\n")
    res = _train(tmp_path, str(both))
    assert res.exit_code == 2 and res.stderr == f"Error: {both}: lr and learning_rate both set learning_rate; keep one\n"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_later_sources_win_between_a_name_and_its_alias():
    assert TrainConfig.from_yaml(None, ["total_steps=10", "training_tokens=51200"]).total_steps == 100
    assert TrainConfig.from_yaml(None, ["training_tokens=51200", "total_steps=10"]).total_steps == 10
    assert TrainConfig.from_dict({"lr": 0.1, "learning_rate": 0.1}).learning_rate == 0.1  # agreeing is fine
    assert TrainConfig.from_dict({"num_latents": 0, "d_in": 8}).d_sae is None  # sparsify's 0: from expansion_factor
    with pytest.raises(ConfigError, match="training_tokens \\(our total_steps\\): must be > 0 tokens, got 0"):
        TrainConfig.from_yaml(None, ["training_tokens=0"])
