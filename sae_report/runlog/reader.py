"""Reading a run directory back: tolerant of crashes, resumes and live writers (the analyzer's side)."""

from __future__ import annotations

import io
import json
import mmap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

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


def _csv_snapshot(path: Path) -> tuple[bytes, bool]:
    """The bytes of a metrics CSV up to its last complete line (a live writer may be appending),
    and whether a last line cut short was left out."""
    raw = Path(path).read_bytes()
    dropped = False
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n")
        raw = raw[: cut + 1] if cut >= 0 else b""
        dropped = True
    if not raw.strip():
        raise RunLogError(f"{path}: empty metrics file (no header line)")
    return raw, dropped


def read_metrics_csv(path: Path) -> CsvRead:
    """Read one metrics CSV, dropping a final line cut short by a crash.

    Known columns are parsed as Float64 (``step`` as Int64) so ``nan``/``inf`` stay numbers.
    """
    path = Path(path)
    raw, dropped = _csv_snapshot(path)
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


# --------------------------------------------------------------------------------------------
# Contiguous columns
# --------------------------------------------------------------------------------------------

#: Name of the row-number column added to scans (no real column is called this).
ROW_INDEX = "\x00row"
#: Suffix of the Boolean column ``split_nulls`` adds beside a column.
NULLS = "\x00null"
#: numpy dtype of each metric column.
_NUMPY = {c: (np.int64 if c == "step" else np.float64) for c in METRIC_COLUMNS}


def _anonymous(n: int, dtype: Any) -> np.ndarray:
    """An array of ``n`` items in its own anonymous memory map. Pages cost memory only once
    written (a capacity may be an upper bound), read as zero until then, and go back to the
    system as soon as the last array using them is dropped: no allocator keeps them, and no
    transparent-huge-page compaction runs on first touch (which numpy's large allocations ask
    for, and which makes first touch several times slower on this kind of VM)."""
    dt = np.dtype(dtype)
    return np.frombuffer(mmap.mmap(-1, max(1, n * dt.itemsize)), dtype=dt, count=n)


def split_nulls(columns: Mapping[str, pl.Expr]) -> list[pl.Expr]:
    """Each column as its values with nulls filled (0) and a Boolean ``name + NULLS`` column:
    what ``ColumnBuffers.put`` copies with no polars call per batch (a scan computes both as it
    reads)."""
    out: list[pl.Expr] = []
    for name, expr in columns.items():
        out += [expr.fill_null(0).alias(name), expr.is_null().alias(name + NULLS)]
    return out


class ColumnBuffers:
    """Columns built batch by batch into one contiguous buffer each, handed to polars without a
    copy.

    polars readers return a column in many chunks (one per file, row group or batch), and
    ``rechunk`` copies every column while the chunks are still held (twice the data at the peak,
    and the allocator keeps the freed chunks for seconds); the analyzer turns columns into numpy
    arrays, which is free only for a single chunk. Here each batch is copied once into its place.
    Nulls are kept in a byte mask, only for columns that have one, and become the validity
    bitmap of the final column (through pyarrow, also without copying the values)."""

    def __init__(self, dtypes: Mapping[str, Any], capacity: int) -> None:
        self.dtypes = {name: np.dtype(dt) for name, dt in dtypes.items()}
        self.capacity = max(0, int(capacity))
        self.values: dict[str, np.ndarray] = {}
        self.nulls: dict[str, np.ndarray] = {}
        self.rows = 0
        """One past the last row written."""

    def _reserve(self, end: int) -> None:
        if end <= self.capacity:
            return
        cap = max(end, self.capacity + self.capacity // 2, 1024)  # only when a source outgrew its count
        for store in (self.values, self.nulls):
            for name, arr in list(store.items()):
                grown = _anonymous(cap, arr.dtype)
                grown[: self.rows] = arr[: self.rows]
                store[name] = grown
        self.capacity = cap

    def _mask(self, name: str) -> np.ndarray:
        mask = self.nulls.get(name)
        if mask is None:
            mask = self.nulls[name] = _anonymous(self.capacity, np.bool_)
        return mask

    def declare(self, names: Iterable[str]) -> None:
        """Make sure these columns exist (null in the rows written before they first appear)."""
        for name in names:
            if name in self.values:
                continue
            self.values[name] = _anonymous(self.capacity, self.dtypes[name])
            if self.rows:
                self._mask(name)[: self.rows] = True

    def put(self, frame: pl.DataFrame, at: int | np.ndarray) -> None:
        """Write ``frame``'s rows from row ``at`` on (or at one index per row). Its declared
        columns must already have their declared dtype; other columns are ignored; declared
        columns it lacks are null in these rows. A column may come split by ``split_nulls``
        (nulls filled, plus a Boolean ``name + NULLS`` column), which costs no polars call here."""
        n = frame.height
        if isinstance(at, np.ndarray):
            where: slice | np.ndarray = at
            end = int(at.max()) + 1 if n else 0
        else:
            where, end = slice(at, at + n), at + n
        if not n:
            return
        self._reserve(end)
        names = set(frame.columns)
        present = [c for c in frame.columns if c in self.dtypes]
        self.declare(present)
        for name in present:
            s = frame.get_column(name)
            if name + NULLS in names:
                self.values[name][where] = s.to_numpy()
                isnull = frame.get_column(name + NULLS).to_numpy()
                if isnull.any():
                    self._mask(name)[where] = isnull
                elif name in self.nulls:
                    self.nulls[name][where] = False
                continue
            nulls = s.null_count()
            if nulls < n:
                self.values[name][where] = (s.fill_null(0) if nulls else s).to_numpy()
            if nulls:
                self._mask(name)[where] = True if nulls == n else s.is_null().to_numpy()
            elif name in self.nulls:
                self.nulls[name][where] = False
        for name in self.values.keys() - set(present):
            self._mask(name)[where] = True
        self.rows = max(self.rows, end)

    def take(self, order: np.ndarray) -> None:
        """Keep only rows ``order`` (indices of rows written), in that order."""
        k = len(order)
        increasing = k < 2 or bool(np.all(order[1:] > order[:-1]))
        block = 1 << 20
        for store in (self.values, self.nulls):
            for name, arr in list(store.items()):
                if increasing:
                    # in place: row j comes from order[j] >= j, never from a row already overwritten
                    for a in range(0, k, block):
                        b = min(k, a + block)
                        arr[a:b] = arr[order[a:b]]
                else:
                    moved = _anonymous(self.capacity, arr.dtype)
                    moved[:k] = arr[order]
                    store[name] = moved
        self.rows = k

    def frame(self, names: Iterable[str]) -> pl.DataFrame:
        """The columns ``names`` (those that exist) as a frame of the rows written; the buffers
        then belong to the frame."""
        n = self.rows
        cols = [_zero_copy_series(name, self.values[name][:n], self.nulls.get(name))
                for name in names if name in self.values]
        self.values, self.nulls = {}, {}
        return pl.DataFrame(cols) if cols else pl.DataFrame()


def _zero_copy_series(name: str, values: np.ndarray, mask: np.ndarray | None) -> pl.Series:
    n = len(values)
    k = int(np.count_nonzero(mask[:n])) if mask is not None else 0
    if not k:
        return pl.Series(name, values)  # shares the buffer
    dtype = pl.Int64 if values.dtype.kind == "i" else pl.Float64
    if k == n:
        return pl.repeat(None, n, dtype=dtype, eager=True).alias(name)
    try:
        import pyarrow as pa
    except ImportError:  # pyarrow is a dependency; this only keeps a broken install working
        return pl.select(pl.when(pl.Series(mask[:n])).then(None).otherwise(pl.Series(values))).to_series().alias(name)
    validity = np.packbits(~mask[:n], bitorder="little")
    arr = pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), n, [pa.py_buffer(validity), pa.py_buffer(values)],
                                null_count=k)
    return pl.Series(name, arr)  # shares the values buffer; the validity bitmap is n/8 bytes


#: Sources up to this many rows are collected at once; longer ones batch by batch (less in flight).
EAGER_ROWS = 1_000_000


def fill_from_scan(buffers: ColumnBuffers, frame: pl.LazyFrame, at: int, rows: int,
                   convert: Callable[[pl.DataFrame], pl.DataFrame] | None = None) -> int:
    """Run ``frame`` (a scan with its ``ROW_INDEX`` column, numbered by the scan itself) into
    ``buffers`` from row ``at``; returns the rows written.

    Up to ``EAGER_ROWS`` rows (about ``rows``) it is collected at once and each row lands where
    its row number says, whatever order an engine delivers them in. Longer sources go batch by
    batch (``collect_batches(maintain_order=True)``, which keeps the source's order), without
    the row numbers, which would make the streaming engine hold far more in flight. ``convert``
    is applied to each batch."""
    if rows > EAGER_ROWS:
        written = 0
        for batch in frame.drop(ROW_INDEX).collect_batches(maintain_order=True):
            if batch.height:
                buffers.put(convert(batch) if convert is not None else batch, at + written)
                written += batch.height
        return written
    batch = frame.collect()
    if not batch.height:
        return 0
    if convert is not None:
        batch = convert(batch)
    index = batch.get_column(ROW_INDEX).to_numpy()
    first = int(index[0])
    if index[-1] - first == len(index) - 1 and (len(index) < 3 or bool(np.all(np.diff(index) == 1))):
        buffers.put(batch, at + first)
    else:
        buffers.put(batch, index.astype(np.int64) + at)
    return batch.height


# --------------------------------------------------------------------------------------------
# Metrics parts
# --------------------------------------------------------------------------------------------


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
    """Read every part of ``metrics/`` into one frame, sorted by step, one row per step.

    Each column is one contiguous buffer (no chunks): the parts are copied once into place, the
    README's rules (a later part supersedes rows at or after its first step; the last row of a
    step wins within a part) are applied on the step column alone, and only when the steps are
    not already strictly increasing. Rows without a step are dropped with a note."""
    metrics_dir = Path(metrics_dir)
    notes = notes if notes is not None else []
    for attempt in range(3):
        local: list[str] = []
        try:
            frame = _read_parts(metrics_dir, local)
            break
        except FileNotFoundError:
            # a live writer rolled a tail CSV into parquet between listing and reading: list again
            if attempt == 2:
                raise RunLogError(f"{metrics_dir}: parts keep changing while being read") from None
    notes.extend(local)
    return frame


@dataclass
class _Part:
    path: Path
    rows: int
    """Rows it holds (parquet: from its footer) or at most holds (csv: its line count)."""
    columns: list[str]
    """Its metric columns, in ``METRIC_COLUMNS`` order."""
    raw: bytes | None = None
    """CSV: the bytes read, up to the last complete line."""


def _plan_parts(metrics_dir: Path, notes: list[str]) -> list[_Part]:
    plans: list[_Part] = []
    parts = _metric_parts(metrics_dir)
    for part in parts:
        if part.suffix == ".parquet":
            try:
                rows, names = parquet_footer(part)
            except FileNotFoundError:
                raise
            except (Exception, PanicException) as exc:  # a corrupt file can make polars panic
                raise RunLogError(f"{part}: not a readable parquet part ({_first_line(exc)})") from None
        else:
            if len(parts) > 1 and _no_complete_line(part):
                continue  # a tail just opened by a live writer (or cut before its header): no rows yet
            raw, dropped = _csv_snapshot(part)
            if dropped:
                notes.append(f"{part.name}: dropped a last line cut short by an interrupted write")
            try:
                names = pl.scan_csv(raw, infer_schema=False).collect_schema().names()
            except (Exception, PanicException) as exc:
                raise RunLogError(f"{part}: not a readable metrics CSV ({_first_line(exc)})") from None
            rows = raw.count(b"\n")
        if "step" not in names:
            raise RunLogError(f"{part}: no 'step' column")
        plans.append(_Part(part, rows, [c for c in METRIC_COLUMNS if c in names],
                           None if part.suffix == ".parquet" else raw))
    return plans


def _read_parts(metrics_dir: Path, notes: list[str]) -> pl.DataFrame:
    plans = _plan_parts(metrics_dir, notes)
    if not plans:
        raise RunLogError(f"{metrics_dir}: no metrics parts (part-NNNNNN.parquet or .csv)")
    buffers = ColumnBuffers(_NUMPY, sum(p.rows for p in plans))
    ranges: list[tuple[int, int]] = []  # (first row, rows) of each part
    pos = 0
    for plan in plans:
        buffers.declare(plan.columns)
        casts = [pl.col(c).cast(_METRIC_SCHEMA[c]) for c in plan.columns]
        if plan.raw is None:
            lazy = pl.scan_parquet(plan.path, row_index_name=ROW_INDEX).select(ROW_INDEX, *casts)
            what = "parquet part"
        else:
            lazy = pl.scan_csv(plan.raw, schema_overrides={c: _METRIC_SCHEMA[c] for c in plan.columns},
                               infer_schema=False, row_index_name=ROW_INDEX).select(ROW_INDEX, *casts)
            what = "metrics CSV"
        try:
            got = fill_from_scan(buffers, lazy, pos, plan.rows)
        except FileNotFoundError:
            raise
        except (Exception, PanicException) as exc:  # polars raises several types (a corrupt file can panic)
            raise RunLogError(f"{plan.path}: not a readable {what} ({_first_line(exc)})") from None
        if plan.raw is None and got != plan.rows:
            raise RunLogError(f"{plan.path}: not a readable parquet part ({got} rows where its footer says {plan.rows})")
        ranges.append((pos, got))
        pos += got
    buffers.rows = pos
    _apply_run_rules(buffers, ranges, notes)
    frame = buffers.frame(METRIC_COLUMNS)
    return frame.with_columns(pl.col("step").set_sorted())


def _apply_run_rules(buffers: ColumnBuffers, ranges: list[tuple[int, int]], notes: list[str]) -> None:
    """Rows without a step go (with a note); a part's rows at or after the first step of any
    later part go; among rows of one step the last written stays; rows end sorted by step."""
    n = buffers.rows
    if not n:
        return
    step = buffers.values["step"][:n]
    mask = buffers.nulls.get("step")
    missing = mask[:n] if mask is not None and mask[:n].any() else None
    if missing is None and (n < 2 or bool(np.all(step[1:] > step[:-1]))):
        return  # the usual log: steps strictly increasing in write order, nothing to drop
    valid = ~missing if missing is not None else np.ones(n, dtype=bool)
    n_valid = int(np.count_nonzero(valid))
    firsts: list[int | None] = []
    for start, rows in ranges:
        seg = step[start:start + rows][valid[start:start + rows]]
        firsts.append(int(seg.min()) if len(seg) else None)
    keep = valid  # (valid is not needed after this)
    cutoff: int | None = None
    for (start, rows), first in zip(reversed(ranges), reversed(firsts)):
        if cutoff is not None:
            keep[start:start + rows] &= step[start:start + rows] < cutoff
        if first is not None:
            cutoff = first if cutoff is None else min(cutoff, first)
    order = np.flatnonzero(keep)
    s = step[order]
    if len(s) > 1 and not bool(np.all(s[1:] > s[:-1])):
        by_step = np.argsort(s, kind="stable")  # ties stay in write order
        order, s = order[by_step], s[by_step]
        last = np.ones(len(s), dtype=bool)
        last[:-1] = s[1:] != s[:-1]  # the last written row of each step
        order = order[last]
    buffers.take(order)
    if missing is not None:
        notes.append(f"{n - n_valid} row(s) without a step dropped")
    if n_valid > len(order):
        notes.append(f"{n_valid - len(order)} rows superseded by later writes (resume or repeated steps)")


def _no_complete_line(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return b"\n" not in head or not head.split(b"\n", 1)[1].strip()


def parquet_footer(path: Path) -> tuple[int, list[str]]:
    """Rows and column names of a parquet file, from its footer, after checking
    that no column chunk points past the end of the file (that makes polars panic and print a Rust
    backtrace on stderr; the check turns it into a plain ValueError first)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        schema = pl.read_parquet_schema(path)
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
        return int(rows), list(schema.names())
    size = Path(path).stat().st_size
    pf = pq.ParquetFile(path)
    meta = pf.metadata
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            start = min(o for o in (col.dictionary_page_offset, col.data_page_offset) if o is not None)
            if start < 0 or start + col.total_compressed_size > size:
                raise ValueError(f"column chunk {c} of row group {g} lies outside the file (truncated or corrupt)")
    return int(meta.num_rows), list(pf.schema_arrow.names)


def read_parquet_checked(path: Path) -> pl.DataFrame:
    """``pl.read_parquet`` after the footer check of ``parquet_footer``."""
    parquet_footer(path)
    return pl.read_parquet(path)


def supersede_and_dedup(frame: pl.DataFrame) -> pl.DataFrame:
    """Apply the reader rules to a frame with ``_part`` and ``_row`` columns; drop them after.

    A row of part i survives only if its step is below the first step of every later part; among
    rows with the same step the last written wins. Result sorted by step. (``read_metrics_dir``
    applies the same rules on its buffers without building such a frame.)
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
