"""`sae-report tune` with the real trainer on tiny configs (a few hundred steps each)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("torch")

from sae_report.cli import main  # noqa: E402
from sae_report.tune import tune  # noqa: E402

TINY = {"total_steps": 300, "batch_size": 128, "d_in": 32, "expansion_factor": 4, "l1_alpha": 0.03,
        "learning_rate": 0.003, "checkpoint_every": 100, "threads": 1}


@pytest.fixture()
def config(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _settled(camp):
    return [(it.l1_alpha, it.row["settled_l0"]) for it in camp.iterations]


@pytest.mark.slow
def test_tune_reaches_target_moving_the_right_way(config, tmp_path):
    out = tmp_path / "camp"
    res = CliRunner().invoke(main, ["tune", str(config), "--target-l0", "0.05", "--tolerance", "0.15",
                                    "--max-runs", "6", "--out", str(out)])
    assert res.exit_code == 0, res.output
    state = json.loads((out / "campaign.json").read_text())
    assert state["status"] == "reached"
    its = state["iterations"]
    assert its[-1]["within"] and not any(it["within"] for it in its[:-1])
    target = 0.05
    # every step moves l1_alpha the right way relative to every run before it
    for k in range(1, len(its)):
        new = its[k]["l1_alpha"]
        for prev in its[:k]:
            s = prev["row"]["settled_l0"]
            assert (new > prev["l1_alpha"]) if s > target else (new < prev["l1_alpha"]), (k, prev)
    assert abs(its[-1]["row"]["settled_l0"] / target - 1) <= 0.15
    assert f"[{len(its)}/6] {its[-1]['run_id']}: settled L0" in res.output
    assert "within tolerance" in res.output
    md = (out / "campaign.md").read_text()
    assert md.count("## Iteration ") == len(its)
    assert "## Final choice" in md and f"**{its[-1]['run_id']}**" in md
    assert len(list((out / "charts").glob("iter_*.svg"))) == len(its)
    html = (out / "campaign.html").read_text()
    assert html.count("vegaEmbed(\"#chart-") == len(its)
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert best["l1_alpha"] == its[-1]["l1_alpha"]
    from trainer.config import TrainConfig

    TrainConfig.from_dict(best)  # ready for `sae-report train CONFIG`


def test_restart_reuses_runs_on_disk(config, tmp_path):
    out = tmp_path / "camp"
    first = tune(config, 0.05, tolerance=0.05, max_runs=2, out_dir=out, analyze=False)
    assert first.status == "budget_spent" and len(first.iterations) == 2
    stamps = {it.run_id: (out / it.run_id / "summary.json").stat().st_mtime_ns for it in first.iterations}
    calls = []

    def counting_train(*args, **kwargs):
        from trainer import train

        calls.append(kwargs.get("run_dir"))
        return train(*args, **kwargs)

    second = tune(config, 0.05, tolerance=0.05, max_runs=3, out_dir=out, train_fn=counting_train, analyze=False)
    assert len(second.iterations) == 3 and len(calls) == 1
    assert Path(calls[0]).name == second.iterations[2].run_id
    for rid, stamp in stamps.items():
        assert (out / rid / "summary.json").stat().st_mtime_ns == stamp  # untouched
    assert _settled(second)[:2] == _settled(first)
    # the campaign folder is also a folder of runs for `recommend`; its next config trains as is
    nxt = tmp_path / "next.yaml"
    res = CliRunner().invoke(main, ["recommend", str(out), "--target-l0", "0.05", "--no-rules",
                                    "--write-config", str(nxt)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["train", str(nxt), "--set", "total_steps=20", "--out", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "r").iterdir()
    assert yaml.safe_load((run / "config.yaml").read_text())["l1_alpha"] == yaml.safe_load(nxt.read_text())["l1_alpha"]


def test_different_config_in_the_same_folder_is_refused(config, tmp_path):
    out = tmp_path / "camp"
    tune(config, 0.05, max_runs=1, out_dir=out, analyze=False)
    res = CliRunner().invoke(main, ["tune", str(config), "--target-l0", "0.05", "--max-runs", "2", "--out", str(out),
                                    "--set", "learning_rate=0.001"])
    assert res.exit_code == 1
    assert res.output.strip() == (f"Error: {out}: holds a campaign with a different config (learning_rate: 0.003 "
                                  "there, 0.001 now); use another --out")


@pytest.mark.slow
def test_ctrl_c_then_rerun_resumes_from_the_checkpoint(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "total_steps": 4000, "checkpoint_every": 50}))
    out = tmp_path / "camp"
    interrupted = {"done": False}

    def train_then_ctrl_c(*args, **kwargs):
        from trainer import train

        if not interrupted["done"]:
            interrupted["done"] = True
            timer = threading.Timer(1.5, signal.raise_signal, args=(signal.SIGINT,))
            timer.start()
            try:
                return train(*args, **kwargs)
            finally:
                timer.cancel()
        return train(*args, **kwargs)

    try:
        camp = tune(cfg, 0.05, max_runs=1, out_dir=out, train_fn=train_then_ctrl_c, analyze=False)
    except KeyboardInterrupt:  # the signal came before the trainer's handler: state is on disk
        camp = None
    state = json.loads((out / "campaign.json").read_text())
    assert state["iterations"][0]["status"] in ("interrupted", "planned")
    if camp is not None:
        assert camp.status == "interrupted"
    res = CliRunner().invoke(main, ["tune", str(cfg), "--target-l0", "0.05", "--max-runs", "1", "--out", str(out)])
    assert res.exit_code in (0, 1), res.output  # 1: budget of one run spent without reaching the target
    run = out / state["iterations"][0]["run_id"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 4000
    if state["iterations"][0]["status"] == "interrupted":
        assert summary["resumed_from_step"]  # continued from the checkpoint, not restarted
    assert "resuming" in res.output or "training" in res.output


def test_usage_errors(tmp_path):
    res = CliRunner().invoke(main, ["tune", str(tmp_path / "none.yaml"), "--target-l0", "0.05"])
    assert res.exit_code == 2 and res.output.strip() == f"Error: {tmp_path / 'none.yaml'}: no such config file"
    bad = tmp_path / "bad.yaml"
    bad.write_text("l1_alpah: 0.1\n")
    res = CliRunner().invoke(main, ["tune", str(bad), "--target-l0", "0.05", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert res.output.strip() == f"Error: {bad}: unknown key 'l1_alpah' (did you mean 'l1_alpha'?)"
    res = CliRunner().invoke(main, ["tune", "--target-l0", "0.05", "--tolerance", "2"])
    assert res.exit_code == 2 and "--tolerance" in res.output
