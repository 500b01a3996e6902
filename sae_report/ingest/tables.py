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
- NDJSON keys that first appear late in the file are kept (the parser is our own, not polars').
Anything unusable raises ``RunLogError`` with one line naming the file and the problem.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import polars as pl
from polars.exceptions import PanicException

from ..runlog import RunData, RunLogError, read_parquet_checked, read_config, read_events
from .aliases import canonicalize

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
            frame = read_parquet(file)
        else:
            raise RunLogError(f"{file}: the tables reader does not read {kind!r}")
    except OSError as exc:
        raise RunLogError(f"{file}: cannot read ({exc.strerror or exc})") from None
    config, cfg_notes = _config_beside(file)
    notes.extend(cfg_notes)
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
        if p.is_file():
            try:
                return read_config(p), []
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


def read_csv(path: Path, notes: list[str]) -> pl.DataFrame:
    """Every column as text (so ``nan``/``inf``/junk do not break type inference); the aliases step
    turns them into numbers."""
    raw = path.read_bytes()
    if not raw.strip():
        raise RunLogError(f"{path}: empty file")
    raw = raw.lstrip(b"\xef\xbb\xbf")
    first_nl = raw.find(b"\n")
    header = raw[:first_nl] if first_nl >= 0 else raw
    sep = b"\t" if (b"\t" in header and b"," not in header) or path.suffix.lower() == ".tsv" else b","
    if first_nl < 0:
        raise RunLogError(f"{path}: only a header line, no rows")
    if not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n")
        last = raw[cut + 1:]
        if not _complete_last_line(last.rstrip(b"\r"), header.rstrip(b"\r"), sep):
            raw = raw[:cut + 1]
            notes.append(f"{path.name}: dropped a last line cut short by an interrupted write")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame = pl.read_csv(io.BytesIO(raw), separator=sep.decode(), infer_schema_length=0, encoding="utf8-lossy",
                                truncate_ragged_lines=True, ignore_errors=True)
        for w in caught[:1]:
            notes.append(f"{path.name}: {str(w.message).splitlines()[0][:160]}")
    except (Exception, PanicException) as exc:  # polars raises several types; the message is what matters
        raise RunLogError(f"{path}: not a readable CSV ({_first_line(exc)})") from None
    if frame.height == 0:
        raise RunLogError(f"{path}: only a header line, no rows")
    return frame


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


def _flat(rec: dict[str, Any], prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {} if out is None else out
    for k, v in rec.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _flat(v, key + "/", out)
        else:
            out[key] = v
    return out


def read_ndjson(path: Path, notes: list[str]) -> pl.DataFrame:
    """Our own tolerant NDJSON parse: Python's ``NaN``/``Infinity`` tokens, a truncated last line,
    bad lines (skipped and counted) and keys that first appear late are all handled."""
    raw = path.read_bytes()
    if not raw.strip():
        raise RunLogError(f"{path}: empty file")
    lines = raw.split(b"\n")
    truncated = not raw.endswith(b"\n")
    cols: dict[str, list[float | None]] = {}
    n = 0
    bad = 0
    for idx, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            if idx == len(lines) - 1 and truncated:
                notes.append(f"{path.name}: dropped a last line cut short by an interrupted write")
            else:
                bad += 1
            continue
        if not isinstance(rec, dict):
            bad += 1
            continue
        for k, v in _flat(rec).items():
            col = cols.get(k)
            if col is None:
                col = cols[k] = [None] * n
            col.append(_number(v))
        n += 1
        for col in cols.values():
            if len(col) < n:
                col.append(None)
    if bad:
        notes.append(f"{path.name}: skipped {bad} unreadable line(s)")
    if n == 0:
        raise RunLogError(f"{path}: no JSON objects in the file")
    return pl.DataFrame({k: pl.Series(k, v, dtype=pl.Float64) for k, v in cols.items()})


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------


def read_parquet(path: Path) -> pl.DataFrame:
    if path.stat().st_size == 0:
        raise RunLogError(f"{path}: empty file")
    try:
        frame = read_parquet_checked(path)
    except (Exception, PanicException) as exc:  # a corrupt file can make polars panic
        raise RunLogError(f"{path}: not a readable Parquet file ({_first_line(exc)})") from None
    if frame.height == 0:
        raise RunLogError(f"{path}: no rows")
    return frame
