"""The terminal, as a user sees it at 80 and 200 columns, on a TTY and redirected to a file.

- every command's ``--help``: no project-internal words, fits 80 columns;
- ``train``: the progress bar keeps the step count and the ETA at 80 columns (a real pty), plain
  progress lines when stderr is not a TTY (``CliRunner`` has none: the SLURM / nohup case);
- threads: the auto choice, the collapse of a multi-threaded run noticed and acted on, the warning
  for a run that will take hours, the thread count restored after ``train()``;
- ``compare``: its table fits 80 columns (fewer columns, or one block per run) and shows all at 200;
- ``analyze`` of a live or unfinished run says so (a note in the analysis).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sae_report.cli import main
from sae_report.runlog import read_run

COMMANDS = sorted(main.commands)
#: Words a reader outside the project cannot place: the fixture runs' ids, "the write-up" (which
#: one?), the example configs named after it, the "seed charts", the name of its file.
INTERNAL = re.compile(r"train_[0-9a-f]{8}|write-up|writeup_iter|seed charts?|002_", re.I)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")
TINY = ["d_in=16", "d_sae=64", "batch_size=128", "threads=1", "synth_active=3", "dead_window=50"]


def cli(*args: str, columns: int | None = None, env: dict[str, str] | None = None):
    full = dict(env or {})
    if columns is not None:
        full["COLUMNS"] = str(columns)
    return CliRunner(env=full).invoke(main, [str(a) for a in args], catch_exceptions=False)


def sets(*items: str) -> list[str]:
    out: list[str] = []
    for item in (*TINY, *items):
        out += ["--set", item]
    return out


# ------------------------------------------------------------------------------------------------
# --help
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_has_no_internal_words_and_fits_80_columns(command: str, columns: int) -> None:
    res = cli(*([command] if command else []), "--help", columns=columns)
    assert res.exit_code == 0, res.output
    text = res.output
    assert not INTERNAL.search(text), INTERNAL.search(text).group(0)
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert not too_long, too_long


# ------------------------------------------------------------------------------------------------
# train: progress lines when stderr is not a TTY, the bar on a TTY
# ------------------------------------------------------------------------------------------------

LINE = re.compile(r"^step (\d[\d,]*)/([\d,]+) (\d+)% \| L0 [\d.]+% \| dead [\d.]+% \| loss \S+ \| [\d,]+ tok/s \| "
                  r"(eta \S+|done)$")


@pytest.mark.parametrize("columns", [80, 200])
def test_redirected_training_prints_plain_progress_lines(tmp_path: Path, columns: int) -> None:
    pytest.importorskip("torch")
    res = cli("train", *sets("total_steps=400", "flush_every=10", "checkpoint_every=0"), "--out", tmp_path,
              columns=columns)
    assert res.exit_code == 0, res.output
    err = res.stderr.splitlines()
    assert err[0].startswith(f"run directory: {tmp_path}/train_")
    assert err[1] == "device cpu, 1 thread (threads: 1)"
    lines = [m for m in map(LINE.match, err) if m]
    assert len(lines) == 10, err  # one per 10% of the run (flushes every 10 steps)
    steps = [int(m.group(1).replace(",", "")) for m in lines]
    assert steps == sorted(steps) and steps[-1] == 400 and all(int(m.group(2).replace(",", "")) == 400 for m in lines)
    assert lines[-1].group(3) == "100" and lines[-1].group(4) == "done"
    assert all(len(m.group(0)) <= 80 for m in lines), err
    assert "\x1b" not in res.stderr  # plain text: no colours, no cursor movement in a log file
    assert res.stdout.startswith("completed: 400 steps")


def test_quiet_prints_no_progress(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    res = cli("train", "-q", *sets("total_steps=100", "flush_every=10"), "--out", tmp_path)
    assert res.exit_code == 0 and res.stderr == "", res.stderr


def _pty_run(cmd: list[str], columns: int, timeout: float = 120.0) -> tuple[int, str]:
    """Run ``cmd`` on a pseudo-terminal ``columns`` wide; its output (all of it: every frame)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    env.update(TERM="xterm-256color", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    out, t0 = b"", time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    return proc.returncode, out.decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
@pytest.mark.parametrize("columns", [80, 200])
def test_progress_bar_keeps_the_step_count_and_eta_at_80_columns(tmp_path: Path, columns: int) -> None:
    pytest.importorskip("torch")
    _, out = _pty_run([sys.executable, "-m", "sae_report", "train", *sets("total_steps=3000", "flush_secs=0.2",
                                                                           "checkpoint_every=0"),
                       "--out", str(tmp_path)], columns)
    frames = [f for f in re.split(r"[\r\n]+", ANSI.sub("", out)) if f.strip()]
    bars = [f for f in frames if re.search(r"\d/3,000", f)]
    assert bars, frames
    too_long = [f for f in frames if len(f) > columns and not f.startswith("run directory: ")]  # a path is a path
    assert not too_long, too_long
    assert not any("…" in f for f in bars), bars  # nothing cut short with an ellipsis
    assert all(re.search(r"[\d,]+/3,000 (\S+ )?(eta \S+|done)", f) for f in bars), bars
    assert re.search(r"3,000/3,000 \S+ done \| L0 [\d.]+%", bars[-1]), bars[-1]
    if columns == 200:  # room for everything
        assert re.search(r"━ 3,000/3,000 \S+ done \| L0 [\d.]+% \([\d.]+\) \| dead [\d.]+% \| loss \S+ \| [\d,]+ tok/s",
                         bars[-1]), bars[-1]
    assert any(f.startswith("completed: 3000 steps") for f in frames)


@pytest.mark.parametrize("width", [20, 30, 40, 60, 80, 100, 120, 200])
def test_fit_status_drops_the_less_important_fields_first(width: int) -> None:
    pytest.importorskip("torch")
    from trainer.progress import fit_status

    pieces = {"step": "181,000/1,500,000", "eta": "eta 1h02m", "elapsed": "4m05s", "l0": "L0 12.34%",
              "l0n": "(1011.2)", "dead": "dead 10.5%", "loss": "loss 0.01234", "tps": "1,234,567 tok/s"}
    bar, text = fit_status(pieces, width)
    assert text.startswith("181,000/1,500,000") and "eta 1h02m" in text  # never cut
    if width >= 40:
        assert (bar + 1 if bar else 0) + len(text) <= width - 1
    from trainer.progress import _join

    kept = {k for k in pieces if pieces[k] in text}
    for k in set(pieces) - kept:  # left out only because it did not fit
        assert (bar + 1 if bar else 0) + len(_join(pieces, kept | {k})) > width - 1, k
    if width == 200:
        assert bar == 20 and kept == set(pieces)
    if width >= 60:
        assert {"l0", "dead"} <= kept
    if width >= 80:
        assert bar >= 10


# ------------------------------------------------------------------------------------------------
# threads and pace
# ------------------------------------------------------------------------------------------------


def test_auto_threads_use_only_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from trainer import threads as th

    class Sampler:
        def __init__(self, others: float | None) -> None:
            self.value = others

        def others(self) -> float | None:
            return self.value

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(th, "cpus_available", lambda: 2)
    monkeypatch.setattr(th.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    th._last_run_end.clear()
    assert th.choose_threads(0, 2, Sampler(0.05)) == th.ThreadChoice(2, True, "auto: 2 of 2 CPUs free")
    assert th.choose_threads(0, 2, Sampler(1.0)) == th.ThreadChoice(1, True,
                                                                    "auto: other processes keep 1.0 of 2 CPUs busy")
    assert th.choose_threads(0, 2, Sampler(3.2)).why == "auto: other processes keep all 2 CPUs busy, load 3.2"
    monkeypatch.setattr(th.os, "getloadavg", lambda: (1.3, 0.0, 0.0))  # load of the last minute counts too
    assert th.choose_threads(0, 2, Sampler(0.0)).threads == 1
    th.note_run_end()  # ... but not right after a run of this process (its own load)
    assert th.choose_threads(0, 2, Sampler(0.0)).threads == 2
    assert th.choose_threads(3, 2, Sampler(1.5)) == th.ThreadChoice(3, False, "threads: 3")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert th.choose_threads(0, 2, Sampler(1.5)) == th.ThreadChoice(2, False, "OMP_NUM_THREADS=2")


def test_pace_notices_a_collapse_but_not_a_checkpoint() -> None:
    pytest.importorskip("torch")
    from trainer.threads import Pace

    pace = Pace(total_steps=10_000, start_step=0)
    pace.first(1, 0.0)
    t, step = 0.0, 1
    for _ in range(3):  # the first steps: 300 steps/s
        t, step = t + 1.0, step + 300
        pace.observe(step, t)
    assert pace.promise == pytest.approx(300)
    t, step = t + 5.0, step + 300  # a slow stretch spent in a checkpoint: left out
    pace.observe(step, t, paused_s=4.0)
    t, step = t + 1.0, step + 250
    pace.observe(step, t)
    assert not pace.collapsed()
    t, step = t + 5.0, step + 100  # 20 steps/s
    pace.observe(step, t)
    assert not pace.collapsed()  # once could be noise
    t, step = t + 5.0, step + 100
    pace.observe(step, t)
    assert pace.collapsed()
    pace.mark_collapse(step)
    assert not pace.collapsed()  # said once
    assert pace.eta(step) == pytest.approx((10_000 - step) / pace.recent_rate)


def _train_module():
    return importlib.import_module("trainer.loop")


@pytest.mark.parametrize("auto", [True, False])
def test_a_collapsed_run_drops_to_one_thread_or_says_what_to_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], auto: bool) -> None:
    torch = pytest.importorskip("torch")
    from trainer import TrainConfig
    from trainer import threads as th

    tt = _train_module()
    before = torch.get_num_threads()
    if auto:  # as on an idle 2-CPU machine that gets busy during the run
        monkeypatch.setattr(tt, "choose_threads", lambda req, default, sampler: th.ThreadChoice(2, True, "auto: test"))

    class Slowing(th.Pace):
        """What the clock says on a busy machine: 300 steps/s in the first stretches, then 20."""

        def observe(self, step: int, now: float, paused_s: float = 0.0) -> None:
            if self.t_first is None:
                return
            self.rates.append(300.0 if len(self.rates) < th.MEASURED_FIRST else 20.0)
            self.promise = 300.0
            self.slow = max(0, len(self.rates) - th.MEASURED_FIRST)

    monkeypatch.setattr(tt, "Pace", Slowing)
    cfg = TrainConfig(d_in=16, d_sae=64, batch_size=128, synth_active=3, dead_window=50, total_steps=200,
                      flush_every=10, checkpoint_every=0, threads=0 if auto else 2)
    result = tt.train(cfg, out_dir=tmp_path, progress=False)
    err = capsys.readouterr().err
    summary = json.loads((result.run_dir / "summary.json").read_text())
    (warning,) = [line for line in err.splitlines() if "training slowed" in line]
    assert re.match(r"warning: at step [\d,]+ training slowed to 20 steps/s from 300 in its first steps: other "
                    r"processes are using the CPU and torch's 2 threads wait for each other; ", warning), warning
    if auto:
        assert warning.endswith("switched to 1 thread (--set threads=1 starts with one)")
        assert summary["threads"] == 1 and summary["threads_changed"]["from"] == 2
    else:
        assert warning.endswith("set threads=1 (--set threads=1, or threads: 0 to choose by itself): one thread "
                                "does not stall when another process takes a core")
        assert summary["threads"] == 2 and summary["threads_changed"] is None
    start = next(e for e in read_run(result.run_dir).events if e.kind == "start")
    assert start.data["threads"] == 2
    assert torch.get_num_threads() == before  # train() leaves torch as it found it


def test_a_run_that_will_take_hours_says_so_with_its_estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from trainer import threads as th

    tt = _train_module()
    monkeypatch.setattr(th, "ESTIMATE_AFTER_S", 0.0)
    monkeypatch.setattr(tt, "LONG_RUN_S", 0.0)  # as if 300 steps were hours of work
    res = cli("train", "-q", *sets("total_steps=300", "flush_every=10", "checkpoint_every=0"), "--out", tmp_path)
    assert res.exit_code == 0, res.output
    (line,) = res.stderr.splitlines()
    assert re.fullmatch(r"warning: this run will take about \d+ s here \(300 steps at [\d.e+]+ steps/s, [\d,]+ "
                        r"tokens/s, from its first [\d,]+ steps; cpu, 1 thread, d_sae 64\): fewer total_steps, a "
                        r"smaller d_sae or batch_size, or a GPU shorten it", line), line


def test_durations() -> None:
    pytest.importorskip("torch")
    from trainer.threads import fmt_duration, fmt_long

    assert [fmt_duration(s) for s in (0, 42, 245, 3720, 400_000)] == ["0s", "42s", "4m05s", "1h02m", "111h"]
    assert [fmt_long(s) for s in (50, 2700, 3600, 5700)] == ["50 s", "45 min", "1 h", "1 h 35 min"]


# ------------------------------------------------------------------------------------------------
# compare: the table at 80 and 200 columns
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    assert cli("fixtures", root, "--rows", "300").exit_code == 0
    return root


def _table_lines(out: str, ids: list[str]) -> dict[str, str]:
    return {i: next(line for line in out.splitlines() if line.lstrip().startswith(i)) for i in ids}


@pytest.mark.parametrize("tty", [False, True])
def test_compare_table_fits_80_columns_and_shows_everything_at_200(demo: Path, tty: bool) -> None:
    ids = sorted(p.name for p in demo.iterdir() if p.is_dir() and (p / "metrics").is_dir())
    env = {"TTY_COMPATIBLE": "1", "NO_COLOR": "1"} if tty else {}
    narrow = cli("compare", demo, "--no-files", columns=80, env=env)
    assert narrow.exit_code == 0, narrow.output
    text = ANSI.sub("", narrow.stdout)
    assert all(len(line.rstrip()) <= 80 for line in text.splitlines()), text
    assert "…" not in text
    rows = _table_lines(text, ids)
    for run, line in rows.items():  # each run's l1_alpha, settled L0 and % of target on its own row, whole
        assert re.match(rf"{run}\s+0\.0\d+\s+[\d.]+%\s+\d+%\s", line.strip()), line
    header = next(line for line in text.splitlines() if line.strip().startswith("run "))
    assert header.split()[:5] == ["run", "l1_alpha", "settled", "L0", "%"]
    assert "Key finding:" in text and "Recommended l1_alpha:" in text

    wide = ANSI.sub("", cli("compare", demo, "--no-files", columns=200, env=env).stdout)
    header = next(line for line in wide.splitlines() if line.strip().startswith("run "))
    for col in ("l1_alpha", "settled L0", "% target", "final L0", "dead", "resample", "status", "final loss",
                "2nd-half mean", "time"):
        assert col in header, header
    assert all(len(line.rstrip()) <= 200 for line in wide.splitlines())
    key = next(line for line in wide.splitlines() if line.startswith("Key finding:"))
    assert len(key) > 120  # prose uses the width it has


def test_compare_without_a_terminal_or_columns_keeps_one_wide_layout(demo: Path) -> None:
    out = CliRunner(env={"COLUMNS": None}).invoke(main, ["compare", str(demo), "--no-files"]).stdout
    header = next(line for line in out.splitlines() if line.strip().startswith("run "))
    assert "time" in header and "2nd-half mean" in header
    assert any(line.startswith("Key finding:") and len(line) > 200 for line in out.splitlines())  # not wrapped


def test_compare_with_long_run_ids_prints_one_block_per_run_at_80_columns(tmp_path: Path) -> None:
    from sae_report.fixtures import write_run

    ids = [f"offline-run-20260101_12000{i}-{'abcdef' * 8}{i}" for i in range(2)]
    for i, (rid, scenario) in enumerate(zip(ids, ("sibling_low", "sibling_mid"))):
        write_run(tmp_path, scenario, rows=300, seed=i, run_id=rid)
    res = cli("compare", tmp_path, "--no-files", "--target-l0", "0.05", columns=80)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    for rid in ids:
        i = lines.index(rid)  # the id whole on its own line, its numbers under it
        assert lines[i + 1].startswith("  l1_alpha 0.0") and "settled L0" in lines[i + 1]


# ------------------------------------------------------------------------------------------------
# analyze: a run in progress, an unfinished run
# ------------------------------------------------------------------------------------------------


@pytest.fixture()
def trained(tmp_path: Path) -> Path:
    pytest.importorskip("torch")
    assert cli("train", "-q", *sets("total_steps=120", "flush_every=10"), "--out", tmp_path / "runs").exit_code == 0
    (run,) = (tmp_path / "runs").iterdir()
    return run


def test_a_run_held_by_a_live_writer_is_in_progress(trained: Path) -> None:
    from sae_report.runlog import LOCK_FILE, lock_folder

    with lock_folder(trained, command="sae-report train --resume RUN"):
        notes = read_run(trained).notes
        assert re.fullmatch(rf"run in progress: pid {os.getpid()} \(sae-report train --resume RUN\) since "
                            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC is writing it; this analysis covers the steps logged "
                            r"up to step 120 of 120", notes[0]), notes[0]
        res = cli("analyze", trained, "--json", "--format", "json", "--out", trained.parent / "report")
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["run"]["notes"][0].startswith("run in progress: pid ")
    assert not (trained / LOCK_FILE).exists()
    assert not any(n.startswith(("run in progress", "unfinished")) for n in read_run(trained).notes)


def test_a_run_stopped_before_its_end_is_unfinished(trained: Path) -> None:
    from sae_report.runlog import LOCK_FILE

    (trained / "summary.json").unlink()
    expected = (f"unfinished run: no summary.json and no process is writing it (stopped before its end: killed, "
                f"crashed, or out of disk); this analysis covers the steps logged up to step 120 of 120; continue it "
                f"with: sae-report train --resume {trained}")
    assert read_run(trained).notes[0] == expected
    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    (trained / LOCK_FILE).write_text(json.dumps({"pid": gone, "command": "sae-report train", "since":
                                                 "2026-01-01 00:00:00 UTC"}))  # left by a kill -9
    assert read_run(trained).notes[0] == expected
    # a live pid that started after the lock was taken: the writer died and its pid was reused
    (trained / LOCK_FILE).write_text(json.dumps({"pid": os.getpid(), "command": "sae-report train", "since":
                                                 "2000-01-01 00:00:00 UTC"}))
    if Path(f"/proc/{os.getpid()}/stat").exists():
        assert read_run(trained).notes[0] == expected
    (trained / LOCK_FILE).unlink()
    (trained / "summary.json").write_text('{"status": "completed"}')
    assert not any(n.startswith(("run in progress", "unfinished")) for n in read_run(trained).notes)


def test_analyze_while_training_says_run_in_progress(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "sae_report", "train", "-q",
                             *sets("total_steps=10000000", "flush_every=5", "checkpoint_every=0"), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while sum(p.stat().st_size for p in out.glob("*/metrics/part-*.csv")) < 2000:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() - t0 < 60
            time.sleep(0.05)
        (run,) = out.iterdir()
        res = cli("analyze", run, "--json", "--format", "json", "--out", tmp_path / "report")
        assert res.exit_code == 0, res.output
        note = json.loads(res.stdout)["run"]["notes"][0]
        assert note.startswith(f"run in progress: pid {proc.pid} (sae-report train -q ") and \
            "of 10,000,000" in note, note
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
