"""How many CPU threads a run uses with ``threads: 0`` (auto), and the pace of a run: its rate,
its ETA, the estimate from its first steps, and the collapse of a multi-threaded run on a busy CPU.

torch runs each CPU op on a team of threads that wait for each other at the end of the op. A
step of a small SAE is hundreds of short ops, so when another process takes one of the cores,
every op waits for the thread that lost its core. Measured on a 2-CPU machine (default config,
1,500 steps; docs/trainer.md, "Threads"): 6.3 s with 1 thread against 82.5 s with 2 while other
processes kept the machine busy, 13x slower; on a quiet machine 2 threads are ~30% faster. So
auto uses torch's default only when the cores are free: at the start it looks at how busy the
CPUs are (the CPU time of other processes during the set-up, and the 1-minute load average), and
during the run ``Pace`` watches for the collapse (steps/s far below what the first steps
promised) and the trainer then drops to one thread.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

#: A run expected to take at least this long gets a one-line warning with the estimate ...
LONG_RUN_S = 3600.0
#: ... made from its first this many seconds of training (a run that ends sooner needs none).
ESTIMATE_AFTER_S = 5.0
#: A multi-threaded run whose steps/s falls below 1/COLLAPSE_RATIO of what its first steps
#: promised, two measurements in a row, has collapsed (measured: 5-13x; noise: under 2x).
COLLAPSE_RATIO = 3.0
#: Shortest stretch of training a rate is measured over (several flushes are merged if needed).
MIN_INTERVAL_S = 0.5
#: The first MEASURED_FIRST stretches set the "promise" the later ones are compared with.
MEASURED_FIRST = 3
#: At least this long a sample of the other processes' CPU use at the start.
MIN_SAMPLE_S = 0.25


def cpus_available() -> int:
    """CPUs this process may run on (affinity / container limits where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _system_busy_s() -> float | None:
    """CPU seconds all processes have used since boot (Linux ``/proc/stat``), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
        if fields[0] != "cpu":
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


class CpuSampler:
    """CPU used by other processes from its creation to ``others()``: cores kept busy on average."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), _system_busy_s(), _own_cpu_s()

    def others(self) -> float | None:
        """Average number of cores other processes kept busy; None where the OS does not say.
        Waits until the sample is MIN_SAMPLE_S long (a short set-up would measure nothing)."""
        if self.busy0 is None:
            return None
        wait = MIN_SAMPLE_S - (time.monotonic() - self.t0)
        if wait > 0:
            time.sleep(wait)
        busy = _system_busy_s()
        if busy is None:
            return None
        span = time.monotonic() - self.t0
        return max(0.0, (busy - self.busy0 - (_own_cpu_s() - self.own0)) / span)


_last_run_end: list[float] = []  # monotonic time a run of this process ended (its CPU use is in the load average)


def note_run_end() -> None:
    _last_run_end[:] = [time.monotonic()]


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    """torch CPU threads for the training loop."""
    auto: bool
    """Chosen here (``threads: 0``); False when the config or OMP_NUM_THREADS set it."""
    why: str
    """For the start line, e.g. ``auto: other processes keep 1.4 of 2 CPUs busy``."""


def choose_threads(requested: int, default: int, sampler: CpuSampler | None) -> ThreadChoice:
    """The thread count for the loop: ``requested`` when set; else torch's ``default`` if the CPUs
    are free, fewer (at least 1) when other processes keep some of them busy."""
    if requested:
        return ThreadChoice(requested, False, f"threads: {requested}")
    if os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        return ThreadChoice(default, False, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS'].strip()}")
    cpus = cpus_available()
    if default <= 1:
        return ThreadChoice(1, True, "auto: torch uses 1 thread here")
    measured = sampler.others() if sampler is not None else None
    others = measured if measured is not None else 0.0
    recent = _last_run_end and time.monotonic() - _last_run_end[0] < 90
    if not recent:  # the load average would count this process's previous run
        try:
            others = max(others, os.getloadavg()[0])
        except (AttributeError, OSError):
            pass
    # every thread needs a core of its own: a thread that loses its core stalls all the others
    threads = max(1, min(default, int(cpus - others + 0.25)))
    if threads < default:
        why = (f"auto: other processes keep all {cpus} CPUs busy, load {others:.1f}" if others >= cpus - 0.05 else
               f"auto: other processes keep {others:.1f} of {cpus} CPUs busy")
    else:
        why = f"auto: {cpus - others:.0f} of {cpus} CPUs free"
    return ThreadChoice(threads, True, why)


def fmt_duration(seconds: float) -> str:
    """``42s``, ``4m05s``, ``1h02m``, ``123h``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 100 * 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 3600}h"


def fmt_long(seconds: float) -> str:
    """``2 h 10 min``, ``45 min``, ``50 s`` (for sentences)."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{round(s / 60)} min"
    h, m = divmod(round(s / 60), 60)
    return f"{h} h {m} min" if m else f"{h} h"


@dataclass
class Pace:
    """Steps per second of a run, from the (step, time) pairs the trainer sees at each flush.

    ``first(step, now)`` after the first step (allocations and page faults make it slow),
    ``observe(step, now, paused_s)`` at each flush (``paused_s``: time in checkpoints and
    resampling since the previous flush, left out of the rates that detect a collapse).
    """

    total_steps: int
    start_step: int
    t_first: float | None = None
    step_first: int = 0
    window: list[tuple[float, int]] = field(default_factory=list)
    _last: tuple[float, int, float] | None = None  # start of the stretch being measured: time, step, paused
    _paused: float = 0.0
    rates: list[float] = field(default_factory=list)
    promise: float | None = None
    slow: int = 0
    collapsed_at: int | None = None
    estimated: bool = False

    def first(self, step: int, now: float) -> None:
        self.t_first, self.step_first = now, step
        self._last = (now, step, 0.0)
        self.window = [(now, step)]

    def observe(self, step: int, now: float, paused_s: float = 0.0) -> None:
        if self.t_first is None:
            return
        self._paused += paused_s
        self.window.append((now, step))
        while len(self.window) > 2 and now - self.window[1][0] >= 60:  # the last minute or so
            self.window.pop(0)
        t, s, p = self._last or (now, step, 0.0)
        busy = (now - t) - (self._paused - p)
        if busy >= MIN_INTERVAL_S and step > s:
            rate = (step - s) / busy
            self.rates.append(rate)
            self._last = (now, step, self._paused)
            if len(self.rates) <= MEASURED_FIRST:
                self.promise = max(self.promise or 0.0, rate)
            elif self.promise and rate < self.promise / COLLAPSE_RATIO:
                self.slow += 1
            else:
                self.slow = 0

    def collapsed(self) -> bool:
        """Two measurements in a row far below the first steps' rate (reported once: ``reset_collapse``)."""
        return self.collapsed_at is None and self.slow >= 2

    def mark_collapse(self, step: int) -> None:
        self.collapsed_at = step

    @property
    def recent_rate(self) -> float | None:
        """Steps/s over about the last minute."""
        if len(self.window) < 2:
            return None
        (t0, s0), (t1, s1) = self.window[0], self.window[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

    @property
    def recent_measured(self) -> float | None:
        """The last measured rate (checkpoints and resampling left out)."""
        return self.rates[-1] if self.rates else None

    def eta(self, step: int) -> float | None:
        rate = self.recent_rate
        return (self.total_steps - step) / rate if rate else None

    def first_estimate(self, step: int, now: float) -> float | None:
        """The whole run's time from its first steps, once they have run ESTIMATE_AFTER_S seconds."""
        if self.t_first is None or step <= self.step_first:
            return None
        spent = now - self.t_first
        if spent < ESTIMATE_AFTER_S:
            return None
        rate = (step - self.step_first) / spent
        return (self.total_steps - self.start_step) / rate
