"""Issue 11, the writer's side, through the CLI: one writer per run directory / campaign folder
(locks), resume with changed settings (refused or recorded), resuming a finished run, a summary
rebuilt from the log, no traceback on a full disk, a corrupt checkpoint or an early Ctrl-C, and
clean-up after SIGTERM / kill -9."""

from __future__ import annotations

import errno
import json
import os
import re
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
from sae_report.runlog import LOCK_FILE, lock_folder, read_run

torch = pytest.importorskip("torch")

from trainer.checkpoint import load_checkpoint  # noqa: E402

TINY = ["d_in=16", "d_sae=64", "batch_size=128", "threads=1", "synth_active=3", "dead_window=50"]
ONE_LINE = re.compile(r"^Error: [^\n]+\n$")


def sets(*items: str) -> list[str]:
    out: list[str] = []
    for item in (*TINY, *items):
        out += ["--set", item]
    return out


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def train(*args: str):
    return cli("train", "-q", *args)


def only_child(folder: Path) -> Path:
    (child,) = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return child


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``folder``: size, mtime and content (to check that nothing changed)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A completed 40-step run with checkpoints at 20 and 40 (copied by each test that changes it)."""
    out = tmp_path_factory.mktemp("finished")
    res = train(*sets("total_steps=40", "checkpoint_every=20", "flush_every=5"), "--out", out)
    assert res.exit_code == 0, res.output
    return only_child(out)


def copy_run(src: Path, tmp_path: Path, name: str = "run") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def crash_after(run: Path, step: int) -> None:
    """Make ``run`` look killed (kill -9) right after its checkpoint at ``step``: later checkpoints,
    the final link and the summary are gone; the log still holds the rows after ``step``."""
    for p in (run / "checkpoints").iterdir():
        if p.name == "final" or int(p.name.split("_")[1]) > step:
            shutil.rmtree(p)
    (run / "summary.json").unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------
# Subprocess helpers (signals and concurrency need a real process)
# ------------------------------------------------------------------------------------------------

HOLD = ("import sys, time\n"
        "from sae_report.runlog import lock_folder\n"
        "lock = lock_folder(sys.argv[1], command=sys.argv[2])\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n")


def hold_lock(folder: Path, command: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
    return proc


def spawn_train(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sae_report", "train", "-q", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def wait_for(pred, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.05)


def csv_rows(run: Path) -> int:
    return sum(p.read_bytes().count(b"\n") - 1 for p in (run / "metrics").glob("part-*.csv"))


def holder_message(folder: Path, pid: int, command: str) -> re.Pattern[str]:
    return re.compile(rf"^Error: {re.escape(str(folder))}: in use by pid {pid} \({re.escape(command)}\) since "
                      r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; try again when it has finished\n$")


# ------------------------------------------------------------------------------------------------
# 4 + 11: one writer at a time
# ------------------------------------------------------------------------------------------------


def test_second_writer_is_refused_naming_the_first_and_sigterm_checkpoints(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path)
    before_rows = csv_rows(run)
    proc = spawn_train(["--resume", str(run), "--set", "total_steps=1000000", "--set", "flush_every=5"])
    try:
        wait_for(lambda: (run / LOCK_FILE).exists() and csv_rows(run) > before_rows + 20, proc)
        note = json.loads((run / LOCK_FILE).read_text())
        assert note["pid"] == proc.pid
        command = note["command"]
        assert command.startswith("sae-report train -q --resume ")
        # a second resume of the same run
        res = train("--resume", run)
        assert res.exit_code == 1
        assert holder_message(run, proc.pid, command).match(res.stderr), res.stderr
        # import --force into it
        src = tmp_path / "log.csv"
        src.write_text("step,loss\n1,1.0\n2,0.5\n")
        res = cli("import", src, "--out", run, "--force")
        assert res.exit_code == 1
        assert holder_message(run, proc.pid, command).match(res.stderr), res.stderr
        assert (run / "checkpoints").is_dir() and read_run(run).config["run_id"] == finished_run.name
        # the analyzer reads without the lock while the run trains
        res = cli("analyze", run, "--json", "--out", tmp_path / "report")
        assert res.exit_code == 0, res.output
        # SIGTERM is handled like Ctrl-C: flush, checkpoint, exit 130
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    data = read_run(run)
    assert data.metrics["step"].to_list() == list(range(1, summary["steps"] + 1))
    assert [(e.kind, e.data.get("signal")) for e in data.events][-2:] == [("interrupt", "SIGTERM"), ("end", None)]
    assert load_checkpoint(run).step == summary["steps"]
    assert not (run / LOCK_FILE).exists()  # released


def test_stale_locks_never_block(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path)
    # a holder killed with kill -9: its lock file (and note) stay, the kernel released the flock
    proc = hold_lock(run, "sae-report train --resume x")
    proc.kill()
    proc.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == proc.pid
    res = train("--resume", run, "--set", "total_steps=45")
    assert res.exit_code == 0, res.output
    assert not (run / LOCK_FILE).exists()
    # a note naming a process that is gone, and no flock at all
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / LOCK_FILE).write_text(json.dumps({"pid": int(gone.stdout), "command": "x", "since": "then"}))
    with lock_folder(run) as lock:
        assert lock.held
    assert not (run / LOCK_FILE).exists()


def test_tune_campaign_folder_is_locked(tmp_path: Path) -> None:
    camp = tmp_path / "camp"
    camp.mkdir()
    command = "sae-report tune --target-l0 0.05 --out camp"
    proc = hold_lock(camp, command)
    try:
        res = cli("tune", "--target-l0", "0.05", "--max-runs", "1", "--out", camp, *sets("total_steps=20"))
        assert res.exit_code == 1
        assert holder_message(camp, proc.pid, command).match(res.stderr), res.stderr
        assert sorted(p.name for p in camp.iterdir()) == [LOCK_FILE]  # nothing trained, nothing written
    finally:
        proc.kill()
        proc.wait()
    with lock_folder(camp):  # the dead holder does not block the next campaign
        pass


# ------------------------------------------------------------------------------------------------
# 5: resume with changed settings
# ------------------------------------------------------------------------------------------------


def test_resume_changes_are_recorded_in_log_and_config(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path)
    res = train("--resume", run, "--set", "l1_alpha=0.05", "--set", "total_steps=60", "--set", "learning_rate=0.004")
    assert res.exit_code == 0, res.output
    data = read_run(run)
    m = data.metrics
    assert m["step"].to_list() == list(range(1, 61))
    assert m["tokens"].to_list() == [128.0 * s for s in range(1, 61)]
    assert set(m["l1_alpha"][:40].to_list()) == {0.01} and set(m["l1_alpha"][40:].to_list()) == {0.05}
    assert set(m["lr"][40:].to_list()) == {0.004}
    # config.yaml: the values in force, and the history
    assert (data.config["l1_alpha"], data.config["learning_rate"], data.config["total_steps"]) == (0.05, 0.004, 60)
    assert data.config["resumes"] == [{"step": 40, "checkpoint": "checkpoints/step_000000040", "changes": {
        "l1_alpha": {"from": 0.01, "to": 0.05}, "learning_rate": {"from": 0.008, "to": 0.004},
        "total_steps": {"from": 40, "to": 60}}}]
    ev = [(e.step, e.kind, e.data) for e in data.events if e.kind in ("resume", "config_change", "l1_change", "lr_change")]
    assert ev[0][:2] == (40, "resume")
    assert sorted((s, k, d.get("key"), d.get("from"), d.get("to", d.get("value"))) for s, k, d in ev[1:]) == [
        (41, "config_change", "l1_alpha", 0.01, 0.05), (41, "config_change", "learning_rate", 0.008, 0.004),
        (41, "config_change", "total_steps", 40, 60), (41, "l1_change", None, 0.01, 0.05),
        (41, "lr_change", None, 0.008, 0.004)]
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["steps"], summary["total_steps"]) == ("completed", 60, 60)
    # a crash after the checkpoint at 40, resumed again without --set: config.yaml already says
    # 0.05 but the checkpoint was trained with 0.01, so the change is recorded once more, and the
    # history keeps one entry for step 40 (the re-run stretch supersedes the first)
    crash_after(run, 40)
    res = train("--resume", run)
    assert res.exit_code == 0, res.output
    data = read_run(run)
    assert data.config["l1_alpha"] == 0.05 and [r["step"] for r in data.config["resumes"]] == [40]
    assert [(e.step, e.data["value"]) for e in data.events if e.kind == "l1_change"] == [(41, 0.05)]
    assert set(data.metrics["l1_alpha"][40:].to_list()) == {0.05}


@pytest.mark.parametrize(("setting", "message"), [
    ("batch_size=64", "batch_size: cannot change when resuming {run} (128 in its checkpoint, 64 asked; it fixes the "
                      "data stream (order and tokens per step)); train a new run instead"),
    ("d_sae=32", "d_sae: cannot change when resuming {run} (64 in its checkpoint, 32 asked; it fixes the SAE's shape); "
                 "train a new run instead"),
    ("data_seed=5", "data_seed: cannot change when resuming {run} (0 in its checkpoint, 5 asked; it fixes the data "
                    "stream (order and tokens per step)); train a new run instead"),
    ("total_steps=20", "total_steps: 20 is not above step 40 of the newest checkpoint ({run}/checkpoints/step_000000040); "
                       "raise it above 40 to train further"),
])
def test_resume_changes_that_break_the_run_are_refused(finished_run: Path, tmp_path: Path, setting: str,
                                                       message: str) -> None:
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    res = train("--resume", run, "--set", setting)
    assert res.exit_code == 2
    assert res.stderr == f"Error: --set {setting}: {message.format(run=run)}\n"
    assert snapshot(run) == before


def test_total_steps_at_the_checkpoint_step_is_refused(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path)
    res = train("--resume", run, "--set", "total_steps=100")
    assert res.exit_code == 0, res.output
    crash_after(run, 60)  # interrupted at 60 of 100
    res = train("--resume", run, "--set", "total_steps=60")
    assert (res.exit_code, res.stderr) == (2, f"Error: --set total_steps=60: total_steps: 60 is not above step 60 of "
                                              f"the newest checkpoint ({run}/checkpoints/step_000000060); raise it "
                                              f"above 60 to train further\n")


# ------------------------------------------------------------------------------------------------
# 6: a finished run, and a summary lost to a kill
# ------------------------------------------------------------------------------------------------


def test_resuming_a_finished_run_changes_nothing(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    res = train("--resume", run)
    assert (res.exit_code, res.stdout) == (0, "run already completed at step 40; nothing to do\n")
    res = train("--resume", run, "--set", "l1_alpha=0.05", "--set", "total_steps=40")
    assert res.exit_code == 0
    assert res.stdout == ("run already completed at step 40; nothing to do (not applied: l1_alpha; raise total_steps "
                          "above 40 to train further)\n")
    assert snapshot(run) == before  # summary.json, config.yaml, events: untouched, no lock file left


def test_summary_lost_to_a_kill_is_rebuilt_from_the_log(finished_run: Path, tmp_path: Path) -> None:
    from sae_report.runlog.writer import summary_from_log

    run = copy_run(finished_run, tmp_path)
    original = json.loads((run / "summary.json").read_text())
    assert summary_from_log(run)["final"] == original["final"]  # the reader-side helper, without the trainer
    # killed after the final checkpoint: no summary, no feature_freq.npy, no `end` event
    (run / "summary.json").unlink()
    (run / "stats" / "feature_freq.npy").unlink()
    lines = (run / "events.ndjson").read_text().splitlines(keepends=True)
    assert json.loads(lines[-1])["kind"] == "end"
    (run / "events.ndjson").write_text("".join(lines[:-1]))
    res = train("--resume", run)
    assert res.exit_code == 0, res.output
    assert res.stdout == ("run already completed at step 40; summary.json rebuilt from the log (it was missing or out "
                          "of date); nothing else to do\n")
    rebuilt = json.loads((run / "summary.json").read_text())
    for key in ("status", "run_id", "steps", "total_steps", "tokens", "final", "feature_recovery", "nonfinite_step",
                "checkpoint", "elapsed_s"):
        assert rebuilt[key] == original[key], key
    assert rebuilt["rebuilt_from_log"] is True
    assert (run / "stats" / "feature_freq.npy").read_bytes() == (finished_run / "stats" / "feature_freq.npy").read_bytes()
    assert [e.kind for e in read_run(run).events].count("end") == 1
    # a stale summary (from an earlier session that stopped at step 20) is rebuilt too
    (run / "summary.json").write_text(json.dumps({**original, "status": "interrupted", "steps": 20}))
    res = train("--resume", run)
    assert res.exit_code == 0 and "summary.json rebuilt from the log" in res.stdout
    assert json.loads((run / "summary.json").read_text())["steps"] == 40
    # and now it is complete: another resume has nothing to do
    before = snapshot(run)
    res = train("--resume", run)
    assert res.stdout == "run already completed at step 40; nothing to do\n"
    assert snapshot(run) == before


# ------------------------------------------------------------------------------------------------
# 8: no traceback, ever
# ------------------------------------------------------------------------------------------------


def test_disk_full_during_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.checkpoint as ckmod
    from safetensors import SafetensorError

    real = ckmod.save_file
    calls = {"n": 0}

    def full_disk(tensors, filename, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # the second checkpoint's optimizer file (3 files per checkpoint)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, *a, **k)

    monkeypatch.setattr(ckmod, "save_file", full_disk)
    args = sets("total_steps=100", "checkpoint_every=20", "flush_every=5")
    res = train(*args, "--out", tmp_path)
    run = only_child(tmp_path)
    assert res.exit_code == 1
    assert res.stderr == (f"Error: {run}/checkpoints/.step_000000040.tmp/optimizer.safetensors: cannot write (No space "
                          f"left on device); the log holds steps up to 40, the checkpoint checkpoints/step_000000020 is "
                          f"intact; once there is room, resume with: sae-report train --resume {run}\n")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000000020"]  # no half-written one
    assert load_checkpoint(run).step == 20
    assert read_run(run).metrics["step"].to_list() == list(range(1, 41))  # flushed up to the failed checkpoint
    assert not (run / LOCK_FILE).exists()
    monkeypatch.setattr(ckmod, "save_file", real)  # room again
    res = train("--resume", run)
    assert res.exit_code == 0, res.output
    assert read_run(run).metrics["step"].to_list() == list(range(1, 101))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "nan", "state-json"])
def test_corrupt_checkpoint_is_one_line_naming_the_file(finished_run: Path, tmp_path: Path, damage: str) -> None:
    run = copy_run(finished_run, tmp_path)
    ckpt = run / "checkpoints" / "step_000000040"
    target = ckpt / "sae.safetensors"
    if damage == "truncated":
        target.write_bytes(target.read_bytes()[:100])
    elif damage == "garbage":
        target.write_bytes(os.urandom(2000))
    elif damage == "nan":
        from safetensors.torch import load_file, save_file

        w = load_file(str(target))
        w["W_dec"][3, 2] = float("nan")
        save_file(w, str(target))
    else:
        target = ckpt / "state.json"
        target.write_text('{"step": 40, "tok')
    res = train("--resume", run, "--set", "total_steps=50")
    assert res.exit_code == 2 and ONE_LINE.match(res.stderr), res.stderr
    assert res.stderr.startswith(f"Error: {target}: ")
    if damage == "nan":
        assert res.stderr == f"Error: {target}: W_dec holds NaN or inf values (a corrupt checkpoint)\n"
    # the same checkpoint as init_from of a new run
    res = train(*sets("total_steps=5", f"init_from={ckpt}"), "--out", tmp_path / "new")
    assert res.exit_code == 2 and res.stderr.startswith(f"Error: {target}: ") and ONE_LINE.match(res.stderr)
    assert not (tmp_path / "new").exists()


def test_ctrl_c_during_set_up_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    tmod = importlib.import_module("trainer.loop")  # the training loop module
    real = tmod.normalisation_scale

    def interrupted(data):
        signal.raise_signal(signal.SIGINT)  # the trainer's handler is already in place: a flag
        return real(data)

    monkeypatch.setattr(tmod, "normalisation_scale", interrupted)
    res = train(*sets("total_steps=50"), "--out", tmp_path / "runs")
    assert (res.exit_code, res.stderr) == (130, "Error: interrupted before training started; nothing written\n")
    assert not (tmp_path / "runs").exists()


# Says on stderr when `sae-report train` itself starts importing torch (not polars probing for it).
SITE = ("import os, sys\n"
        "class _Mark:\n"
        "    done = False\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' and not _Mark.done:\n"
        "            f = sys._getframe(1)\n"
        "            while f is not None and not f.f_code.co_filename.endswith(os.path.join('commands', 'train.py')):\n"
        "                f = f.f_back\n"
        "            if f is not None:\n"
        "                _Mark.done = True\n"
        "                os.write(2, b'importing torch\\n')\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Mark())\n")


@pytest.mark.parametrize("delay", [0.0, 0.5, 1.2])
def test_ctrl_c_in_the_first_moments_of_train(tmp_path: Path, delay: float) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    out = tmp_path / "runs"
    proc = spawn_train([*sets("total_steps=1000000"), "--out", str(out)], env={"PYTHONPATH": str(site)})
    try:
        assert proc.stderr.readline() == b"importing torch\n"  # our command has started
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and err.count(b"\n") <= 1, err.decode()
    runs = [p for p in out.iterdir()] if out.exists() else []
    if err:
        assert err == b"Error: interrupted before training started; nothing written\n"
        assert runs == []
    else:  # the loop had started: a consistent, resumable run
        (run,) = runs
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        assert read_run(run).metrics.height == summary["steps"]
        assert load_checkpoint(run).step == summary["steps"]


def test_import_onto_a_full_or_read_only_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sae_report.ingest.convert as conv
    from sae_report.runlog import RunLogWriter

    src = tmp_path / "log.csv"
    src.write_text("step,loss,l0\n1,1.0,30\n2,0.5,20\n3,0.4,10\n")
    out = tmp_path / "runs" / "imported"
    assert cli("import", src, "--out", out).exit_code == 0
    before = snapshot(out)

    def full(self, columns):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.tail_path))

    monkeypatch.setattr(RunLogWriter, "log_metrics", full)
    res = cli("import", src, "--out", out, "--force")
    assert res.exit_code == 1
    assert re.fullmatch(rf"Error: {re.escape(str(out))}: cannot write \(No space left on device: "
                        rf"{re.escape(str(out.parent))}/\.imported\.import-\d+-\w+/metrics/part-000000\.csv\); "
                        rf"{re.escape(str(out))} is unchanged\n", res.stderr), res.stderr
    monkeypatch.undo()

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(out.parent))

    monkeypatch.setattr(conv.tempfile, "mkdtemp", read_only)
    res = cli("import", src, "--out", out, "--force")
    assert (res.exit_code, res.stderr) == (
        1, f"Error: {out}: cannot write (Read-only file system: {out.parent}); {out} is unchanged\n")
    monkeypatch.undo()
    assert snapshot(out) == before  # the earlier import is intact
    assert sorted(p.name for p in out.parent.iterdir()) == ["imported"]  # no temp folders, no lock file


# ------------------------------------------------------------------------------------------------
# 11: clean-up after SIGTERM and kill -9
# ------------------------------------------------------------------------------------------------

SLOW_IMPORT = ("import sys, time, pathlib\n"
               "import sae_report.ingest.convert as c\n"
               "real = c._same\n"
               "def slow(*a):\n"
               "    pathlib.Path(sys.argv[3]).touch()  # the conversion is in its slow part now\n"
               "    time.sleep(120)\n"
               "    return real(*a)\n"
               "c._same = slow\n"
               "from sae_report.cli import main\n"
               "main(['import', sys.argv[1], '--out', sys.argv[2], '--force'], prog_name='sae-report')\n")


def test_import_stopped_by_sigterm_leaves_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "log.csv"
    src.write_text("step,loss\n1,1.0\n2,0.5\n")
    out = tmp_path / "runs" / "imported"
    assert cli("import", src, "--out", out).exit_code == 0
    before = snapshot(out)
    marker = tmp_path / "in_slow_part"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_IMPORT, str(src), str(out), str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the signal lands inside the conversion, not while the temporary run is being read back
        wait_for(lambda: marker.exists() and any(p.name.startswith(".imported.import-") for p in out.parent.iterdir())
                 and (out / LOCK_FILE).exists(), proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err.decode()) == (
        130, f"Error: import interrupted; {out} is as it was (no temporary folder left)\n")
    assert sorted(p.name for p in out.parent.iterdir()) == ["imported"]
    assert snapshot(out) == before


def test_temp_files_left_by_kill_9_are_swept(finished_run: Path, tmp_path: Path) -> None:
    # training: a kill -9 between a temp file and its rename, then --resume
    run = copy_run(finished_run, tmp_path)
    crash_after(run, 20)
    planted = [run / "stats" / ".feature_freq.npy.k2j4h5g6.tmp", run / "metrics" / ".part-000001.parquet.abcd1234.tmp",
               run / ".summary.json.zz99yy88.tmp", run / "checkpoints" / ".step_000000040.tmp" / "sae.safetensors"]
    for p in planted:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    mine = run / "stats" / "notes.tmp"  # not our naming: kept
    mine.write_text("mine")
    res = train("--resume", run)
    assert res.exit_code == 0, res.output
    assert not any(p.exists() for p in planted) and not (run / "checkpoints" / ".step_000000040.tmp").exists()
    assert mine.read_text() == "mine"
    # import: the temporary folders of an import killed with -9 (its pid gone)
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    out = tmp_path / "runs" / "imported"
    out.parent.mkdir()
    (out.parent / f".imported.import-{gone}-x1y2z3").mkdir()
    (out.parent / f".imported.import-{os.getpid()}-live").mkdir()  # a live import's: left alone
    src = tmp_path / "log.csv"
    src.write_text("step,loss\n1,1.0\n2,0.5\n")
    assert cli("import", src, "--out", out).exit_code == 0
    assert sorted(p.name for p in out.parent.iterdir()) == [f".imported.import-{os.getpid()}-live", "imported"]
    # killed between moving the old run aside and renaming the new one in: the old one comes back
    aside = out.parent / f".imported.replaced-{gone}-q9w8e7"
    os.replace(out, aside)
    other = tmp_path / "other.csv"
    other.write_text("step,loss\n1,2.0\n")
    res = cli("import", other, "--out", out)
    assert res.exit_code == 1 and "already exists" in res.stderr  # the old run is back in place, not replaced
    assert read_run(out).metrics["loss"].to_list() == [1.0, 0.5]
    assert not aside.exists()


def test_config_yaml_history_is_plain_yaml(finished_run: Path, tmp_path: Path) -> None:
    run = copy_run(finished_run, tmp_path)
    assert train("--resume", run, "--set", "total_steps=45", "--set", "target_l0=0.1").exit_code == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["target_l0"] == 0.1 and cfg["total_steps"] == 45
    assert cfg["resumes"][0]["changes"]["target_l0"] == {"from": 0.05, "to": 0.1}
    assert not list(run.glob(".config.yaml.*.tmp"))


def test_resume_without_changes_leaves_config_yaml_alone(tmp_path: Path) -> None:
    # a piecewise schedule (int keys in YAML, string keys in the checkpoint's JSON) is no change
    res = train(*sets("total_steps=30", "checkpoint_every=10", "l1_alpha_schedule={0: 0.01, 15: 0.02}"),
                "--out", tmp_path)
    assert res.exit_code == 0, res.output
    run = only_child(tmp_path)
    crash_after(run, 10)
    config = (run / "config.yaml").read_bytes()
    res = train("--resume", run)
    assert res.exit_code == 0, res.output
    assert (run / "config.yaml").read_bytes() == config
    data = read_run(run)
    assert "resumes" not in data.config
    assert [e.kind for e in data.events if e.kind in ("config_change", "l1_change")] == ["l1_change"]  # the milestone
    assert [e.data["changed"] for e in data.events if e.kind == "resume"] == [{}]


def test_a_second_ctrl_c_aborts_in_one_line(tmp_path: Path) -> None:
    proc = spawn_train([*sets("total_steps=1000000", "flush_every=5", "checkpoint_every=50"), "--out", str(tmp_path)])
    try:
        wait_for(lambda: any(tmp_path.iterdir()) and csv_rows(only_child(tmp_path)) >= 120, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.01)  # two at once would be one: Python runs the handler once per pending signal
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and err.count(b"\n") <= 1, err.decode()
    run = only_child(tmp_path)
    if err:  # the second one came before the run was wrapped up
        assert re.fullmatch(rf"Error: aborted by a second interrupt at step \d+; the log holds steps up to \d+, the "
                            rf"checkpoint checkpoints/step_\d+ is intact; resume with: sae-report train --resume "
                            rf"{re.escape(str(run))}\n", err.decode()), err.decode()
    assert not (run / LOCK_FILE).exists()
    res = train("--resume", run, "--set", f"total_steps={load_checkpoint(run).step + 5}")
    assert res.exit_code == 0, res.output
    data = read_run(run)
    assert data.metrics["step"].to_list() == list(range(1, data.metrics.height + 1))
