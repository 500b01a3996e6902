"""How a campaign's runs are trained: in this process one after another (``InProcess``, the
default; tests give it a stand-in ``train_fn``), or in child processes, one per device slot at once
(``Children``: ``sae-report tune --devices cuda:0,cuda:1`` or ``--devices cpu --parallel 2``).

Both take the same jobs (an iteration, its config, its run directory and whether to resume it) and
leave each iteration's ``status`` as the trainer ended it: completed, diverged, interrupted, or
(children only) failed with ``error`` set. A child trains exactly what the in-process trainer would:
its config is the iteration's whole config, written to ``<campaign>/.tune/<run_id>.yaml``, and a
run with a checkpoint is resumed from it (with a longer ``total_steps`` when it was lengthened).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..runlog import atomic_write_text, to_jsonable
from ..sweep.pool import LOG_FILE, Slots, child_outcome, run_pool, start_child

#: The campaign's subfolder holding each child's config (``<run_id>.yaml``).
CONFIG_DIR = ".tune"


@dataclass
class Job:
    """One run to train."""

    it: Any
    """The campaign's ``Iteration`` (its ``status``, ``train_seconds`` and ``error`` are updated)."""
    config: Any
    """Its ``TrainConfig``."""
    run_dir: Path
    """Its run directory."""
    resume: Path | None
    """The run directory when it is resumed from its newest checkpoint, else None."""


Notify = Callable[[Any], None]


class InProcess:
    """Runs one after another in this process (``train_fn`` is ``trainer.train`` or a stand-in)."""

    def __init__(self, train_fn: Callable[..., Any], progress: bool = False) -> None:
        self.train_fn = train_fn
        self.progress = progress
        self.parallel = 1
        self.where = ""

    def train(self, jobs: Sequence[Job], out_dir: Path, started: Notify, finished: Notify) -> None:
        """Train ``jobs`` in order (``started`` / ``finished`` called around each); stops after a
        run that was interrupted (Ctrl-C: its checkpoint is on disk)."""
        for job in jobs:
            started(job)
            t0 = time.time()
            result = self.train_fn(job.config, out_dir, run_dir=job.run_dir, resume=job.resume,
                                   progress=self.progress)
            job.it.train_seconds = (job.it.train_seconds or 0.0) + time.time() - t0
            job.it.status = str(getattr(result, "status", "completed"))
            job.it.error = ""
            finished(job)
            if job.it.status == "interrupted":
                return


class Children:
    """Runs in child processes (``python -m sae_report.sweep.child``), one per slot at once; each
    child's output goes to ``RUN_DIR/train.log``."""

    def __init__(self, slots: Slots) -> None:
        self.slots = slots
        self.parallel = len(slots.devices)
        names = [d or "the config's device" for d in slots.devices]
        self.where = (f"{self.parallel} at a time on {', '.join(dict.fromkeys(names))}"
                      + (f", {slots.threads} thread(s) each" if slots.threads else ""))

    def train(self, jobs: Sequence[Job], out_dir: Path, started: Notify, finished: Notify) -> None:
        """Train ``jobs``, ``parallel`` at once (``started`` / ``finished`` called around each); a
        Ctrl-C stops every child at a checkpoint (their iterations are left ``interrupted``) and is
        re-raised."""
        folder = out_dir / CONFIG_DIR
        folder.mkdir(exist_ok=True)

        def start(job: Job, device: str | None) -> subprocess.Popen:
            path = folder / f"{job.run_dir.name}.yaml"
            atomic_write_text(path, yaml.safe_dump(to_jsonable(job.config.to_dict()), sort_keys=False))
            job.it.status, job.it.error = "running", ""
            job.it.device = device
            started(job)
            return start_child(job.run_dir, path, self.slots.sets(device), resume_with_config=True)

        def done(job: Job, code: int, seconds: float, interrupted: bool) -> None:
            job.it.train_seconds = (job.it.train_seconds or 0.0) + seconds
            end = child_outcome(job.run_dir, code, interrupted)
            job.it.status = end.status
            job.it.error = f"{end.error} (log: {job.run_dir / LOG_FILE})" if end.status == "failed" else ""
            finished(job)

        run_pool(list(jobs), self.slots, start, done)


__all__ = ["CONFIG_DIR", "Children", "InProcess", "Job"]
