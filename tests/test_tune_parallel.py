"""`sae-report tune --devices cpu --parallel 2` (issue 15): each round trains its runs at once in child
processes (the recommendation and points across its interval), restartable; and the round planner
on its own (``tune.plan``)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sae_report.cli import main
from sae_report.tune.plan import MIN_HALF_WIDTH, SPREAD, first_round, round_values

TINY = {"total_steps": 300, "batch_size": 128, "d_in": 32, "expansion_factor": 4, "l1_alpha": 0.03,
        "learning_rate": 0.003, "checkpoint_every": 100, "threads": 1}
ROOT = Path(__file__).resolve().parent.parent


def _config(folder: Path, **extra) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **extra}))
    return path


# ---- the round planner --------------------------------------------------------------------------

def test_the_first_round_spreads_around_the_starting_value() -> None:
    assert first_round(0.03, 1) == [0.03]
    assert first_round(0.03, 3) == pytest.approx([0.03, 0.03 * SPREAD, 0.03 / SPREAD])
    assert first_round(0.03, 4) == pytest.approx([0.03, 0.06, 0.015, 0.03 * SPREAD ** 2])


def test_a_round_is_the_recommendation_then_its_interval_ends_farthest_first() -> None:
    rec = {"l1_alpha": 0.114, "low": 0.0736, "high": 0.323, "explanation": "Raise l1_alpha to 0.114."}
    picks = round_values(rec, 3, taken=[0.03, 0.06])
    assert [v for v, _ in picks] == pytest.approx([0.114, 0.323, 0.0736])
    assert picks[0][1] == "Raise l1_alpha to 0.114."
    assert picks[1][1].startswith("Upper end of the recommendation's interval (0.0736-0.323): trained at once with "
                                  "l1_alpha 0.114")
    # the end near a run already trained comes last: 0.0736 is a factor 1.2 from 0.06
    assert [v for v, _ in round_values(rec, 2, taken=[0.03, 0.06])] == pytest.approx([0.114, 0.323])
    # one slot: the recommendation alone, as a one-at-a-time campaign plans it
    assert round_values(rec, 1, taken=[0.03]) == [(0.114, "Raise l1_alpha to 0.114.")]


def test_an_extrapolated_step_gets_a_point_as_far_again_beyond_it() -> None:
    # every run below the target (L0 too low at 0.3 and 0.6): the recommender steps down 10x, capped
    from sae_report.recommend.curve import RunPoint
    from sae_report.recommend.fit import recommend_l1

    rec = recommend_l1([RunPoint("a", 0.3, 0.004, 0.03), RunPoint("b", 0.6, 0.002, 0.03)], 0.05).to_dict()
    assert rec["bracket"] is None and rec["l1_alpha"] == pytest.approx(0.03)
    picks = round_values(rec, 2, taken=[0.3, 0.6])
    assert [v for v, _ in picks] == pytest.approx([0.03, 0.003])
    assert picks[1][1].startswith("As far again beyond l1_alpha 0.03 (from 0.3, the run nearest the target)")
    # bracketed: no such point, the interval's ends as before
    rec = recommend_l1([RunPoint("a", 0.01, 0.09, 0.03), RunPoint("b", 0.1, 0.02, 0.03)], 0.05).to_dict()
    assert rec["bracket"] is not None
    assert all(not why.startswith("As far again") for _, why in round_values(rec, 4, taken=[0.01, 0.1]))


def test_a_narrow_interval_is_widened_and_says_so_and_runs_are_not_repeated() -> None:
    rec = {"l1_alpha": 0.0851, "low": 0.0812, "high": 0.114, "explanation": "E", "coefficient": "l1_alpha"}
    picks = round_values(rec, 5, taken=[0.03, 0.06, 0.114, 0.323])
    values = [v for v, _ in picks]
    assert values[0] == 0.0851 and 0.114 not in values  # the upper end is a run already trained
    assert values[1] == pytest.approx(0.0851 / MIN_HALF_WIDTH)
    assert picks[1][1].startswith("Lower side, l1_alpha 0.0851 x 0.8 (the recommendation's interval (0.0812-0.114) "
                                  "is narrower than a factor 1.25 on this side)")
    assert len(values) == 5 and all(0.0851 / MIN_HALF_WIDTH <= v <= 0.114 for v in values)  # every slot used
    for i, a in enumerate(values):  # no two alike, none a repeat of a run on disk
        assert all(not math.isclose(a, b, rel_tol=0.02) for b in values[i + 1:] + [0.03, 0.06, 0.114, 0.323])


# ---- campaigns ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_parallel_campaign_trains_each_round_at_once_and_reaches_the_target(tmp_path: Path) -> None:
    out = tmp_path / "camp"
    res = CliRunner().invoke(main, ["tune", str(_config(tmp_path)), "--target-l0", "0.05", "--tolerance", "0.15",
                                    "--out", str(out), "--devices", "cpu", "--parallel", "2"])
    assert res.exit_code == 0, res.output
    state = json.loads((out / "campaign.json").read_text())
    its = state["iterations"]
    assert state["max_runs"] == 6  # the default budget with two at once: three rounds' worth
    assert state["status"] == "reached" and state["parallel"] == 2 and len(its) % 2 == 0
    assert [it["round"] for it in its] == [1 + i // 2 for i in range(len(its))]
    assert its[0]["l1_alpha"] == 0.03 and its[1]["l1_alpha"] == pytest.approx(0.03 * SPREAD)
    lines = res.output.splitlines()
    for r in range(1, len(its) // 2 + 1):  # both runs of a round started before either finished
        a, b = (it for it in its if it["round"] == r)
        starts = [next(i for i, ln in enumerate(lines) if f"training {out / it['run_id']} on cpu" in ln) for it in (a, b)]
        dones = [next(i for i, ln in enumerate(lines) if f"] {it['run_id']}: " in ln and " in " in ln) for it in (a, b)]
        assert max(starts) < min(dones), res.output
    for it in its:  # each a normal run directory, trained by a child with its own config
        run = out / it["run_id"]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == it["total_steps"]
        assert yaml.safe_load((run / "config.yaml").read_text())["l1_alpha"] == pytest.approx(it["l1_alpha"])
        assert "completed: " in (run / "train.log").read_text()
        assert it["device"] == "cpu"
    best = next(it for it in its if it["run_id"] == state["best"])
    assert abs(best["row"]["settled_l0"] / 0.05 - 1) <= 0.15 and best["within"]
    md = (out / "campaign.md").read_text()
    assert "**Trained:** 2 at a time on cpu" in md
    assert f"round 1 of the campaign, at once with #2 {its[1]['run_id']}" in md


def _start_tune(cfg: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sae_report", "tune", str(cfg), "--target-l0", "0.05",
                             "--max-runs", "2", "--out", str(out), "--devices", "cpu", "--parallel", "2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_stopped_parallel_campaign_resumes_both_runs_from_their_checkpoints(tmp_path: Path) -> None:
    cfg = _config(tmp_path, total_steps=3000, checkpoint_every=50)
    out = tmp_path / "camp"
    proc = _start_tune(cfg, out)
    deadline = time.monotonic() + 120
    runs = [out / "iter_01_l1_0.03", out / "iter_02_l1_0.06"]
    while not all(any((r / "checkpoints").glob("step_*")) for r in runs if r.exists()) or \
            not all(r.exists() for r in runs):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # as Ctrl-C: every child checkpoints
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, text
    state = json.loads((out / "campaign.json").read_text())
    assert state["status"] == "interrupted"
    assert [it["status"] for it in state["iterations"]] == ["interrupted", "interrupted"]
    steps_then = [json.loads((r / "summary.json").read_text())["steps"] for r in runs]
    assert all(0 < s < 3000 for s in steps_then)
    res = CliRunner().invoke(main, ["tune", str(cfg), "--target-l0", "0.05", "--max-runs", "2", "--out", str(out),
                                    "--devices", "cpu", "--parallel", "2", "--max-steps", "3000"])
    assert res.exit_code in (0, 1), res.output  # 1: two runs, target not reached
    lines = res.output.splitlines()
    assert lines[0].startswith(f"[1/2] resuming {runs[0]} on cpu") and lines[1].startswith(f"[2/2] resuming {runs[1]} "
                                                                                           "on cpu"), res.output
    for run, before in zip(runs, steps_then):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 3000
        assert summary["resumed_from_step"] and summary["resumed_from_step"] <= before


def test_a_child_that_fails_stops_the_campaign_with_its_error(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA (the child must fail to find cuda:7)")
    out = tmp_path / "camp"
    res = CliRunner().invoke(main, ["tune", str(_config(tmp_path)), "--target-l0", "0.05", "--max-runs", "2",
                                    "--out", str(out), "--devices", "cuda:7"])
    assert res.exit_code == 1
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("Error: iter_01_l1_0.03: training failed: ") and "cuda" in last.lower()
    assert last.endswith(f"(log: {out / 'iter_01_l1_0.03' / 'train.log'}); run the same command again to retry it")
    state = json.loads((out / "campaign.json").read_text())
    assert [it["status"] for it in state["iterations"]] == ["failed"]


def test_bad_devices_are_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["tune", "--target-l0", "0.05", "--out", str(tmp_path / "c"), "--devices", "gpu0"])
    assert res.exit_code == 1
    assert res.output.strip() == "Error: --devices gpu0: expected cpu, cuda, cuda:N, mps, auto or all"
    assert not (tmp_path / "c").exists()


def test_devices_all_is_every_cuda_device_or_the_cpu(monkeypatch) -> None:
    import sae_report.sweep.pool as pool
    from sae_report.sweep.pool import SlotError, device_slots

    monkeypatch.setattr(pool, "cuda_devices", lambda: ("cuda:0", "cuda:1", "cuda:2"))
    slots = device_slots(["all"], None)
    assert slots.devices == ("cuda:0", "cuda:1", "cuda:2") and slots.sets("cuda:1") == ["device=cuda:1"]
    assert device_slots(["all"], 6).devices == ("cuda:0", "cuda:1", "cuda:2") * 2  # two per GPU
    monkeypatch.setattr(pool, "cuda_devices", lambda: ())
    assert device_slots(["all"], None).devices == ("cpu",)
    with pytest.raises(SlotError, match=r"^--devices all: give it alone"):
        device_slots(["all", "cpu"], None)


def test_a_run_folder_another_process_writes_is_left_alone(tmp_path: Path) -> None:
    """A child of a campaign killed with -9 may still be training: the campaign says so and touches
    nothing (no set-aside, no second writer)."""
    import os

    from sae_report.runlog import lock_folder

    out = tmp_path / "camp"
    run = out / "iter_01_l1_0.03"
    (run / "metrics").mkdir(parents=True)
    with lock_folder(run):
        res = CliRunner().invoke(main, ["tune", str(_config(tmp_path)), "--target-l0", "0.05", "--out", str(out),
                                        "--devices", "cpu", "--parallel", "2"])
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: iter_01_l1_0.03: {run}: in use by pid {os.getpid()} ")
    assert last.endswith("; wait for it to finish (or stop it), then run the same command again")
    assert sorted(p.name for p in run.iterdir()) == ["metrics"]
    assert not any(p.name.startswith("iter_01_l1_0.03.partial") for p in out.iterdir())
