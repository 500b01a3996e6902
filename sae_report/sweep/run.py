"""Running a sweep: one child process per device slot, state in ``sweep.json``, then the comparison.

State lives on disk: the sweep folder holds one run directory per grid point and ``sweep.json``
(the grid, the shared config and each run's status, written atomically after every change). A
restart of the same command skips runs whose ``summary.json`` says completed (or diverged),
resumes the others from their newest checkpoint, and trains those never started; a different grid
or config in the same folder is refused. A run stopped before its first checkpoint is set aside as
``<name>.partial-N`` and trained afresh (nothing is deleted).

The children and Ctrl-C are ``pool.run_pool``'s: each child gets one SIGINT (the trainer finishes
its step, checkpoints and exits 130); they are recorded as interrupted and ``KeyboardInterrupt`` is
raised.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..runlog import LockHeldError, atomic_write_text, lock_folder, to_jsonable
from ..runlog.writer import sweep_temp_files
from .plan import PlannedRun, SweepError, SweepPlan, has_checkpoint
from .pool import LOG_FILE, Slots, child_outcome, run_pool, start_child, summary_status

STATE_FILE = "sweep.json"


@dataclass
class RunOutcome:
    """One run of the sweep, as ``sweep.json`` records it."""

    name: str
    """Run directory name under the sweep folder."""
    values: dict[str, Any]
    """The swept keys' values."""
    status: str = "planned"
    """planned / running / completed / diverged / interrupted / failed."""
    device: str | None = None
    """The device it last trained on (None: the config's)."""
    seconds: float | None = None
    """Wall-clock seconds of its last child process (None: not trained by this sweep)."""
    resumed: bool = False
    """True when its last child resumed it from a checkpoint."""
    reused: bool = False
    """True when it was already finished on disk when this invocation started."""
    error: str = ""
    """The last error line of a failed child."""
    settled_l0: float | None = None
    """Second-half median L0 fraction from the comparison (None when unreadable)."""


@dataclass
class SweepResult:
    """What a sweep did."""

    plan: SweepPlan
    """The plan it ran."""
    runs: list[RunOutcome] = field(default_factory=list)
    """One outcome per grid point, in grid order."""
    comparison_files: list[Path] = field(default_factory=list)
    """The comparison's files (empty when no run could be read)."""
    comparison_note: str = ""
    """Why there is no comparison, in one line ("" when written)."""

    @property
    def failed(self) -> list[RunOutcome]:
        """Runs that failed or diverged."""
        return [r for r in self.runs if r.status in ("failed", "diverged")]


ProgressFn = Callable[[str, RunOutcome, str], None]


def save_state(plan: SweepPlan, runs: list[RunOutcome]) -> None:
    """Write ``sweep.json`` atomically."""
    doc = {"config": str(plan.config) if plan.config else None, "overrides": list(plan.overrides),
           "grid": plan.grid_dict(), "base_config": plan.base_config, "runs": [asdict(r) for r in runs]}
    atomic_write_text(plan.out_dir / STATE_FILE, json.dumps(to_jsonable(doc), indent=2, allow_nan=False) + "\n")


def check_same_sweep(plan: SweepPlan) -> None:
    """Refuse a folder that holds another grid or config (``SweepError``, one line)."""
    path = plan.out_dir / STATE_FILE
    if not path.exists():
        return
    try:
        state = json.loads(path.read_text())
        old_names = [r["name"] for r in state["runs"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise SweepError(f"{path}: not a readable sweep state (move it away to start a new sweep)") from None
    if old_names != [r.name for r in plan.runs]:
        grid = " ".join(f"--grid {k}={','.join(map(str, v))}" for k, v in (state.get("grid") or {}).items())
        raise SweepError(f"{plan.out_dir}: holds a sweep over a different grid ({grid}); use another --out")
    old = state.get("base_config") or {}
    diff = sorted(k for k in set(old) & set(plan.base_config) if old[k] != to_jsonable(plan.base_config[k]))
    if diff:
        k = diff[0]
        raise SweepError(f"{plan.out_dir}: holds a sweep with a different config ({k}: {old[k]!r} there, "
                         f"{plan.base_config[k]!r} now); use another --out")


def run_sweep(plan: SweepPlan, progress: ProgressFn | None = None, *, command: str = "") -> SweepResult:
    """Train every unfinished run of ``plan`` (``len(plan.slots)`` at once), then compare them all."""
    notify = progress or (lambda *_: None)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    try:  # one sweep at a time in a folder
        lock = lock_folder(plan.out_dir)
    except LockHeldError as exc:
        raise SweepError(str(exc)) from None
    try:
        check_same_sweep(plan)
        sweep_temp_files(plan.out_dir)  # sweep.json temp files a killed sweep left
        result = SweepResult(plan, [RunOutcome(r.name, r.values) for r in plan.runs])
        _train_all(plan, result.runs, notify)
        _compare(plan, result, command)
        save_state(plan, result.runs)
        return result
    finally:
        lock.release()


def _train_all(plan: SweepPlan, runs: list[RunOutcome], notify: ProgressFn) -> None:
    todo: list[tuple[PlannedRun, RunOutcome]] = []
    for planned, out in zip(plan.runs, runs):
        status = summary_status(plan.out_dir / planned.name)
        if status in ("completed", "diverged"):
            out.status, out.reused = status, True
            notify("skip", out, "")
        else:
            todo.append((planned, out))
    save_state(plan, runs)

    def start(job: tuple[PlannedRun, RunOutcome], device: str | None) -> subprocess.Popen | None:
        proc = _start(plan, *job, device, notify)
        if proc is None:  # its folder is in use (a child of a sweep killed with -9)
            notify("done", job[1], "")
        save_state(plan, runs)
        return proc

    def done(job: tuple[PlannedRun, RunOutcome], code: int, seconds: float, interrupted: bool) -> None:
        out = job[1]
        end = child_outcome(plan.out_dir / out.name, code, interrupted)
        out.status, out.error, out.seconds = end.status, end.error, seconds
        notify("done", out, "")
        save_state(plan, runs)

    try:
        run_pool(todo, Slots(plan.slots, plan.threads), start, done)
    finally:
        save_state(plan, runs)


def _start(plan: SweepPlan, planned: PlannedRun, out: RunOutcome, device: str | None,
           notify: ProgressFn) -> subprocess.Popen | None:
    """Start ``planned``'s child on ``device``; None (the run marked failed) when its folder is in use."""
    run_dir = plan.out_dir / planned.name
    if run_dir.exists():
        try:  # a writer still at work there (a child of a sweep killed with -9): not touched
            lock_folder(run_dir).release()
        except LockHeldError as exc:
            out.status, out.error, out.seconds = "failed", str(exc), None
            return None
    if run_dir.exists() and not has_checkpoint(run_dir) and (run_dir / "metrics").exists():
        n = 1  # stopped before its first checkpoint: set aside, trained afresh
        while (aside := run_dir.with_name(f"{run_dir.name}.partial-{n}")).exists():
            n += 1
        run_dir.rename(aside)
    out.resumed = has_checkpoint(run_dir)
    out.status, out.device, out.error = "running", device, ""
    notify("start", out, str(run_dir / LOG_FILE))
    return start_child(run_dir, plan.config, plan.child_sets(planned, device))


def _compare(plan: SweepPlan, result: SweepResult, command: str) -> None:
    """The comparison of every run that can be read, written to the sweep folder."""
    from ..compare import compare_runs
    from ..report.comparison import write_comparison

    paths = [plan.out_dir / r.name for r in result.runs if (plan.out_dir / r.name / "metrics").exists()]
    if not paths:
        result.comparison_note = "no run can be read, so there is no comparison"
        return
    comp = compare_runs(paths, plan.target_l0)
    by_path = {Path(row.path).resolve(): row for row in comp.rows}
    for out in result.runs:
        row = by_path.get((plan.out_dir / out.name).resolve())
        out.settled_l0 = getattr(row, "settled_l0", None) if row is not None else None
    if not comp.rows:
        result.comparison_note = "no run can be read, so there is no comparison"
        return
    try:
        result.comparison_files = write_comparison(comp, plan.out_dir, command=command)
    except OSError as exc:
        raise SweepError(f"{plan.out_dir}: cannot write the comparison ({exc.strerror or exc})") from None
