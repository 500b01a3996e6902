"""`sae-report sweep` (issue 15): one run per grid point, two at a time, restartable, then compare.

Tiny runs (200 steps of batch 128, d_in 32, one thread each): the children are real processes of
this interpreter, so the time goes into starting them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from sae_report.cli import main

pytest.importorskip("torch")

GRID = "l1_alpha=0.01,0.02,0.04"
NAMES = ["l1_alpha_0.01", "l1_alpha_0.02", "l1_alpha_0.04"]
TINY = {"total_steps": 200, "batch_size": 128, "d_in": 32, "expansion_factor": 4, "threads": 1,
        "checkpoint_every": 100}


def _config(folder: Path, **extra) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **extra}))
    return path


def _sweep(cfg: Path, out: Path, *extra: str):
    return CliRunner().invoke(main, ["sweep", str(cfg), "--grid", GRID, "--out", str(out), "--devices", "cpu",
                                     "--parallel", "2", *extra])


def _state(out: Path) -> dict[str, str]:
    return {r["name"]: r["status"] for r in json.loads((out / "sweep.json").read_text())["runs"]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("sweep")
    cfg = _config(root)
    res = _sweep(cfg, root / "s")
    assert res.exit_code == 0, res.output
    return cfg, root / "s", res.output


def test_a_sweep_of_three_values_two_at_a_time_writes_three_runs_and_a_comparison(swept) -> None:
    _, out, output = swept
    assert _state(out) == dict.fromkeys(NAMES, "completed")
    for name, l1 in zip(NAMES, (0.01, 0.02, 0.04)):
        run = out / name
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["steps"] == 200 and summary["run_id"] == name
        assert yaml.safe_load((run / "config.yaml").read_text())["l1_alpha"] == pytest.approx(l1)
        assert "completed: 200 steps" in (run / "train.log").read_text()
    comp = json.loads((out / "comparison.json").read_text())
    assert sorted(r["id"] for r in comp["runs"]) == NAMES
    assert (out / "comparison.md").exists() and (out / "comparison.html").exists()
    lines = output.splitlines()
    assert sum(" training on cpu " in ln for ln in lines) == 3 and sum(ln.endswith(" s") for ln in lines) == 3
    for name in NAMES:  # one line per run at the end: name, status, settled L0
        assert any(ln.startswith(name) and " completed " in ln and "settled L0 " in ln and ln.endswith("%")
                   for ln in lines), output
    assert lines[-1] == f"comparison: {out / 'comparison.md'} and {out / 'comparison.html'}"
    # two at a time: the first two started together, the third once one of them had finished
    assert lines[0].startswith("[1/3] l1_alpha_0.01: training") and lines[1].startswith("[2/3] l1_alpha_0.02: training")
    third = lines.index(next(ln for ln in lines if ln.startswith("[3/3] l1_alpha_0.04: training")))
    first_done = next(i for i, ln in enumerate(lines) if ": completed in " in ln)
    # (on a loaded machine both may finish within one poll: the third still waits for a free slot)
    assert first_done == 2 and 3 <= third <= 4 and all(": completed in " in ln for ln in lines[2:third])


def test_a_restarted_sweep_trains_only_what_was_unfinished(swept, tmp_path) -> None:
    cfg, done, _ = swept
    out = tmp_path / "s"
    shutil.copytree(done, out)
    # as a kill leaves it: 0.02 stopped after its checkpoint at step 100; 0.04 never started
    cut = out / "l1_alpha_0.02"
    (cut / "summary.json").unlink()
    for ckpt in ("final", "step_000000200"):
        shutil.rmtree(cut / "checkpoints" / ckpt)
    shutil.rmtree(out / "l1_alpha_0.04")
    kept = out / "l1_alpha_0.01"
    before = {f: (kept / f).stat().st_mtime_ns for f in ("summary.json", "events.ndjson", "config.yaml")}
    res = _sweep(cfg, out)
    assert res.exit_code == 0, res.output
    assert "[1/3] l1_alpha_0.01: already completed, skipped" in res.output
    assert "[2/3] l1_alpha_0.02: resuming from its checkpoint on cpu" in res.output
    assert "[3/3] l1_alpha_0.04: training on cpu" in res.output
    assert {f: (kept / f).stat().st_mtime_ns for f in before} == before  # not retrained
    assert json.loads((cut / "summary.json").read_text())["resumed_from_step"] == 100
    assert json.loads((out / "l1_alpha_0.04" / "summary.json").read_text())["resumed_from_step"] is None
    assert _state(out) == dict.fromkeys(NAMES, "completed")
    # all finished: the same command again trains nothing
    res = _sweep(cfg, out)
    assert res.exit_code == 0 and res.output.count("skipped") == 3, res.output


def test_another_grid_or_config_in_the_same_folder_is_refused(swept) -> None:
    cfg, out, _ = swept
    before = (out / "sweep.json").read_text()
    res = CliRunner().invoke(main, ["sweep", str(cfg), "--grid", "l1_alpha=0.01,0.03", "--out", str(out)])
    assert res.exit_code == 1
    assert res.output == (f"Error: {out}: holds a sweep over a different grid (--grid l1_alpha=0.01,0.02,0.04); "
                          "use another --out\n")
    res = _sweep(cfg, out, "--set", "total_steps=300")
    assert res.exit_code == 1
    assert res.output == (f"Error: {out}: holds a sweep with a different config (total_steps: 200 there, 300 now); "
                          "use another --out\n")
    assert (out / "sweep.json").read_text() == before


@pytest.mark.parametrize("grid,message", [
    ("l1_alpah=0.01,0.02", "Error: --grid l1_alpah=0.01: unknown key 'l1_alpah' (did you mean 'l1_alpha'?)\n"),
    ("l1_alpha=0.01,abc", "Error: --grid l1_alpha=abc: l1_alpha: must be a number, got 'abc'\n"),
    ("l1_alpha=0.01,-1", "Error: --grid l1_alpha=-1: l1_alpha: must be >= 0, got -1.0\n"),
])
def test_a_bad_grid_key_or_value_is_one_line_and_writes_nothing(tmp_path, grid, message) -> None:
    out = tmp_path / "s"
    res = CliRunner().invoke(main, ["sweep", str(_config(tmp_path)), "--grid", grid, "--out", str(out)])
    assert res.exit_code == 2
    assert res.output == message
    assert not out.exists()


def test_a_failed_run_is_reported_and_the_others_go_on(tmp_path) -> None:
    out = tmp_path / "s"
    res = CliRunner().invoke(main, ["sweep", str(_config(tmp_path)), "--grid", f"init_from=null,{tmp_path / 'nope'}",
                                    "--out", str(out), "--devices", "cpu", "--parallel", "2"])
    assert res.exit_code == 1, res.output
    bad = f"init_from_{str(tmp_path / 'nope').strip('/').replace('/', '-')}"
    assert f"{bad}: failed: {tmp_path / 'nope'}: no checkpoint" in res.output
    assert _state(out) == {"init_from_null": "completed", bad: "failed"}
    assert json.loads((out / "comparison.json").read_text())["runs"][0]["id"] == "init_from_null"


def test_ctrl_c_stops_the_children_at_a_checkpoint_and_exits_130(tmp_path) -> None:
    out = tmp_path / "s"
    cfg = _config(tmp_path, total_steps=10_000_000)
    proc = subprocess.Popen([sys.executable, "-m", "sae_report", "sweep", str(cfg), "--grid", GRID, "--out", str(out),
                             "--devices", "cpu", "--parallel", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not all((out / n / "checkpoints" / "step_000000100").exists() for n in NAMES[:2]):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert stderr == f"Interrupted: the runs checkpointed; run the same command again to resume from {out}.\n"
    assert _state(out) == {NAMES[0]: "interrupted", NAMES[1]: "interrupted", NAMES[2]: "planned"}
    for name in NAMES[:2]:
        assert json.loads((out / name / "summary.json").read_text())["status"] == "interrupted"
    assert not (out / NAMES[2]).exists()


def test_a_run_folder_another_process_writes_is_left_alone(tmp_path) -> None:
    """A child of a sweep killed with -9 may still be training: its run is reported, not touched."""
    from sae_report.runlog import lock_folder

    out = tmp_path / "s"
    (out / "l1_alpha_0.01" / "metrics").mkdir(parents=True)
    with lock_folder(out / "l1_alpha_0.01"):
        res = CliRunner().invoke(main, ["sweep", str(_config(tmp_path)), "--grid", "l1_alpha=0.01", "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert res.output.startswith(f"[1/1] l1_alpha_0.01: failed: {out / 'l1_alpha_0.01'}: in use by pid {os.getpid()} ")
    assert sorted(p.name for p in out.iterdir()) == ["l1_alpha_0.01", "sweep.json"]
    assert sorted(p.name for p in (out / "l1_alpha_0.01").iterdir()) == ["metrics"]
