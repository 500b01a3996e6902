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
    assert html.count('data-spec="spec-iter-') == len(its) == html.count('<noscript><img class="static-chart"')
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


# A tiny config whose L0 is still falling at step 100 (second half 3.4% -> 2.0%) and settles by 200.
SHORT = ["--set", "d_in=16", "--set", "d_sae=64", "--set", "batch_size=128", "--set", "threads=1", "--set",
         "synth_active=3", "--set", "dead_window=50", "--set", "l1_alpha=0.3", "--set", "total_steps=100",
         "--set", "checkpoint_every=50"]


def test_tune_never_stops_on_a_run_still_trending(tmp_path):
    out = tmp_path / "camp"
    # the 100-step run's second-half median (2.65%) is on target, but L0 is still falling through it
    args = ["tune", "--target-l0", "0.0265", "--tolerance", "0.15", "--max-runs", "1", "--out", str(out), *SHORT]
    res = CliRunner().invoke(main, [*args, "--max-steps", "100"])  # not allowed to lengthen: refuse, say how much
    assert res.exit_code == 1, res.output
    assert "[1/1] iter_01_l1_0.3: L0 not settled at step 100 (second-half median 2.65%; L0 still falling through " \
           "the second half (" in res.output
    assert "Stopped: L0 had not settled after 100 steps in iter_01_l1_0.3 (L0 still falling" in res.output
    assert "total_steps 100 is too short to settle: allow at least 200 steps (rerun with --max-steps 200; the runs " \
           "on disk are resumed)." in res.output
    assert "reached" not in res.output.lower() and "final choice" not in res.output
    assert not (out / "best_config.yaml").exists()  # an unsettled run is never the answer
    state = json.loads((out / "campaign.json").read_text())
    assert state["status"] == "unsettled" and state["best"] is None and not state["iterations"][0]["within"]
    md = (out / "campaign.md").read_text()
    assert "**Status:** Stopped: L0 not settled (runs too short)." in md and "## Final choice" not in md
    assert "Not settled: L0 still falling through the second half" in md
    # allowed to lengthen: the same run is resumed to 200 steps and judged again
    res = CliRunner().invoke(main, [*args, "--max-steps", "200"])
    assert "[1/1] warning: total_steps 100 is too short for L0 to settle (L0 still falling through the second half " \
           "(" in res.output
    assert "lengthening iter_01_l1_0.3 to 200 steps (resuming from its checkpoint; --max-steps 200)" in res.output
    summary = json.loads((out / "iter_01_l1_0.3" / "summary.json").read_text())
    assert summary["steps"] == 200 and summary["resumed_from_step"] == 100
    state = json.loads((out / "campaign.json").read_text())
    it = state["iterations"][0]
    assert state["status"] != "unsettled" and it["unsettled"] == "" and it["total_steps"] == 200
    assert it["lengthened"][0]["from"] == 100 and it["lengthened"][0]["to"] == 200
    if state["best"]:  # the answer carries the length it settled at
        assert yaml.safe_load((out / "best_config.yaml").read_text())["total_steps"] == 200
    assert "Lengthened from 100 to 200 steps (resumed from its checkpoint): total_steps 100 was too short" in \
           (out / "campaign.md").read_text()


def test_max_steps_below_total_steps_is_refused(tmp_path):
    res = CliRunner().invoke(main, ["tune", "--target-l0", "0.05", "--out", str(tmp_path / "c"), *SHORT,
                                    "--max-steps", "50"])
    assert res.exit_code == 1
    assert res.output.strip() == ("Error: --max-steps 50 is below total_steps 100; give at least total_steps "
                                  "(equal: never lengthen a run)")


def test_unsettled_reasons():
    from sae_report.tune.loop import unsettled

    row = {"settled_l0": 0.05, "excluded": None, "drifting": True, "second_half_trend": [0.0604, 0.0439]}
    assert unsettled(row) == ("L0 still falling through the second half (6.04% -> 4.39%, medians of its first and "
                              "last fifth)", True)
    calm = {"settled_l0": 0.05, "excluded": None, "drifting": False}
    assert unsettled(calm) == ("", False)
    finding = {"kind": "not_converged", "metric": "l0_frac",
               "explanation": "L0 was still falling at the end: a median of 4.8% over steps 480 to 539, then 4.4% "
                              "over steps 540 to 600. It has not converged; a longer run would end elsewhere."}
    why, fixable = unsettled(calm, [finding])
    assert fixable and why.startswith("not converged: L0 was still falling at the end: a median of 4.8%")
    swing = {"settled_l0": 0.05, "excluded": None, "drifting": False, "unstable": True,
             "warnings": ["L0 not settled: second half swings (std 0.03 = 60% of its mean 0.05)"]}
    assert unsettled(swing) == ("L0 swings: second half swings (std 0.03 = 60% of its mean 0.05)", False)
