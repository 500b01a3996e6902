"""Metrics tables: a CSV, NDJSON or Parquet file (with ``config.yaml``/``config.json`` beside it),
or a directory holding those.

What real logs contain and how it is read:
- unsorted steps: sorted; duplicate steps (a resume, or metrics logged in separate calls at one
  step): the later write wins column by column;
- a truncated last line (a write cut short): dropped with a note;
- ``nan``/``inf``/``NaN``/``Infinity`` (also Python's bare tokens in NDJSON): kept as numbers, they
  are signals; junk in a numeric cell: null;
- metrics at different cadences: joined on step, never forward-filled (a step that did not log a
  metric holds null there);
- NDJSON keys that first appear late in the file are kept (the parser is our own, not polars'),
  in one pass; at most ``MAX_NDJSON_METRICS`` metric columns and ``MAX_NDJSON_OTHER`` other names;
- steps are whole numbers (``3.0`` is step 3, ``2.5`` is refused, never rounded); a step column of
  booleans or dates is refused; negative steps are kept with a note;
- only regular files are read (``runlog.safeio``): a FIFO or a device path is refused.
Anything unusable raises ``RunLogError`` with one line naming the file and the problem.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from polars.exceptions import PanicException

from ..runlog import RunData, RunLogError, read_config, read_events
from ..runlog.columns import ROW_INDEX, ColumnBuffers, dtype_words, fill_from_scan, split_nulls, zero_copy_series
from ..runlog.reader import parquet_footer
from ..runlog.safeio import InputRefused, check_regular, clean_text, open_regular
from ..runlog.aliases import _to_float, canonical_config, canonicalize, match_column

#: Suffix -> kind.
SUFFIXES = {".csv": "csv", ".tsv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".parquet": "parquet",
            ".pq": "parquet"}
#: Stems preferred when a directory holds several tables.
PREFERRED = ("metrics", "history", "log", "train")
CONFIG_NAMES = ("config.yaml", "config.yml", "config.json")


def _tables_in(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                  and not p.name.startswith(".") and p.name != "events.ndjson")


def detect(path: Path) -> bool:
    """True for a table file, or a directory holding one."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() in SUFFIXES
    return path.is_dir() and bool(_tables_in(path))


def _pick(path: Path, run: str | None) -> Path:
    tables = _tables_in(path)
    if not tables:
        raise RunLogError(f"{path}: no metrics file (.csv, .ndjson, .jsonl or .parquet) in this directory")
    if run is not None:
        hit = [p for p in tables if p.stem == run]
        if not hit:
            raise RunLogError(f"{path}: no metrics file named {run!r} (found {', '.join(p.name for p in tables)})")
        return hit[0]
    if len(tables) == 1:
        return tables[0]
    for stem in PREFERRED:
        hit = [p for p in tables if p.stem.lower() == stem]
        if hit:
            return hit[0]
    raise RunLogError(f"{path}: several metrics files ({', '.join(p.name for p in tables[:5])}); "
                      "pick one with --run NAME or pass the file")


def read(path: Path, run: str | None = None, kind: str | None = None) -> RunData:
    """Read a metrics table (or the one in a directory) into ``RunData``."""
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path}: no such file or directory")
    file = _pick(path, run) if path.is_dir() else path
    try:
        check_regular(file)  # a FIFO or a device is refused before anything opens it
    except FileNotFoundError:
        raise RunLogError(f"{file}: no such file or directory") from None
    if kind is None or kind == "auto":
        kind = SUFFIXES.get(file.suffix.lower())
        if kind is None:
            raise RunLogError(f"{file}: unknown table type {file.suffix!r} (expected .csv, .ndjson, .jsonl or .parquet)")
    notes: list[str] = []
    try:
        if kind == "csv":
            frame = read_csv(file, notes)
        elif kind == "ndjson":
            frame = read_ndjson(file, notes)
        elif kind == "parquet":
            frame = read_parquet(file, notes)
        else:
            raise RunLogError(f"{file}: the tables reader does not read {kind!r}")
    except OSError as exc:
        raise RunLogError(f"{file}: cannot read ({exc.strerror or exc})") from None
    config, cfg_notes = _config_beside(file)
    notes.extend(cfg_notes)
    canonical_config(config, notes)  # only for its notes: counts the analyzer cannot use
    sampled = any(c.endswith(("__MIN", "__MAX")) for c in frame.columns)
    if sampled:
        notes.append("bucketed export (__MIN/__MAX columns): the history is sampled, not every step")
    try:
        canon = canonicalize(frame, config)
    except RunLogError as exc:
        raise RunLogError(f"{file}: {exc}") from None
    notes.extend(canon.notes)
    events = read_events(file.parent / "events.ndjson", notes) if (file.parent / "events.ndjson").exists() else []
    run_id = run or str(config.get("run_id") or (file.parent.resolve().name if file.stem.lower() in PREFERRED else file.stem))
    return RunData(path=file, run_id=run_id, config=config, metrics=canon.frame, events=events, source=kind,
                   sampled=sampled, notes=notes)


def _config_beside(file: Path) -> tuple[dict[str, Any], list[str]]:
    for name in (f"{file.stem}.config.yaml", f"{file.stem}.config.json", *CONFIG_NAMES):
        p = file.parent / name
        if os.path.lexists(p):
            try:
                return read_config(p), []
            except InputRefused:
                raise  # not a regular file, too large, or past the expansion bounds: refused, not ignored
            except RunLogError as exc:
                return {}, [f"{exc} - ignored; targets come from flags only"]
    return {}, ["no config.yaml beside the metrics: targets and intervals come from flags only"]


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def _complete_last_line(last: bytes, header: bytes, sep: bytes) -> bool:
    """A last line without newline is kept only when it has every field and every field parses."""
    fields = last.split(sep)
    if len(fields) != len(header.split(sep)):
        return False
    for f in fields:
        t = f.strip().strip(b'"')
        if not t:
            continue
        try:
            float(t)
        except ValueError:
            return False
    return True


_BOM = b"\xef\xbb\xbf"
_SCAN_BLOCK = 1 << 20


@dataclass
class _Prescan:
    """One pass over a CSV file, in 1 MiB blocks (nothing kept): what reading it needs to know.
    The flags describe the lines after the header."""

    size: int
    mtime_ns: int
    header: bytes
    """The first line, without its newline and BOM."""
    newlines: int
    last_newline: int
    """Offset of the last newline (-1: none)."""
    content: bool
    """Some byte is not whitespace."""
    ascii: bool = True
    space: bool = False
    tab: bool = False
    other_space: bool = False
    """A vertical tab or form feed."""
    lone_cr: bool = False
    """A carriage return not followed by a newline."""

    def plain(self, sep: bytes) -> bool:
        """No byte polars' float parser and ``str.strip_chars().cast(Float64)`` could disagree
        on: both read every unpadded number, nan/inf spelling and junk cell alike; only
        whitespace around a value (which strip removes and the parser rejects after the digits)
        tells them apart."""
        return (self.ascii and not self.space and not self.other_space and not self.lone_cr
                and (not self.tab or sep == b"\t"))


def _prescan(path: Path) -> _Prescan:
    with open_regular(path) as fh:
        st = os.fstat(fh.fileno())
        # the header is only counted: names may hold spaces or other scripts, values are what matter
        first = fh.readline()
        offset = len(first)
        pre = _Prescan(size=st.st_size, mtime_ns=st.st_mtime_ns, header=first.rstrip(b"\n").removeprefix(_BOM),
                       newlines=first.count(b"\n"), last_newline=offset - 1 if first.endswith(b"\n") else -1,
                       content=bool(first.strip()))
        block = bytearray(_SCAN_BLOCK)
        cr = crlf = 0
        prev_cr = False
        while offset < pre.size:
            got = fh.readinto(block)
            if not got:
                break
            chunk = block if got == len(block) else block[:got]
            pre.newlines += int(np.count_nonzero(np.frombuffer(chunk, dtype=np.uint8) == 10))
            k = chunk.rfind(b"\n")
            if k >= 0:
                pre.last_newline = offset + k
            if not pre.content and chunk.strip():
                pre.content = True
            if pre.ascii and not chunk.isascii():
                pre.ascii = False
            pre.space = pre.space or chunk.find(b" ") >= 0
            pre.tab = pre.tab or chunk.find(b"\t") >= 0
            pre.other_space = pre.other_space or chunk.find(b"\x0b") >= 0 or chunk.find(b"\x0c") >= 0
            if chunk.find(b"\r") >= 0 or prev_cr:
                cr += chunk.count(b"\r")
                crlf += chunk.count(b"\r\n") + (1 if prev_cr and chunk[:1] == b"\n" else 0)
            prev_cr = chunk[-1:] == b"\r"
            offset += got
        pre.size = offset  # what was read (a live writer may have appended since the stat)
        pre.lone_cr = cr > crlf
    return pre


def _read_range(path: Path, start: int, stop: int) -> bytes:
    with open_regular(path) as fh:
        fh.seek(start)
        return fh.read(max(0, stop - start))


def read_csv(path: Path, notes: list[str]) -> pl.DataFrame:
    """The columns ``aliases`` knows as Float64, each parsed straight into one contiguous
    buffer (``nan``/``inf``/``Infinity`` are numbers, junk in a numeric cell is null); the other
    columns are only named (Null placeholders, never parsed), so ``canonicalize`` still lists
    them. The file is never held in memory, except up to its last newline when a last line cut
    short must be left out, or when a writer appended to it while it was being parsed."""
    pre = _prescan(path)
    if not pre.content:
        raise RunLogError(f"{path}: empty file")
    header = pre.header
    sep = b"\t" if (b"\t" in header and b"," not in header) or path.suffix.lower() == ".tsv" else b","
    if pre.last_newline < 0:
        raise RunLogError(f"{path}: only a header line, no rows")
    source: Path | bytes = path
    rows = pre.newlines
    if pre.last_newline != pre.size - 1:  # a last line without newline
        last = _read_range(path, pre.last_newline + 1, pre.size)
        if _complete_last_line(last.rstrip(b"\r"), header.rstrip(b"\r"), sep):
            rows += 1
        else:
            source = _read_range(path, 0, pre.last_newline + 1)
            notes.append(f"{path.name}: dropped a last line cut short by an interrupted write")
    frame = _parse_csv(path, source, sep.decode(), pre.plain(sep), rows, notes)
    if isinstance(source, Path):
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) != (pre.size, pre.mtime_ns):
            # a writer appended while polars parsed: read what the prescan saw, a consistent cut
            del frame
            snapshot = _read_range(path, 0, pre.last_newline + 1 if rows == pre.newlines else pre.size)
            frame = _parse_csv(path, snapshot, sep.decode(), pre.plain(sep), rows, notes)
    if frame.height == 0:
        raise RunLogError(f"{path}: only a header line, no rows")
    return frame


def _parse_csv(path: Path, source: Path | bytes, sep: str, plain: bool, rows: int, notes: list[str]) -> pl.DataFrame:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scan = dict(separator=sep, has_header=True, infer_schema=False, ignore_errors=True,
                        truncate_ragged_lines=True, encoding="utf8-lossy", glob=False)
            names = pl.scan_csv(source, **scan).collect_schema().names()
            wanted = [n for n in names if not n.endswith(("__MIN", "__MAX")) and match_column(n) is not None]
            if wanted:
                # plain files: polars parses the numbers itself; otherwise text, stripped and cast
                # (aliases._to_float, the rule for every reader)
                lazy = pl.scan_csv(source, schema_overrides={n: pl.Float64 if plain else pl.String for n in wanted},
                                   row_index_name=ROW_INDEX, **scan)
                lazy = lazy.select(ROW_INDEX, *split_nulls({n: pl.col(n) if plain else _text_to_float(n) for n in wanted}))
                buffers = ColumnBuffers({n: np.float64 for n in wanted}, rows)
                fill_from_scan(buffers, lazy, 0, rows)
                data = buffers.frame(wanted)
                height = data.height
            else:
                data, height = pl.DataFrame(), int(pl.scan_csv(source, **scan).select(pl.len()).collect().item())
        for w in caught[:1]:
            notes.append(f"{path.name}: {str(w.message).splitlines()[0][:160]}")
    except RunLogError:
        raise
    except (Exception, PanicException) as exc:  # polars raises several types; the message is what matters
        raise RunLogError(f"{path}: not a readable CSV ({_first_line(exc)})") from None
    return _with_placeholders(names, data, height)


def _copy_casts(dtype: pl.DataType) -> bool:
    """numpy turns these into float64 exactly as ``cast(pl.Float64)`` does (0/1 for booleans)."""
    return dtype.is_integer() or dtype.is_float() or dtype == pl.Boolean


def _text_to_float(name: str) -> pl.Expr:
    """``aliases._to_float`` of a text column, as an expression a scan runs as it reads."""
    return pl.col(name).str.strip_chars().cast(pl.Float64, strict=False)


def _with_placeholders(names: list[str], data: pl.DataFrame, height: int) -> pl.DataFrame:
    """``data``'s columns and, for every other name, an all-null column of dtype Null (no memory),
    in ``names`` order: ``canonicalize`` sees every column of the file."""
    return pl.DataFrame([data.get_column(n) if n in data.columns else pl.repeat(None, height, dtype=pl.Null, eager=True).alias(n)
                         for n in names])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# NDJSON
# ---------------------------------------------------------------------------------------------


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        try:
            return float(v)
        except OverflowError:
            return math.inf if v > 0 else -math.inf
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def _flat(rec: dict[str, Any]) -> dict[str, Any]:
    """Nested objects as ``a/b`` keys (iterative: no recursion however deep a line nests)."""
    out: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", iter(rec.items()))]  # depth first, in the line's key order
    while stack:
        prefix, items = stack[-1]
        for k, v in items:
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                stack.append((key + "/", iter(v.items())))
                break
            out[key] = v
        else:
            stack.pop()
    return out


#: An NDJSON log keeps at most this many distinct metric keys (names ``aliases`` knows) and names
#: at most this many other keys; keys past either bound are counted in a note and not read. A
#: metrics log has tens of keys; a file where every line brings new keys is not one, and each
#: kept column costs memory for every row.
MAX_NDJSON_METRICS = 1_000
MAX_NDJSON_OTHER = 1_000
#: A line longer than this is skipped as unreadable, never held whole.
MAX_NDJSON_LINE = 16 << 20

_METRIC, _OTHER, _DROPPED = 0, 1, 2


class _NdColumn:
    """The rows where a metric key was logged and its values there (compact arrays, appended
    once per point: building the columns is linear in the points, however many keys appear late)."""

    __slots__ = ("rows", "values")

    def __init__(self) -> None:
        self.rows = array("q")
        self.values = array("d")


def _ndjson_lines(fh: Any) -> Any:
    """Lines (with their newline; the last may have none), or None for a line past
    ``MAX_NDJSON_LINE`` (skipped to its newline without being held)."""
    while True:
        line = fh.readline(MAX_NDJSON_LINE + 1)
        if not line:
            return
        if len(line) > MAX_NDJSON_LINE and not line.endswith(b"\n"):
            while True:
                chunk = fh.readline(1 << 20)
                if not chunk or chunk.endswith(b"\n"):
                    break
            yield None
            continue
        yield line


def read_ndjson(path: Path, notes: list[str]) -> pl.DataFrame:
    """Our own tolerant NDJSON parse: Python's ``NaN``/``Infinity`` tokens, a truncated last line,
    bad lines (skipped and counted) and keys that first appear late are all handled. One pass,
    linear in the points; the metric columns are built as they are read and the number of
    columns is bounded (``MAX_NDJSON_METRICS``, ``MAX_NDJSON_OTHER``)."""
    cols: dict[str, _NdColumn] = {}
    kinds: dict[str, int] = {}  # key -> _METRIC / _OTHER / _DROPPED
    order: list[str] = []  # kept keys, in order of first appearance
    n_other = 0
    steps = set()
    n = bad = 0
    content = False
    with open_regular(path) as fh:
        for lineno, line in enumerate(_ndjson_lines(fh), 1):
            if line is None:
                content = True
                bad += 1
                continue
            last = not line.endswith(b"\n")
            line = line.strip()
            if not line:
                continue
            content = True
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError):
                if last:
                    notes.append(f"{path.name}: dropped a last line cut short by an interrupted write")
                else:
                    bad += 1
                continue
            if not isinstance(rec, dict):
                bad += 1
                continue
            for k, v in _flat(rec).items():
                if not k.isascii():
                    k = clean_text(k)  # a lone surrogate escape in a name: a report must still be writable
                kind = kinds.get(k)
                if kind is None:
                    hit = None if k.endswith(("__MIN", "__MAX")) else match_column(k)
                    if hit is not None and len(cols) < MAX_NDJSON_METRICS:
                        kind, cols[k] = _METRIC, _NdColumn()
                        order.append(k)
                        if hit[0] == "step":
                            steps.add(k)
                    elif hit is None and n_other < MAX_NDJSON_OTHER:
                        kind, n_other = _OTHER, n_other + 1
                        order.append(k)
                    else:
                        kind = _DROPPED
                    kinds[k] = kind
                if kind != _METRIC:
                    continue
                if isinstance(v, bool) and k in steps:
                    raise RunLogError(f"{path}: line {lineno}: {k} is {json.dumps(v)}, a boolean, not a step number")
                x = _number(v)
                if x is not None:
                    col = cols[k]
                    col.rows.append(n)
                    col.values.append(x)
            n += 1
    if not content:
        raise RunLogError(f"{path}: empty file")
    if bad:
        notes.append(f"{path.name}: skipped {bad} unreadable line(s)")
    dropped = sum(1 for kind in kinds.values() if kind == _DROPPED)
    if dropped:
        notes.append(f"{path.name}: {dropped:,} key(s) not read: a log keeps at most {MAX_NDJSON_METRICS:,} metric "
                     f"columns and names {MAX_NDJSON_OTHER:,} other keys")
    if n == 0:
        raise RunLogError(f"{path}: no JSON objects in the file")
    data = pl.DataFrame([_nd_series(k, cols[k], n) for k in order if k in cols])
    return _with_placeholders(order, data, n)


def _nd_series(name: str, col: _NdColumn, n: int) -> pl.Series:
    values = np.zeros(n, dtype=np.float64)
    rows = np.frombuffer(col.rows, dtype=np.int64) if len(col.rows) else np.zeros(0, dtype=np.int64)
    if len(rows) == n:
        return pl.Series(name, np.frombuffer(col.values, dtype=np.float64).copy())
    values[rows] = np.frombuffer(col.values, dtype=np.float64) if len(col.values) else 0.0
    mask = np.ones(n, dtype=bool)
    mask[rows] = False
    return zero_copy_series(name, values, mask)


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------


def read_parquet(path: Path, notes: list[str] | None = None) -> pl.DataFrame:
    """Like ``read_csv``: the known columns, converted as ``aliases._to_float`` does, straight into
    contiguous buffers (batch by batch for a long file); the others as Null placeholders. A step
    column of booleans, dates or times is refused: those are not step numbers."""
    if check_regular(path).st_size == 0:
        raise RunLogError(f"{path}: empty file")
    try:
        rows, names = parquet_footer(path)
        wanted = [n for n in names if not n.endswith(("__MIN", "__MAX")) and match_column(n) is not None]
        buffers = ColumnBuffers({n: np.float64 for n in wanted}, rows)
        lazy = pl.scan_parquet(path, row_index_name=ROW_INDEX, glob=False)
        schema = lazy.collect_schema()
        for n in wanted:
            dtype = schema[n]
            if match_column(n)[0] == "step" and not (dtype.is_numeric() or dtype in (pl.String, pl.Null)):
                raise RunLogError(f"{path}: the step column {n!r} holds {dtype_words(dtype)} values, not step numbers "
                                  "(whole numbers of optimizer updates)")
        # Numbers and booleans come as they are and become Float64 as numpy copies them into the
        # buffers (what a cast does, without the streaming engine holding cast copies); text is
        # stripped and cast as it is read; other types (dates, nested, ...) go through
        # aliases._to_float batch by batch.
        other = [n for n in wanted if not _copy_casts(schema[n]) and schema[n] != pl.String]
        lazy = lazy.select(ROW_INDEX, *[_text_to_float(n) if schema[n] == pl.String else pl.col(n) for n in wanted])

        def convert(batch: pl.DataFrame) -> pl.DataFrame:
            return batch.with_columns([_to_float(batch.get_column(n)) for n in other])

        fill_from_scan(buffers, lazy, 0, rows, convert=convert if other else None)
        height = buffers.rows if wanted else rows
        data = buffers.frame(wanted)
    except RunLogError:
        raise
    except (Exception, PanicException) as exc:  # a corrupt file can make polars panic
        raise RunLogError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    if height == 0:
        raise RunLogError(f"{path}: no rows")
    return _with_placeholders(names, data, height)
