"""The run directory: one schema, shared by the writer (the trainer) and the reader (the analyzer).

Layout (``schema_version`` 1; the README's "Run directory format" documents it for other tools)::

    RUN/
      config.yaml          fully resolved config + provenance (written once, atomically)
      metrics/
        part-000000.parquet  immutable parts, each written to a temp file then renamed
        part-000001.csv      the growing tail: append-only CSV with a header line
      events.ndjson        one JSON object per line, each with "step" and "kind"
      summary.json         written at the end (status, steps, tokens, duration)
      stats/               feature_freq.npy, input_sample.npy, input_dims.csv
      checkpoints/step_000001000/  sae.safetensors + config.json (+ optimizer/state)

Rules the reader applies (and other writers may rely on):
- Parts are read in name order. A later part supersedes every earlier row at or after its first
  step (this is how a resumed run replaces the rows logged after its checkpoint). Within a part a
  repeated step keeps the later row.
- A part that exists both as ``.parquet`` and ``.csv`` (a crash between the two) is read from the
  parquet file.
- A CSV line without its final newline (a write cut short by ``kill -9``) is dropped with a note.
- ``nan``/``inf`` in any float column are kept: they are signals, not missing values.

This module imports no torch: the analyzer uses it without the training extra.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import polars as pl
import yaml
from polars.exceptions import PanicException

SCHEMA_VERSION = 1

#: Per-step metric columns, in file order. ``step`` is an integer, everything else Float64.
METRIC_COLUMNS: tuple[str, ...] = (
    "step",
    "tokens",
    "loss",
    "mse",
    "l1",
    "l1_alpha",
    "lr",
    "l0",
    "l0_frac",
    "dead",
    "dead_frac",
    "explained_variance",
    "grad_norm",
    "elapsed_s",
)

#: Event kinds the trainer writes. Readers keep unknown kinds as they are.
EVENT_KINDS: tuple[str, ...] = (
    "start",
    "resample",
    "lr_change",
    "l1_change",
    "checkpoint",
    "nonfinite",
    "resume",
    "interrupt",
    "end",
)

#: Event kinds that are interventions a finding may coincide with.
INTERVENTION_KINDS: tuple[str, ...] = ("resample", "lr_change", "l1_change", "resume")

CONFIG_FILE = "config.yaml"
METRICS_DIR = "metrics"
EVENTS_FILE = "events.ndjson"
SUMMARY_FILE = "summary.json"
STATS_DIR = "stats"
CHECKPOINTS_DIR = "checkpoints"

_PART_RE = re.compile(r"^part-(\d+)\.(parquet|csv)$")
_METRIC_SCHEMA = {c: (pl.Int64 if c == "step" else pl.Float64) for c in METRIC_COLUMNS}


class RunLogError(Exception):
    """A run directory or log file that cannot be used. The message is one line naming the file."""


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask())  # mkstemp makes 0600; a report is meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """Make numpy scalars, paths, tuples and non-finite floats JSON-safe (non-finite -> string)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    if isinstance(value, Path):
        return str(value)
    return value


def finite_float(value: Any) -> float | None:
    """``value`` as a finite float (config values, parsed cells), else None; booleans are not numbers."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


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
        frame.write_parquet(buf, compression="zstd", statistics=True)
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

    def __enter__(self) -> "RunLogWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One logged event."""

    step: int
    """Training step the event happened at."""
    kind: str
    """One of ``EVENT_KINDS`` (unknown kinds from other writers are kept)."""
    data: dict[str, Any] = field(default_factory=dict)
    """The event's other fields (e.g. ``n`` and ``features`` for ``resample``)."""


@dataclass(frozen=True)
class CsvRead:
    """A tolerant CSV read."""

    frame: pl.DataFrame
    """The rows, with the columns found in the header."""
    dropped_partial_line: bool
    """True when a last line without newline (a cut-short write) was dropped."""


@dataclass
class RunData:
    """Everything the analyzer needs from one run, whatever wrote it."""

    path: Path
    """The run directory or metrics file that was read."""
    run_id: str
    """Run name: the directory name for our runs (``train_e01c6183``)."""
    config: dict[str, Any]
    """The run's config (may be empty for foreign logs)."""
    metrics: pl.DataFrame
    """Canonical columns present in the log: ``step`` (Int64) and Float64 metrics; sorted by step,
    one row per step. Metrics logged at other cadences hold null (not NaN) on steps they skipped."""
    events: list[Event] = field(default_factory=list)
    """Events in step order."""
    source: str = "sae-report"
    """What wrote the log: ``sae-report``, ``csv``, ``ndjson``, ``parquet``, ``wandb``, ..."""
    sampled: bool = False
    """True when the log is a sample of the run's history (e.g. a bucketed W&B UI export)."""
    notes: list[str] = field(default_factory=list)
    """Things the reader had to work around (dropped partial line, superseded rows, ...)."""
    summary: dict[str, Any] = field(default_factory=dict)
    """``summary.json`` when present (status, duration, ...)."""
    feature_freq: np.ndarray | None = None
    """Per-feature firing frequency at the end of training (fraction of tokens), when recorded."""
    input_dims: pl.DataFrame | None = None
    """Per-input-dimension statistics (``dim, mean, std, absmax, outlier``), when recorded."""
    input_sample: np.ndarray | None = None
    """A sample of input activations ``[n, d_in]``, when recorded."""


def read_metrics_csv(path: Path) -> CsvRead:
    """Read one metrics CSV, dropping a final line cut short by a crash.

    Known columns are parsed as Float64 (``step`` as Int64) so ``nan``/``inf`` stay numbers.
    """
    path = Path(path)
    raw = path.read_bytes()
    dropped = False
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n")
        raw = raw[: cut + 1] if cut >= 0 else b""
        dropped = True
    if not raw.strip():
        raise RunLogError(f"{path}: empty metrics file (no header line)")
    header = raw.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
    overrides = {c: (pl.Int64 if c == "step" else pl.Float64) for c in header if c in _METRIC_SCHEMA}
    try:
        frame = pl.read_csv(io.BytesIO(raw), schema_overrides=overrides, infer_schema_length=0 if not overrides else 100)
    except (Exception, PanicException) as exc:  # polars raises several types; the message is what matters
        raise RunLogError(f"{path}: not a readable metrics CSV ({_first_line(exc)})") from None
    return CsvRead(frame=frame, dropped_partial_line=dropped)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _metric_parts(metrics_dir: Path) -> list[Path]:
    """Part files in write order; a part present as both parquet and csv is read as parquet."""
    by_index: dict[int, Path] = {}
    for p in metrics_dir.iterdir():
        m = _PART_RE.match(p.name)
        if not m:
            continue
        idx = int(m.group(1))
        if idx not in by_index or p.suffix == ".parquet":
            by_index[idx] = p
    return [by_index[i] for i in sorted(by_index)]


def read_metrics_dir(metrics_dir: Path, notes: list[str] | None = None) -> pl.DataFrame:
    """Read every part of ``metrics/`` into one frame, sorted by step, one row per step."""
    metrics_dir = Path(metrics_dir)
    notes = notes if notes is not None else []
    for attempt in range(3):
        try:
            frames = _read_parts(metrics_dir, notes)
            break
        except FileNotFoundError:
            # a live writer rolled a tail CSV into parquet between listing and reading: list again
            if attempt == 2:
                raise RunLogError(f"{metrics_dir}: parts keep changing while being read") from None
    if not frames:
        raise RunLogError(f"{metrics_dir}: no metrics parts (part-NNNNNN.parquet or .csv)")
    frame = pl.concat(frames, how="diagonal_relaxed")
    n_before = frame.height
    frame = supersede_and_dedup(frame)
    if frame.height < n_before:
        notes.append(f"{n_before - frame.height} rows superseded by later writes (resume or repeated steps)")
    return frame


def _read_parts(metrics_dir: Path, notes: list[str]) -> list[pl.DataFrame]:
    frames: list[pl.DataFrame] = []
    parts = _metric_parts(metrics_dir)
    for i, part in enumerate(parts):
        if part.suffix == ".parquet":
            try:
                frame = _read_parquet_quietly(part)
            except FileNotFoundError:
                raise
            except (Exception, PanicException) as exc:  # a corrupt file can make polars panic
                raise RunLogError(f"{part}: not a readable parquet part ({_first_line(exc)})") from None
        else:
            if len(parts) > 1 and _no_complete_line(part):
                continue  # a tail just opened by a live writer (or cut before its header): no rows yet
            read = read_metrics_csv(part)
            frame = read.frame
            if read.dropped_partial_line:
                notes.append(f"{part.name}: dropped a last line cut short by an interrupted write")
        if "step" not in frame.columns:
            raise RunLogError(f"{part}: no 'step' column")
        cols = [c for c in METRIC_COLUMNS if c in frame.columns]
        frame = frame.select([pl.col(c).cast(_METRIC_SCHEMA[c]) for c in cols])
        frames.append(frame.with_columns(pl.lit(i, dtype=pl.Int32).alias("_part"), pl.int_range(pl.len()).alias("_row")))
    return frames


def _no_complete_line(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return b"\n" not in head or not head.split(b"\n", 1)[1].strip()


def _read_parquet_quietly(path: Path) -> pl.DataFrame:
    """``pl.read_parquet`` after a footer check (through pyarrow, when installed): a footer whose
    column chunks point past the end of the file makes polars panic and print a Rust backtrace on
    stderr; the check turns that into a plain ValueError first. Costs one footer read."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return pl.read_parquet(path)
    size = Path(path).stat().st_size
    meta = pq.ParquetFile(path).metadata
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            start = min(o for o in (col.dictionary_page_offset, col.data_page_offset) if o is not None)
            if start < 0 or start + col.total_compressed_size > size:
                raise ValueError(f"column chunk {c} of row group {g} lies outside the file (truncated or corrupt)")
    return pl.read_parquet(path)


def supersede_and_dedup(frame: pl.DataFrame) -> pl.DataFrame:
    """Apply the reader rules to a frame with ``_part`` and ``_row`` columns; drop them after.

    A row of part i survives only if its step is below the first step of every later part; among
    rows with the same step the last written wins. Result sorted by step.
    """
    steps = frame.get_column("step")
    if steps.null_count() == 0 and (frame.height < 2 or bool((steps.diff().drop_nulls() > 0).all())):
        # Fast path (the usual log): steps strictly increasing in write order, so nothing is
        # superseded or repeated. One O(n) check instead of a join, a sort and a unique.
        return frame.drop(["_part", "_row"])
    firsts = frame.group_by("_part").agg(pl.col("step").min().alias("_first")).sort("_part", descending=True)
    # suffix minimum of later parts' first steps = cutoff for this part
    cutoff = firsts.with_columns(pl.col("_first").cum_min().shift(1).alias("_cutoff")).select("_part", "_cutoff")
    frame = frame.join(cutoff, on="_part", how="left")
    frame = frame.filter(pl.col("_cutoff").is_null() | (pl.col("step") < pl.col("_cutoff")))
    frame = frame.sort(["step", "_part", "_row"]).unique(subset="step", keep="last", maintain_order=True)
    return frame.drop(["_part", "_row", "_cutoff"])


def read_events(path: Path, notes: list[str] | None = None) -> list[Event]:
    """Read ``events.ndjson``. Bad lines are skipped with a note; events logged before a
    ``resume`` at step S with step > S are dropped (that stretch was re-run)."""
    path = Path(path)
    notes = notes if notes is not None else []
    if not path.exists():
        return []
    raw = path.read_bytes()
    events: list[Event] = []
    bad = 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            step = int(rec.pop("step"))
            kind = str(rec.pop("kind"))
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError):
            bad += 1
            continue
        if kind == "resume":
            events = [e for e in events if e.step <= step]
        events.append(Event(step=step, kind=kind, data=rec))
    if bad:
        notes.append(f"{path.name}: skipped {bad} unreadable line(s)")
    events.sort(key=lambda e: e.step)
    return events


def read_config(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise RunLogError(f"{path}: not a readable config ({_first_line(exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RunLogError(f"{path}: config is not a mapping")
    return data


def is_run_dir(path: Path) -> bool:
    """True for a directory in our format (a ``metrics/`` folder with parts)."""
    path = Path(path)
    return path.is_dir() and (path / METRICS_DIR).is_dir()


def read_run(path: Path) -> RunData:
    """Read a run directory written by ``RunLogWriter`` (or any tool following the format)."""
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path}: no such run directory")
    if not is_run_dir(path):
        raise RunLogError(f"{path}: not a run directory (no {METRICS_DIR}/ folder)")
    notes: list[str] = []
    config = read_config(path / CONFIG_FILE) if (path / CONFIG_FILE).exists() else {}
    if not config:
        notes.append(f"{CONFIG_FILE} missing: targets and intervals come from flags only")
    version = config.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise RunLogError(f"{path / CONFIG_FILE}: schema_version {version} is newer than this sae-report reads ({SCHEMA_VERSION})")
    metrics = read_metrics_dir(path / METRICS_DIR, notes)
    events = read_events(path / EVENTS_FILE, notes)
    summary: dict[str, Any] = {}
    if (path / SUMMARY_FILE).exists():
        try:
            summary = json.loads((path / SUMMARY_FILE).read_text())
        except ValueError:
            notes.append(f"{SUMMARY_FILE}: unreadable, ignored")
    stats = path / STATS_DIR
    feature_freq = _load_npy(stats / "feature_freq.npy", notes)
    input_sample = _load_npy(stats / "input_sample.npy", notes)
    input_dims = None
    if (stats / "input_dims.csv").exists():
        try:
            input_dims = pl.read_csv(stats / "input_dims.csv")
        except (Exception, PanicException):
            notes.append("stats/input_dims.csv: unreadable, ignored")
    # A run written by `sae-report import` keeps where its data came from (ingest/convert.py).
    imported = config.get("imported_from") if isinstance(config.get("imported_from"), dict) else {}
    notes[:0] = [f"imported from {imported.get('source')}: {n}" for n in imported.get("notes") or []]
    return RunData(
        path=path,
        run_id=str(config.get("run_id") or path.resolve().name),
        config=config,
        metrics=metrics,
        events=events,
        source="sae-report",
        sampled=bool(imported.get("sampled", False)),
        notes=notes,
        summary=summary,
        feature_freq=feature_freq,
        input_dims=input_dims,
        input_sample=input_sample,
    )


def _load_npy(path: Path, notes: list[str]) -> np.ndarray | None:
    if not path.exists():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError):
        notes.append(f"{path.parent.name}/{path.name}: unreadable, ignored")
        return None
