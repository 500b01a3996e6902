"""Reading a run directory back: tolerant of crashes, resumes and live writers (the analyzer's side)."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
from polars.exceptions import PanicException

from .safeio import (
    MAX_EVENTS_BYTES,
    check_regular,
    clean_text,
    first_line,
    load_config_file,
    open_regular,
    read_regular,
    too_large,
)
from .columns import NUMPY_DTYPES, ROW_INDEX, ColumnBuffers, dtype_words, fill_from_scan
from .extras import in_progress_note, load_npy, read_feature_density, read_input_dims, read_summary
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
    feature_density: dict[int, np.ndarray] = field(default_factory=dict)
    """Per-feature firing frequency (fraction of tokens) over training, by step
    (``stats/feature_density/step_NNNNNNNN.npy``): at most ``DENSITY_SNAPSHOTS`` of them, evenly
    spread over the recorded steps, the last one always included."""


def _csv_snapshot(path: Path) -> tuple[bytes, bool]:
    """The bytes of a metrics CSV up to its last complete line (a live writer may be appending),
    and whether a last line cut short was left out."""
    raw = read_regular(path)  # a regular file only: never a FIFO, /dev/zero or a directory
    dropped = False
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n")
        raw = raw[: cut + 1] if cut >= 0 else b""
        dropped = True
    if not raw or raw.isspace():  # (no copy, unlike strip())
        raise RunLogError(f"{path}: empty metrics file (no header line)")
    return raw, dropped


#: The longest line a metrics CSV part may have (a row of every column is a few hundred bytes).
#: A longer line is refused before polars sees it: a 200 MB line costs several times that to parse.
MAX_CSV_LINE = 1 << 20


def _lines(raw: bytes) -> tuple[int, int, int]:
    """(newlines, longest line in bytes, its line number) of ``raw``, in 64 MiB blocks."""
    data = np.frombuffer(raw, dtype=np.uint8)
    block = 64 << 20
    count = longest = at = 0
    prev = -1
    for start in range(0, len(data), block):
        nl = np.flatnonzero(data[start:start + block] == 10)
        if not len(nl):
            continue
        nl += start
        gaps = np.diff(nl, prepend=prev) - 1
        i = int(gaps.argmax())
        if gaps[i] > longest:
            longest, at = int(gaps[i]), count + i + 1
        prev = int(nl[-1])
        count += len(nl)
    if len(data) - 1 - prev > longest:
        longest, at = len(data) - 1 - prev, count + 1
    return count, longest, at


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
        raise RunLogError(f"{path}: not a readable metrics CSV ({first_line(exc)})") from None
    return CsvRead(frame=frame, dropped_partial_line=dropped)


# --------------------------------------------------------------------------------------------
# Metrics parts
# --------------------------------------------------------------------------------------------


def _metric_parts(metrics_dir: Path) -> list[Path]:
    """Part files in write order; a part present as both parquet and csv is read as parquet."""
    by_index: dict[int, Path] = {}
    try:
        names = list(metrics_dir.iterdir())
    except OSError as exc:
        raise RunLogError(f"{metrics_dir}: cannot list the metrics parts ({exc.strerror or exc})") from None
    for p in names:
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
    step_int64: bool = False
    """Parquet: the step column is stored as Int64 (no dtype check needed)."""


def _plan_parts(metrics_dir: Path, notes: list[str]) -> list[_Part]:
    plans: list[_Part] = []
    parts = _metric_parts(metrics_dir)
    for part in parts:
        check_regular(part)  # before anything opens it: a FIFO, a device or a directory is refused
        step_int64 = False
        if part.suffix == ".parquet":
            try:
                rows, names, step_int64 = _parquet_footer(part)
            except FileNotFoundError:
                raise
            except (Exception, PanicException) as exc:  # a corrupt file can make polars panic
                raise RunLogError(f"{part}: not a readable parquet part ({first_line(exc)})") from None
        else:
            if len(parts) > 1 and _no_complete_line(part):
                continue  # a tail just opened by a live writer (or cut before its header): no rows yet
            raw, dropped = _csv_snapshot(part)
            if dropped:
                notes.append(f"{part.name}: dropped a last line cut short by an interrupted write")
            rows, longest, at = _lines(raw)
            if longest > MAX_CSV_LINE:
                raise RunLogError(f"{part}: line {at} is {longest:,} bytes long, more than the {MAX_CSV_LINE:,} a "
                                  "metrics row may be (not a metrics CSV)")
            try:
                names = pl.scan_csv(raw, infer_schema=False).collect_schema().names()
            except (Exception, PanicException) as exc:
                raise RunLogError(f"{part}: not a readable metrics CSV ({first_line(exc)})") from None
        if "step" not in names:
            raise RunLogError(f"{part}: no 'step' column")
        plans.append(_Part(part, rows, [c for c in METRIC_COLUMNS if c in names],
                           None if part.suffix == ".parquet" else raw, step_int64))
    return plans


def _read_parts(metrics_dir: Path, notes: list[str]) -> pl.DataFrame:
    plans = _plan_parts(metrics_dir, notes)
    if not plans:
        raise RunLogError(f"{metrics_dir}: no metrics parts (part-NNNNNN.parquet or .csv)")
    total = sum(p.rows for p in plans)
    buffers = ColumnBuffers(NUMPY_DTYPES, total)
    ranges: list[tuple[int, int]] = []  # (first row, rows) of each part
    pos = 0
    for plan in plans:
        try:
            buffers.declare(plan.columns)
        except (MemoryError, OverflowError, OSError) as exc:  # a footer claiming more rows than memory maps
            raise RunLogError(f"{plan.path}: {total:,} rows are more than this machine can map "
                              f"({first_line(exc)})") from None
        casts = [pl.col(c).cast(_METRIC_SCHEMA[c]) for c in plan.columns if c != "step"]
        if plan.raw is None:
            scan = pl.scan_parquet(plan.path, row_index_name=ROW_INDEX, glob=False)
            what = "parquet part"
            try:
                step = pl.col("step") if plan.step_int64 else _step_expr(
                    plan.path, scan.collect_schema()["step"], lambda: scan.select("step").collect().to_series())
            except RunLogError:
                raise
            except (Exception, PanicException) as exc:
                raise RunLogError(f"{plan.path}: not a readable {what} ({first_line(exc)})") from None
            lazy = scan.select(ROW_INDEX, step, *casts)
        else:
            lazy = pl.scan_csv(plan.raw, schema_overrides={c: _METRIC_SCHEMA[c] for c in plan.columns},
                               infer_schema=False, row_index_name=ROW_INDEX).select(ROW_INDEX, pl.col("step"), *casts)
            what = "metrics CSV"
        try:
            got = fill_from_scan(buffers, lazy, pos, plan.rows)
        except FileNotFoundError:
            raise
        except (Exception, PanicException) as exc:  # polars raises several types (a corrupt file can panic)
            if plan.raw is None:
                raise RunLogError(f"{plan.path}: not a readable {what} ({first_line(exc)})") from None
            got = _csv_text_steps(plan, buffers, pos, casts, exc)
        if plan.raw is None and got != plan.rows:
            raise RunLogError(f"{plan.path}: not a readable parquet part ({got} rows where its footer says {plan.rows})")
        ranges.append((pos, got))
        pos += got
    buffers.rows = pos
    _apply_run_rules(buffers, ranges, notes)
    frame = buffers.frame(METRIC_COLUMNS)
    steps = frame.get_column("step")
    if frame.height and steps[0] < 0:
        k = int(steps.search_sorted(0, side="left"))
        notes.append(f"{k} row(s) with a negative step (from {steps[0]}): kept, in step order")
    return frame.with_columns(pl.col("step").set_sorted())


def _csv_text_steps(plan: _Part, buffers: ColumnBuffers, pos: int, casts: list[pl.Expr], exc: BaseException) -> int:
    """A CSV part whose ``step`` cells did not all parse as integers (the fast path's schema):
    read them as text, refuse fractional or out-of-range steps and steps that are not numbers,
    and read whole numbers written as ``3.0`` / ``3e3``. Any other failure keeps its message."""
    assert plan.raw is not None
    others = {c: _METRIC_SCHEMA[c] for c in plan.columns if c != "step"}
    try:
        scan = pl.scan_csv(plan.raw, schema_overrides={**others, "step": pl.String}, infer_schema=False,
                           row_index_name=ROW_INDEX)
        step = _step_expr(plan.path, pl.String, lambda: scan.select("step").collect().to_series())
        return fill_from_scan(buffers, scan.select(ROW_INDEX, step, *casts), pos, plan.rows)
    except RunLogError:
        raise
    except (Exception, PanicException):
        raise RunLogError(f"{plan.path}: not a readable metrics CSV ({first_line(exc)})") from None


#: The most a step may be (steps are Int64).
_STEP_MAX = 2**63


def _step_expr(path: Path, dtype: Any, values: Callable[[], pl.Series]) -> pl.Expr:
    """The expression that turns a part's ``step`` column of ``dtype`` into Int64 steps, after
    checking the values (``values()``, read only when the dtype is not an integer type): whole
    numbers only (``3.0`` is step 3; ``2.5`` is refused, never rounded into step 2 or 3), within the
    64-bit range; NaN, inf and empty cells are rows without a step. Booleans, dates, times and
    other types are refused: they are not step numbers."""
    col = pl.col("step")
    if dtype == pl.Int64:
        return col
    if dtype == pl.Null:
        return col.cast(pl.Int64)
    if dtype.is_integer() and dtype != pl.UInt64:
        return col.cast(pl.Int64)
    if not (dtype.is_numeric() or dtype == pl.String):
        raise RunLogError(f"{path}: the step column holds {dtype_words(dtype)} values, not step numbers "
                          "(whole numbers of optimizer updates)")
    s = values()
    if dtype == pl.String:
        text = s.str.strip_chars()
        as_int = text.cast(pl.Int64, strict=False)
        as_float = text.cast(pl.Float64, strict=False)
        junk = (text.is_not_null() & (text != "") & as_int.is_null() & as_float.is_null()).fill_null(False)
        if junk.any():
            first = text.filter(junk)[0]
            raise RunLogError(f"{path}: step {first[:40]!r} is not a number ({int(junk.sum())} row(s))")
        check_whole_steps(path, as_float.filter(as_int.is_null()))
        stripped = col.str.strip_chars()
        return pl.coalesce(stripped.cast(pl.Int64, strict=False),
                           stripped.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)).alias("step")
    if dtype == pl.UInt64:
        big = s > (_STEP_MAX - 1)
        if big.any():
            raise RunLogError(f"{path}: step {s.filter(big)[0]} is outside the 64-bit integer range")
        return col.cast(pl.Int64)
    check_whole_steps(path, s.cast(pl.Float64, strict=False))
    return col.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False).alias("step")


def check_whole_steps(where: Any, steps: pl.Series) -> None:
    """Refuse finite steps that are not whole numbers or lie outside the 64-bit range
    (``RunLogError``, prefixed with ``where: `` when given). NaN, inf and nulls pass: they are rows
    without a step."""
    prefix = f"{where}: " if where is not None else ""
    steps = steps.cast(pl.Float64, strict=False)
    finite = steps.is_finite().fill_null(False)
    frac = (finite & (steps != steps.floor())).fill_null(False)
    if frac.any():
        first = float(steps.filter(frac)[0])
        raise RunLogError(f"{prefix}step {first!r} is not a whole number ({int(frac.sum())} row(s)); "
                          "steps count optimizer updates, so fractional steps are refused, not rounded")
    big = (finite & (steps.abs() >= _STEP_MAX)).fill_null(False)
    if big.any():
        raise RunLogError(f"{prefix}step {float(steps.filter(big)[0]):.17g} is outside the 64-bit integer range")


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
    with open_regular(path) as fh:
        head = fh.read(4096)
    return b"\n" not in head or not head.split(b"\n", 1)[1].strip()


def parquet_footer(path: Path) -> tuple[int, list[str]]:
    """Rows and column names of a parquet file, from its footer, after checking
    that no column chunk points past the end of the file (that makes polars panic and print a Rust
    backtrace on stderr; the check turns it into a plain ValueError first)."""
    rows, names, _ = _parquet_footer(path)
    return rows, names


def _parquet_footer(path: Path) -> tuple[int, list[str], bool]:
    """``parquet_footer`` and whether the ``step`` column is stored as a signed 64-bit integer
    (the usual part: its steps need no check)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        schema = pl.read_parquet_schema(path)
        rows = pl.scan_parquet(path, glob=False).select(pl.len()).collect().item()
        return int(rows), list(schema.names()), schema.get("step") == pl.Int64
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
    arrow = pf.schema_arrow
    step_int64 = "step" in arrow.names and str(arrow.field("step").type) == "int64"
    return int(meta.num_rows), list(arrow.names), step_int64


def read_parquet_checked(path: Path) -> pl.DataFrame:
    """``pl.read_parquet`` after the footer check of ``parquet_footer``."""
    parquet_footer(path)
    return pl.read_parquet(path, glob=False)


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


#: A line of ``events.ndjson`` longer than this is skipped as unreadable (never held whole).
MAX_EVENT_LINE = 64 << 20


def read_events(path: Path, notes: list[str] | None = None) -> list[Event]:
    """Read ``events.ndjson``. Bad lines are skipped with a note; events logged before a
    ``resume`` at step S with step > S are dropped (that stretch was re-run). The file must be a
    regular file of at most ``MAX_EVENTS_BYTES``; it is read line by line (a line past
    ``MAX_EVENT_LINE`` is an unreadable line), in one pass, linear in the lines."""
    path = Path(path)
    notes = notes if notes is not None else []
    if not os.path.lexists(path):
        return []
    read: list[Event] = []
    bad = 0
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_EVENTS_BYTES:
            raise too_large(path, size, MAX_EVENTS_BYTES, "events file")
        left = MAX_EVENTS_BYTES + 1  # a file that grows past the bound while being read is cut there
        while left > 0:
            line = fh.readline(min(MAX_EVENT_LINE + 1, left))
            if not line:
                break
            left -= len(line)
            if len(line) > MAX_EVENT_LINE and not line.endswith(b"\n"):
                bad += 1
                while left > 0:  # skip the rest of the line without holding it
                    chunk = fh.readline(min(1 << 20, left))
                    left -= len(chunk)
                    if not chunk or chunk.endswith(b"\n"):
                        break
                continue
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                step = _event_step(rec.pop("step"))
                kind = rec.pop("kind")
                if not isinstance(kind, str):
                    raise TypeError("kind is not a string")
                kind = clean_text(kind)
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
                bad += 1
                continue
            read.append(Event(step=step, kind=kind, data=rec))
    # A resume at step S drops the events written before it with a step above S: from the end,
    # an event stays when its step is at most every later resume's step.
    kept: list[Event] = []
    cutoff: int | None = None
    for e in reversed(read):
        if cutoff is None or e.step <= cutoff:
            kept.append(e)
        if e.kind == "resume":
            cutoff = e.step if cutoff is None else min(cutoff, e.step)
    kept.reverse()
    if bad:
        notes.append(f"{path.name}: skipped {bad} unreadable line(s)")
    kept.sort(key=lambda e: e.step)
    return kept


def _event_step(value: Any) -> int:
    """An event's step: an integer (or a whole number written as ``3.0`` or ``"3"``) in the 64-bit
    range; booleans and fractions are not steps."""
    if isinstance(value, bool):
        raise TypeError("a boolean step")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("a fractional step")
        value = int(value)
    elif isinstance(value, str):
        value = int(value.strip())
    elif not isinstance(value, int):
        raise TypeError("step is not a number")
    if not -_STEP_MAX <= value < _STEP_MAX:
        raise OverflowError("step outside the 64-bit range")
    return value


def read_config(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict: a regular file of at most
    ``safeio.MAX_CONFIG_BYTES``, whose YAML aliases, nesting and size stay within the bounds of
    ``safeio`` (a "billion laughs" is refused while it is still a few hundred nodes)."""
    path = Path(path)
    try:
        data = load_config_file(path)
    except FileNotFoundError:
        raise RunLogError(f"{path}: not a readable config (no such file)") from None
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
    """Read a run directory written by ``RunLogWriter`` (or any tool following the format).

    Only regular files are read (a FIFO, a device or a directory where a file belongs is refused,
    never waited on); files read whole have a size bound (``safeio``). The config, the metrics
    parts and the events must be usable (else a ``RunLogError``, one line naming the file);
    ``summary.json`` and ``stats/`` are optional: a problem there is a note."""
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path}: no such run directory")
    if not is_run_dir(path):
        raise RunLogError(f"{path}: not a run directory (no {METRICS_DIR}/ folder)")
    notes: list[str] = []
    config = read_config(path / CONFIG_FILE) if os.path.lexists(path / CONFIG_FILE) else {}
    if not config:
        notes.append(f"{CONFIG_FILE} missing: targets and intervals come from flags only")
    if config:
        from .aliases import canonical_config  # (at call time: aliases builds on this module)

        canonical_config(config, notes)  # only for its notes: counts the analyzer cannot use
    version = config.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise RunLogError(f"{path / CONFIG_FILE}: schema_version {version} is newer than this sae-report reads ({SCHEMA_VERSION})")
    before = len(notes)
    metrics = read_metrics_dir(path / METRICS_DIR, notes)
    if metrics.height == 0:
        # the rule of the standalone readers: a log without rows cannot be analyzed
        no_step = [n for n in notes[before:] if n.endswith("without a step dropped")]
        raise RunLogError(f"{path / METRICS_DIR}: " + (f"no row has a step ({no_step[0].split(' ', 1)[0]} row(s) without one)"
                                                        if no_step else "only header lines, no rows"))
    events = read_events(path / EVENTS_FILE, notes)
    summary = read_summary(path / SUMMARY_FILE, notes)
    stats = path / STATS_DIR
    feature_freq = load_npy(stats / "feature_freq.npy", notes, ndim=1)
    input_sample = load_npy(stats / "input_sample.npy", notes, ndim=2)
    input_dims = read_input_dims(stats / "input_dims.csv", notes)
    feature_density = read_feature_density(stats / "feature_density", notes)
    # A run written by `sae-report import` keeps where its data came from (ingest/convert.py).
    imported = config.get("imported_from") if isinstance(config.get("imported_from"), dict) else {}
    carried = imported.get("notes") if isinstance(imported.get("notes"), list) else []
    notes[:0] = [f"imported from {imported.get('source')}: {n}" for n in carried if isinstance(n, str)]
    live = in_progress_note(path, config, metrics, summary)
    if live:
        notes.insert(0, live)
    return RunData(
        path=path,
        run_id=str(config.get("run_id") or path.resolve().name),
        config=config,
        metrics=metrics,
        events=events,
        source="sae-report",
        sampled=imported.get("sampled") is True,
        notes=notes,
        summary=summary,
        feature_freq=feature_freq,
        input_dims=input_dims,
        input_sample=input_sample,
        feature_density=feature_density,
    )


#: Most per-feature density snapshots read (``RunData.feature_density``).
