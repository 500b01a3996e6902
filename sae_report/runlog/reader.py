"""Reading a run directory back: tolerant of crashes, resumes and live writers (the analyzer's side)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml
from polars.exceptions import PanicException

from .schema import (
    CONFIG_FILE,
    EVENTS_FILE,
    METRIC_COLUMNS,
    METRICS_DIR,
    SCHEMA_VERSION,
    STATS_DIR,
    SUMMARY_FILE,
    _METRIC_SCHEMA,
    _PART_RE,
    RunLogError,
)


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
                frame = read_parquet_checked(part)
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


def read_parquet_checked(path: Path) -> pl.DataFrame:
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
