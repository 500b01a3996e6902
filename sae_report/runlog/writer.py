"""``RunLogWriter``: the append-only writer of a run directory (the trainer's side of the schema)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import polars as pl
import yaml

from .reader import read_config, read_events, read_metrics_csv, read_metrics_dir
from .safeio import remove_entry
from .schema import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVENTS_FILE,
    METRIC_COLUMNS,
    METRICS_DIR,
    SCHEMA_VERSION,
    STATS_DIR,
    SUMMARY_FILE,
    _METRIC_SCHEMA,
    _PART_RE,
    atomic_write_bytes,
    atomic_write_text,
    to_jsonable,
)


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


class RunLogWriter:
    """Append-only writer for a run directory.

    ``log_metrics`` takes a columnar batch (the trainer copies its on-device metric buffer to the
    host once per flush) and appends it to the tail CSV, flushed to the OS at once so a killed
    process loses nothing already handed over. Every ``part_rows`` rows the tail is rewritten as
    an immutable parquet part (temp file + rename) and a new tail begins.
    """

    def __init__(self, run_dir: Path, *, part_rows: int = 100_000) -> None:
        self.run_dir = Path(run_dir)
        self.metrics_dir = self.run_dir / METRICS_DIR
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        self.part_rows = int(part_rows)
        existing = [int(m.group(1)) for p in self.metrics_dir.iterdir() if (m := _PART_RE.match(p.name))]
        # A resumed run never appends to an old part: it starts the next one, so the reader's
        # "later part supersedes" rule replaces the rows logged after the checkpoint.
        self._part = max(existing) + 1 if existing else 0
        self._tail_rows = 0
        self._tail: io.BufferedWriter | None = None
        self._events = open(self.run_dir / EVENTS_FILE, "ab")

    @property
    def tail_path(self) -> Path:
        return self.metrics_dir / f"part-{self._part:06d}.csv"

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write ``config.yaml`` atomically (``schema_version`` is added when missing)."""
        data = {"schema_version": SCHEMA_VERSION, **to_jsonable(dict(config))}
        atomic_write_text(self.run_dir / CONFIG_FILE, yaml.safe_dump(data, sort_keys=False))

    def log_metrics(self, columns: Mapping[str, Iterable[Any]]) -> None:
        """Append rows given column-wise. Unknown column names are an error; missing ones are null."""
        unknown = set(columns) - set(METRIC_COLUMNS)
        if unknown:
            raise ValueError(f"unknown metric columns: {sorted(unknown)}")
        if "step" not in columns:
            raise ValueError("metrics need a 'step' column")
        steps = np.asarray(columns["step"], dtype=np.int64)
        n = len(steps)
        if n == 0:
            return
        data: dict[str, Any] = {}
        for name in METRIC_COLUMNS:
            if name == "step":
                data[name] = steps
            elif name in columns:
                data[name] = np.asarray(columns[name], dtype=np.float64).reshape(n)
            else:
                data[name] = pl.Series(name, [None] * n, dtype=pl.Float64)  # not logged: null, never NaN
        frame = pl.DataFrame(data, schema=_METRIC_SCHEMA)
        if self._tail is None:
            new = not self.tail_path.exists() or self.tail_path.stat().st_size == 0
            self._tail = open(self.tail_path, "ab")
            if new:
                self._tail.write((",".join(METRIC_COLUMNS) + "\n").encode())
        buf = io.BytesIO()
        frame.write_csv(buf, include_header=False, float_precision=None)
        self._tail.write(buf.getvalue())
        self._tail.flush()
        self._tail_rows += n
        if self._tail_rows >= self.part_rows:
            self.roll()

    def roll(self) -> None:
        """Turn the current tail CSV into an immutable parquet part and start a new tail."""
        if self._tail is None:
            return
        self._tail.close()
        self._tail = None
        csv_path = self.tail_path
        frame = read_metrics_csv(csv_path).frame
        buf = io.BytesIO()
        # lz4: half the read time of zstd for a quarter more disk (a 10M-row run reads in ~1 s)
        frame.write_parquet(buf, compression="lz4", statistics=True)
        atomic_write_bytes(csv_path.with_suffix(".parquet"), buf.getvalue())
        csv_path.unlink()  # a crash before this line leaves both; the reader prefers the parquet
        self._part += 1
        self._tail_rows = 0

    def log_event(self, kind: str, step: int, **fields: Any) -> None:
        """Append one event line and flush it (events are rare; each one matters)."""
        record = {"step": int(step), "kind": str(kind), **to_jsonable(fields)}
        self._events.write((json.dumps(record, allow_nan=False) + "\n").encode())
        self._events.flush()

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically."""
        text = json.dumps(to_jsonable(dict(summary)), indent=2, allow_nan=False)
        atomic_write_text(self.run_dir / SUMMARY_FILE, text + "\n")

    def close(self) -> None:
        """Roll the tail into a part and close the event log. Safe to call twice."""
        self.roll()
        if not self._events.closed:
            self._events.close()

    def abandon(self) -> None:
        """Close the files as they are, without rolling the tail (after a write error: what was
        handed over is already flushed, and a full disk would fail the roll too)."""
        for fh in (self._tail, self._events):
            if fh is not None and not fh.closed:
                try:
                    fh.close()
                except OSError:
                    pass
        self._tail = None

    def __enter__(self) -> "RunLogWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Housekeeping: temp files a killed writer left, and a summary rebuilt from the log
# --------------------------------------------------------------------------------------------

#: Our temp names (``atomic_write_bytes``: ``.NAME.<8 random>.tmp``; checkpoints: ``.step_N.tmp``),
#: per folder of a run directory (or campaign folder). Nothing else is ever matched.
_TEMP_NAMES: dict[str, re.Pattern[str]] = {
    ".": re.compile(r"^\.[^/]+\.[a-z0-9_]{8}\.tmp$"),
    METRICS_DIR: re.compile(r"^\.part-\d+\.(parquet|csv)\.[a-z0-9_]{8}\.tmp$"),
    STATS_DIR: re.compile(r"^\.[^/]+\.[a-z0-9_]{8}\.tmp$"),
    CHECKPOINTS_DIR: re.compile(r"^\.(step_\d+|final)\.tmp$"),
}


def sweep_temp_files(folder: Path) -> list[Path]:
    """Remove the temp files and folders of our own naming that a killed writer (``kill -9``
    between a temp file and its rename) left in ``folder``, its ``metrics/``, ``stats/`` and
    ``checkpoints/``. Call it only while holding the folder's lock (then no writer is mid-write);
    returns what was removed. ``report/`` (the analyzer's) is never touched."""
    folder = Path(folder)
    removed: list[Path] = []
    for sub, pattern in _TEMP_NAMES.items():
        where = folder / sub
        try:
            entries = list(where.iterdir()) if where.is_dir() else []
        except OSError:
            continue
        for p in entries:
            if not pattern.match(p.name):
                continue
            if remove_entry(p):
                removed.append(p)
    return removed


FINAL_KEYS = ("loss", "mse", "l1", "l0", "l0_frac", "dead", "dead_frac", "explained_variance")


def newest_checkpoint(run_dir: Path) -> tuple[Path | None, int]:
    """The newest ``checkpoints/step_*`` directory holding weights, and its step (None, 0 without one)."""
    best: tuple[Path | None, int] = (None, 0)
    root = Path(run_dir) / CHECKPOINTS_DIR
    try:
        entries = list(root.iterdir()) if root.is_dir() else []
    except OSError:
        return best
    for p in entries:
        m = re.fullmatch(r"step_(\d+)", p.name)
        if m and (p / "sae.safetensors").is_file() and int(m.group(1)) >= best[1]:
            best = (p, int(m.group(1)))
    return best


def summary_from_log(run_dir: Path, *, status: str | None = None, steps: int | None = None) -> dict[str, Any]:
    """``summary.json`` rebuilt from what the run logged (metrics, events, checkpoints, config),
    for a run killed between its last checkpoint and its summary. The fields are the trainer's
    (``feature_recovery`` is None: it needs the weights and the data), plus ``rebuilt_from_log:
    true``. ``status`` defaults to the ``end`` event at the last step, else ``diverged`` after a
    ``nonfinite`` event, ``completed`` at ``total_steps``, else ``interrupted``. Reads only;
    raises ``RunLogError`` like the reader."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    config = read_config(run_dir / CONFIG_FILE) if (run_dir / CONFIG_FILE).is_file() else {}
    metrics = read_metrics_dir(run_dir / METRICS_DIR, notes)
    events = read_events(run_dir / EVENTS_FILE, notes)
    last = metrics.tail(1).row(0, named=True) if metrics.height else {}
    ckpt, ckpt_step = newest_checkpoint(run_dir)
    step = int(steps) if steps is not None else max(int(last.get("step") or 0), ckpt_step)
    nonfinite = [e.step for e in events if e.kind == "nonfinite"]
    total = config.get("total_steps")
    total = total if isinstance(total, int) and not isinstance(total, bool) else None
    if status is None:
        ends = [e for e in events if e.kind == "end" and e.step == step]
        if ends and isinstance(ends[-1].data.get("status"), str):
            status = str(ends[-1].data["status"])
        elif nonfinite:
            status = "diverged"
        else:
            status = "completed" if total is not None and step >= total else "interrupted"
    batch = config.get("batch_size")
    tokens: float | None = step * batch if isinstance(batch, int) and not isinstance(batch, bool) else last.get("tokens")
    elapsed = last.get("elapsed_s")
    resumes = [e.step for e in events if e.kind == "resume"]
    return {
        "status": status, "run_id": str(config.get("run_id") or run_dir.resolve().name), "steps": step,
        "total_steps": total, "tokens": int(tokens) if tokens is not None else None,
        "elapsed_s": round(float(elapsed), 3) if elapsed is not None else None,
        "tokens_per_s": round(tokens / elapsed, 1) if tokens and elapsed else None,
        "device": config.get("device"),
        "final": {k: last.get(k) for k in FINAL_KEYS} if last else None,
        "feature_recovery": None,
        "nonfinite_step": nonfinite[0] if nonfinite else None,
        "checkpoint": str(ckpt.relative_to(run_dir)) if ckpt is not None else None,
        "resumed_from_step": resumes[-1] if resumes else None,
        "rebuilt_from_log": True,
    }
