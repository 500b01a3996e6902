"""The run directory's optional files, read for ``read_run``: ``summary.json``, ``stats/`` (feature
frequency, an input sample and its per-dimension statistics, per-feature density snapshots) and
the writer's lock (is the run still being written?). A problem with any of them is a note on the
run, never an error: the metrics are what a run must have."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import polars as pl
from polars.exceptions import PanicException

from .safeio import (MAX_STATS_BYTES, MAX_STATS_VALUES, MAX_SUMMARY_BYTES, first_line, open_regular, parse_config_text,
                     read_regular, too_large)
from .schema import STATS_DIR, SUMMARY_FILE, RunLogError

DENSITY_SNAPSHOTS = 4
_DENSITY_FILE = re.compile(r"^step_(\d{1,18})\.npy$")


def read_feature_density(folder: Path, notes: list[str]) -> dict[int, np.ndarray]:
    """Up to ``DENSITY_SNAPSHOTS`` per-feature densities by step from ``folder``, evenly spread over
    the steps recorded (the last one always among them); unusable files are left out with a note."""
    if not folder.is_dir():
        return {}
    steps = sorted(int(m.group(1)) for f in os.listdir(folder) if (m := _DENSITY_FILE.match(f)))
    if not steps:
        return {}
    pick = sorted({steps[int(round(i))] for i in np.linspace(0, len(steps) - 1, min(DENSITY_SNAPSHOTS, len(steps)))})
    out: dict[int, np.ndarray] = {}
    for step in pick:
        name = next(f for f in os.listdir(folder) if (m := _DENSITY_FILE.match(f)) and int(m.group(1)) == step)
        arr = load_npy(folder / name, notes, ndim=1)
        if arr is not None:
            out[step] = arr
    return out


def in_progress_note(path: Path, config: Mapping[str, Any], metrics: pl.DataFrame,
                     summary: Mapping[str, Any]) -> str | None:
    """"run in progress" when a live process holds the run's lock (``.sae-report.lock``, read, never
    taken: its note names the writer), or, for a run of our trainer, "unfinished" when it has no
    ``summary.json`` and nobody writes it (stopped before its end). None otherwise."""
    from .lock import LOCK_FILE

    steps = metrics["step"].drop_nulls() if "step" in metrics.columns else None
    last = int(steps.max()) if steps is not None and steps.len() else None
    total = config.get("total_steps")
    upto = f"up to step {last:,}" if last is not None else "so far"
    if isinstance(total, int) and not isinstance(total, bool) and total > 0 and last is not None:
        upto += f" of {total:,}"
    note = _lock_note(path / LOCK_FILE)
    if note is not None:
        pid, host = note.get("pid"), note.get("host")
        who = f"pid {pid} ({_short(note.get('command'))}) since {_short(note.get('since'), 40)}"
        import socket

        if host and host != socket.gethostname():
            return (f"run in progress? {LOCK_FILE} says {who} on host {_short(host, 60)} writes it (this machine "
                    f"cannot check); this analysis covers the steps logged {upto}")
        if _writer_alive(pid, note.get("since")):
            return f"run in progress: {who} is writing it; this analysis covers the steps logged {upto}"
    if summary or os.path.lexists(path / SUMMARY_FILE) or not config.get("sae_report_version") \
            or config.get("imported_from"):
        return None
    return (f"unfinished run: no {SUMMARY_FILE} and no process is writing it (stopped before its end: killed, "
            f"crashed, or out of disk); this analysis covers the steps logged {upto}; continue it with: "
            f"sae-report train --resume {path}")


def _short(value: Any, limit: int = 120) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value if value is not None else "?"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lock_note(path: Path) -> dict[str, Any] | None:
    """The JSON note of a run directory's lock file (pid, command, host, since), or None."""
    if not os.path.lexists(path):
        return None
    try:
        note = json.loads(read_regular(path, 4096, "lock note").decode("utf-8", "replace") or "{}")
    except (RunLogError, OSError, ValueError):
        return None
    return note if isinstance(note, dict) and isinstance(note.get("pid"), int) else None


def _writer_alive(pid: Any, since: Any) -> bool:
    """The process ``pid`` of this host runs, and (where /proc says when it started) it is the one
    that took the lock, not a later process that got the same pid after the writer died."""
    from .lock import _pid_alive

    if not _pid_alive(pid):
        return False
    try:
        import datetime as _dt

        taken = _dt.datetime.strptime(str(since), "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=_dt.timezone.utc).timestamp()
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        started = boot + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # no /proc (or an odd note): the live pid decides
    return started <= taken + 2


def _problem(path: Path, exc: BaseException) -> str:
    """The problem part of a one-line error about ``path``."""
    text = str(exc).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    return msg.removeprefix(f"{path}: ")[:200]


def read_summary(path: Path, notes: list[str]) -> dict[str, Any]:
    """``summary.json`` (a JSON object, bounded like a config), or {} with a note."""
    if not os.path.lexists(path):
        return {}
    try:
        raw = read_regular(path, MAX_SUMMARY_BYTES, "summary")
        data = parse_config_text(raw.decode("utf-8"), path, as_json=True, what="summary")
    except FileNotFoundError:
        return {}
    except RunLogError as exc:
        notes.append(f"{SUMMARY_FILE}: ignored: {_problem(path, exc)}")
        return {}
    except UnicodeDecodeError:
        notes.append(f"{SUMMARY_FILE}: ignored: not UTF-8 text")
        return {}
    if not isinstance(data, dict):
        notes.append(f"{SUMMARY_FILE}: ignored: a JSON {_json_kind(data)}, not an object")
        return {}
    return data


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def load_npy(path: Path, notes: list[str], ndim: int) -> np.ndarray | None:
    """A ``.npy`` array of real numbers with ``ndim`` dimensions, or None (with a note when the
    file is there but unusable). The header is checked against the file's size before any data
    is read, so a header declaring a huge shape costs nothing; pickles are never loaded."""
    if not os.path.lexists(path):
        return None
    where = f"{path.parent.name}/{path.name}"
    try:
        arr = _read_npy(path)
    except FileNotFoundError:
        return None
    except RunLogError as exc:
        notes.append(f"{where}: ignored: {_problem(path, exc)}")
        return None
    except (ValueError, OSError, EOFError, TypeError, OverflowError, SyntaxError, MemoryError):
        notes.append(f"{where}: ignored: not a .npy array file")
        return None
    if arr.ndim != ndim:
        notes.append(f"{where}: ignored: a {arr.ndim}-D array, expected {ndim}-D")
        return None
    if arr.dtype.kind != "f":
        return arr.astype(np.float64)
    return arr


def _read_npy(path: Path) -> np.ndarray:
    from numpy.lib import format as npy

    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_STATS_BYTES:
            raise too_large(path, size, MAX_STATS_BYTES, "stats file")
        if size == 0:
            raise RunLogError(f"{path}: an empty file")
        try:
            version = npy.read_magic(fh)
        except (ValueError, EOFError):
            raise RunLogError(f"{path}: not a .npy array file") from None
        try:
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(fh)
            else:
                raise RunLogError(f"{path}: .npy format version {version[0]}.{version[1]} is not read")
        except (ValueError, EOFError, SyntaxError, TypeError, OverflowError):
            raise RunLogError(f"{path}: a .npy file whose header does not parse") from None
        if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise RunLogError(f"{path}: holds {dtype} values, not real numbers")
        count = 1
        for d in shape:
            count *= int(d)
        if count > MAX_STATS_VALUES:
            raise RunLogError(f"{path}: {count:,} values, more than the {MAX_STATS_VALUES:,} a stats array may hold")
        need = count * dtype.itemsize
        left = size - fh.tell()
        if need != left:
            raise RunLogError(f"{path}: its header promises {need:,} bytes of data, the file holds {left:,}")
        arr = np.fromfile(fh, dtype=dtype, count=count)
    if arr.size != count:
        raise RunLogError(f"{path}: cut short while reading")
    if fortran:
        return arr.reshape(tuple(shape)[::-1]).transpose()
    return arr.reshape(tuple(shape))


#: Columns of ``stats/input_dims.csv`` and their types; other columns are left out.
_INPUT_DIMS = {"dim": pl.Int64, "mean": pl.Float64, "std": pl.Float64, "absmax": pl.Float64, "outlier": pl.Boolean}


def read_input_dims(path: Path, notes: list[str]) -> pl.DataFrame | None:
    """``stats/input_dims.csv`` with its known columns typed (text that is not a number is null;
    ``dim`` missing or not a whole number everywhere: the row number), or None with a note."""
    if not os.path.lexists(path):
        return None
    where = f"{STATS_DIR}/{path.name}"
    try:
        raw = read_regular(path, MAX_STATS_BYTES, "stats file")
        frame = pl.read_csv(io.BytesIO(raw), infer_schema=False, truncate_ragged_lines=True, encoding="utf8-lossy")
    except FileNotFoundError:
        return None
    except RunLogError as exc:
        notes.append(f"{where}: ignored: {_problem(path, exc)}")
        return None
    except (Exception, PanicException) as exc:
        notes.append(f"{where}: ignored: not a readable CSV ({first_line(exc)})")
        return None
    cols: list[pl.Series] = []
    for name, dtype in _INPUT_DIMS.items():
        if name not in frame.columns:
            continue
        text = frame.get_column(name).cast(pl.String).str.strip_chars()
        if dtype == pl.Boolean:
            low = text.str.to_lowercase()
            num = low.cast(pl.Float64, strict=False)
            col = (low.is_in(["true", "yes"]) | (num.is_not_null() & (num != 0))).fill_null(False)
        else:
            col = text.cast(pl.Float64, strict=False)
            if dtype == pl.Int64:
                whole = col.is_finite().fill_null(False) & (col == col.floor()).fill_null(False) & (col.abs() < 2**53).fill_null(False)
                if not bool(whole.all()):
                    notes.append(f"{where}: dim is not a whole number on every row: rows numbered instead")
                    continue
                col = col.cast(pl.Int64)
        cols.append(col.alias(name))
    if not any(c.name in ("mean", "absmax") for c in cols):
        notes.append(f"{where}: ignored: no mean or absmax column")
        return None
    if "dim" not in [c.name for c in cols]:
        cols.insert(0, pl.Series("dim", np.arange(frame.height, dtype=np.int64)))
    return pl.DataFrame(cols)
