"""Trainings in child processes, one per device slot at once: what ``sweep`` and a parallel
``tune`` share.

A slot is a device (``cuda:0``, ``cpu``; None: the config's own). ``device_slots`` turns
``--devices`` / ``--parallel`` into slots and the CPU threads each child gets; ``start_child``
starts ``python -m sae_report.sweep.child RUN_DIR`` with its output appended to ``RUN_DIR/train.log``;
``run_pool`` keeps every slot busy until the jobs are done.

Children run in their own session, so a Ctrl-C at the terminal reaches the parent only; the pool
sends each child one SIGINT (the trainer finishes its step, checkpoints and exits 130), waits for
them (a second Ctrl-C kills them), reports each as done with ``interrupted=True`` and re-raises
``KeyboardInterrupt``; any other exception in the pool stops the children the same way.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Sequence, TypeVar

LOG_FILE = "train.log"
#: How often the pool looks at its children (seconds).
POLL_S = 0.05

J = TypeVar("J")


class SlotError(ValueError):
    """``--devices`` / ``--parallel`` that cannot be used (one line)."""


@dataclass(frozen=True)
class Slots:
    """Where the children train."""

    devices: tuple[str | None, ...]
    """One device per child trained at once (None: the config's own device)."""
    threads: int | None
    """CPU threads given to each child on a CPU slot: cores / parallel (None: the config's
    ``threads`` is kept, when it sets them or when one child at a time has the free cores)."""

    def sets(self, device: str | None) -> list[str]:
        """The ``--set`` items that place a child on ``device``: device, and threads on a CPU."""
        extra = [] if device is None else [f"device={device}"]
        if self.threads is not None and (device is None or not device.startswith("cuda")):
            extra.append(f"threads={self.threads}")
        return extra


def free_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cuda_devices() -> tuple[str, ...]:
    """``cuda:0`` ... for every CUDA device torch sees here (empty without torch or CUDA)."""
    try:
        import torch
    except ImportError:
        return ()
    return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count())) if torch.cuda.is_available() else ()


def device_slots(devices: Sequence[str], parallel: int | None, config_threads: int = 0) -> Slots:
    """Slots for ``--devices a,b`` and ``--parallel N`` (default: one per device; 1 with no devices
    or ``cpu``); devices are used round-robin. ``--devices all``: every CUDA device torch sees
    (``cpu`` without one). ``config_threads``: the config's ``threads`` (0 = auto, then each of N > 1
    children gets cores / N)."""
    names = tuple(d.strip() for d in devices if d.strip())
    if "all" in names:
        if names != ("all",):
            raise SlotError("--devices all: give it alone (it means every CUDA device torch sees)")
        names = cuda_devices() or ("cpu",)
    for d in names:
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps|auto", d):
            raise SlotError(f"--devices {d}: expected cpu, cuda, cuda:N, mps, auto or all")
    if parallel is None:
        parallel = 1 if not names or names == ("cpu",) else len(names)
    if parallel < 1:
        raise SlotError(f"--parallel {parallel}: give at least 1")
    slots = tuple(names[i % len(names)] for i in range(parallel)) if names else (None,) * parallel
    threads = None if config_threads or parallel == 1 else max(1, free_cores() // parallel)
    return Slots(slots, threads)


def start_child(run_dir: Path, config: Path | None, sets: Sequence[str], *,
                resume_with_config: bool = False) -> subprocess.Popen:
    """Start the child that trains (or resumes) ``run_dir``; its output goes to ``run_dir/train.log``
    after a ``$ command`` line. ``resume_with_config``: a run with a checkpoint is resumed with
    ``config`` and ``sets``, not its own config.yaml (``sae_report.sweep.child``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "sae_report.sweep.child", str(run_dir)]
    if config is not None:
        cmd += ["--config", str(config)]
    for item in sets:
        cmd += ["--set", item]
    if resume_with_config:
        cmd.append("--resume-with-config")
    with open(run_dir / LOG_FILE, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(cmd)}\n")
        log.flush()
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def last_error(run_dir: Path) -> str:
    """The last error line of ``run_dir/train.log`` ("" when there is none)."""
    try:
        lines = [ln.strip() for ln in (run_dir / LOG_FILE).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("Error:") or "Error" in ln.split(":")[0]]
    line = (errors or lines or [""])[-1]
    return line.removeprefix("Error: ")[:300]


def summary_status(run_dir: Path) -> str | None:
    """``status`` of ``run_dir/summary.json`` (None when missing or unreadable)."""
    try:
        return str(json.loads((run_dir / "summary.json").read_text()).get("status"))
    except (OSError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class ChildOutcome:
    """How a child's training ended."""

    status: str
    """completed / diverged / interrupted / failed."""
    error: str = ""
    """Why, in one line, when it diverged or failed ("" otherwise)."""


def child_outcome(run_dir: Path, code: int, interrupted: bool) -> ChildOutcome:
    """The outcome of the child that trained ``run_dir`` and exited with ``code``; ``interrupted``:
    the pool stopped it (a SIGKILL then is the second Ctrl-C; one nobody asked for is most likely
    the kernel's out-of-memory killer)."""
    status = summary_status(run_dir)
    if code == 0 and status == "completed":
        return ChildOutcome("completed")
    if status == "diverged":
        return ChildOutcome("diverged", "the loss became non-finite (see events.ndjson, 'nonfinite')")
    if code in (130, -signal.SIGINT, -signal.SIGTERM) or (interrupted and code == -signal.SIGKILL):
        return ChildOutcome("interrupted")
    if code == -signal.SIGKILL:
        return ChildOutcome("failed", "killed by SIGKILL (out of memory?)")
    return ChildOutcome("failed", last_error(run_dir) or f"exit code {code}")


@dataclass
class _Running(Generic[J]):
    job: J
    proc: subprocess.Popen
    t0: float


StartFn = Callable[[J, "str | None"], "subprocess.Popen | None"]
DoneFn = Callable[[J, int, float, bool], None]


def run_pool(jobs: Sequence[J], slots: Slots, start: StartFn, done: DoneFn) -> None:
    """Run ``jobs`` in order, one per slot at once. ``start(job, device)`` starts its child (None:
    nothing to run; the job is done at once, with ``done`` not called); ``done(job, exit_code,
    seconds, interrupted)`` is called as each child ends."""
    todo = list(jobs)
    running: dict[int, _Running[J]] = {}
    try:
        while todo or running:
            for slot, device in enumerate(slots.devices):
                if slot not in running and todo:
                    job = todo.pop(0)
                    proc = start(job, device)
                    if proc is not None:
                        running[slot] = _Running(job, proc, time.monotonic())
            for slot, r in list(running.items()):
                if r.proc.poll() is not None:
                    del running[slot]
                    done(r.job, r.proc.returncode, time.monotonic() - r.t0, False)
            time.sleep(POLL_S)
    except BaseException:  # Ctrl-C, or a failure of our own (a full disk): no child is left unattended
        _stop(list(running.values()), done)
        raise


def _stop(running: list[_Running[J]], done: DoneFn) -> None:
    """One SIGINT to each child (the trainer checkpoints), then wait; a second Ctrl-C kills them."""
    for r in running:
        if r.proc.poll() is None:
            r.proc.send_signal(signal.SIGINT)
    for r in running:
        try:
            code = r.proc.wait()
        except KeyboardInterrupt:
            for other in running:
                if other.proc.poll() is None:
                    other.proc.kill()
            code = r.proc.wait()
        done(r.job, code, time.monotonic() - r.t0, True)


__all__ = ["LOG_FILE", "ChildOutcome", "SlotError", "Slots", "child_outcome", "cuda_devices", "device_slots", "free_cores", "last_error", "run_pool", "start_child", "summary_status"]
