"""MLflow tracking stores, read without importing mlflow.

- **File store** (``mlruns/<experiment>/<run>/``): ``metrics/<key>`` text files with one
  ``timestamp value step`` line per point (a key with ``/`` is a subfolder: ``metrics/losses/mse_loss``),
  ``params/<key>`` holding one value each, ``meta.yaml`` with the run name and status.
- **SQLite store** (``mlflow.db``, MLflow's default since 3.7): tables ``runs``,
  ``metrics(key, value, timestamp, step, is_nan, run_uuid)`` and ``params(key, value, run_uuid)``,
  opened read-only. MLflow stores NaN as ``is_nan = 1`` and +/-inf as +/-1.797e308; both are
  turned back into the non-finite values they were.

``PATH`` may be a run directory, an experiment directory, ``mlruns/``, the project directory
holding ``mlruns/`` or ``mlflow.db``, or the database file. A store holding several runs needs
``--run ID`` (a run id, a unique prefix of one, or a run name); deleted runs are not offered.
Metrics are joined on step; a repeated (key, step) keeps the latest write by timestamp.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from polars.exceptions import PanicException

from ..runlog import RunData, RunLogError
from ..runlog.safeio import MAX_PARAM_BYTES, InputRefused, bound_config, is_regular, load_config_file, read_regular
from .scalars import ScalarLog, build_run, pick_run, to_wide

_SQLITE_MAGIC = b"SQLite format 3\x00"
_FLT_MAX = 1.7976931348623157e308
_STATUS = {1: "RUNNING", 2: "SCHEDULED", 3: "FINISHED", 4: "FAILED", 5: "KILLED"}


@dataclass(frozen=True)
class _Run:
    run_id: str
    name: str
    experiment: str
    status: str
    deleted: bool
    where: Path | None  # file store: the run directory


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


def _is_sqlite_store(path: Path) -> bool:
    if not is_regular(path):  # never open a FIFO or a device to look at it
        return False
    try:
        with open(path, "rb") as fh:
            if fh.read(16) != _SQLITE_MAGIC:
                return False
        with closing(_connect(path)) as con:
            names = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        return {"metrics", "runs"} <= names
    except (OSError, sqlite3.Error, RunLogError):
        return False


def _is_run_dir(d: Path) -> bool:
    return (d / "meta.yaml").is_file() and (d / "metrics").is_dir()


def _run_dirs(root: Path) -> list[Path]:
    """Run directories of a file store at ``root`` (the run, an experiment, mlruns/, or its parent)."""
    if _is_run_dir(root):
        return [root]
    for pattern in ("*", "*/*", "mlruns/*/*"):
        found = sorted(d for d in root.glob(pattern) if d.is_dir() and ".trash" not in d.parts and _is_run_dir(d))
        if found:
            return found
    return []


def _sqlite_file(path: Path) -> Path | None:
    if path.is_file():
        return path if _is_sqlite_store(path) else None
    if path.is_dir():
        for cand in sorted(path.glob("*.db")):
            if _is_sqlite_store(cand):
                return cand
    return None


def detect(path: Path) -> bool:
    """True for an MLflow file store (or part of one) or an MLflow SQLite database."""
    path = Path(path)
    if not path.exists():
        return False
    if path.is_file():
        return _is_sqlite_store(path)
    return bool(_run_dirs(path)) or _sqlite_file(path) is not None


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read(path: Path, run: str | None = None, kind: str | None = None) -> RunData:
    """Read one run of an MLflow store (see the module doc)."""
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path}: no such file or directory")
    if path.is_dir() and _run_dirs(path):
        runs = {r.run_id: r for r in (_file_run(d) for d in _run_dirs(path))}
        chosen = _choose(path, runs, run)
        log, config, notes = _read_file_run(chosen)
        where = f"MLflow file store run {chosen.run_id}"
        db = _sqlite_file(path)
        if db is not None:
            notes.append(f"read the file store; {db.name} here is another MLflow store (pass it as PATH to read it)")
    else:
        db = _sqlite_file(path)
        if db is None:
            if path.is_file():
                raise RunLogError(f"{path}: not an MLflow store (no SQLite database with metrics and runs tables)")
            raise RunLogError(f"{path}: no MLflow runs here (no mlruns/<experiment>/<run>/ folders, no mlflow.db)")
        with closing(_connect(db)) as con:
            runs = _sqlite_runs(db, con)
            chosen = _choose(path, runs, run)
            log, config, notes = _read_sqlite_run(db, con, chosen.run_id)
        where = f"MLflow SQLite store {db.name}, run {chosen.run_id}"
    if chosen.name:
        where += f" ({chosen.name})"
    if chosen.status and chosen.status != "FINISHED":
        notes.append(f"MLflow run status: {chosen.status}")
    n_points = sum(1 for k in log.keys if k != "_runtime")
    if n_points == 0:
        raise RunLogError(f"{chosen.where or path}: MLflow run {chosen.run_id} has no metrics")
    return build_run(path, to_wide(log), config, source="mlflow", run_id=chosen.run_id,
                     origin=f"{where}, {n_points} metric point(s)", notes=notes)


def run_ids(path: Path) -> list[str]:
    """Ids of the runs (not deleted) of the store at ``path``."""
    return list(run_labels(path))


def run_labels(path: Path) -> dict[str, str]:
    """Run id -> run name ('' when unnamed) of the runs (not deleted) at ``path``."""
    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path}: no such file or directory")
    if path.is_dir() and _run_dirs(path):
        runs = {r.run_id: r for r in (_file_run(d) for d in _run_dirs(path))}
    else:
        db = _sqlite_file(path)
        if db is None:
            raise RunLogError(f"{path}: no MLflow runs here (no mlruns/<experiment>/<run>/ folders, no mlflow.db)")
        with closing(_connect(db)) as con:
            runs = _sqlite_runs(db, con)
    return {k: r.name for k, r in runs.items() if not r.deleted}


def _choose(path: Path, runs: dict[str, _Run], run: str | None) -> _Run:
    live = {k: r for k, r in runs.items() if not r.deleted}
    if run is not None:
        by_name = [k for k, r in runs.items() if r.name == run]
        if run not in runs and len(by_name) == 1:
            run = by_name[0]
        return pick_run(path, runs, run, what="MLflow run")[1]
    if not runs:
        raise RunLogError(f"{path}: empty MLflow store (no runs)")
    if not live:
        raise RunLogError(f"{path}: every run in this MLflow store is deleted; pick one with --run")
    return pick_run(path, {k + (f" ({r.name})" if r.name else ""): r for k, r in live.items()}, None,
                    what="MLflow run")[1]


def _file_run(d: Path) -> _Run:
    try:
        meta = load_config_file(d / "meta.yaml", as_json=False, what="meta.yaml") or {}
    except InputRefused:
        raise  # a FIFO, an oversized file or a YAML bomb: refused, not guessed around
    except (OSError, RunLogError):
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    status = meta.get("status")
    return _Run(run_id=str(meta.get("run_id") or meta.get("run_uuid") or d.name),
                name=str(meta.get("run_name") or _tag(d, "mlflow.runName") or ""),
                experiment=str(meta.get("experiment_id", d.parent.name)),
                status=_STATUS.get(status, str(status or "")) if not isinstance(status, str) else status,
                deleted=meta.get("lifecycle_stage") == "deleted", where=d)


def _tag(d: Path, name: str) -> str | None:
    p = d / "tags" / name
    try:
        return read_regular(p, MAX_PARAM_BYTES, "tag").decode("utf-8").strip() if p.is_file() else None
    except (OSError, UnicodeDecodeError, RunLogError):
        return None


def _value(text: str) -> Any:
    """A param string -> int, float, bool or the string."""
    t = text.strip()
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(t.lower(), t)


def _read_file_run(r: _Run) -> tuple[ScalarLog, dict[str, Any], list[str]]:
    assert r.where is not None
    notes: list[str] = []
    frames: list[pl.DataFrame] = []
    metrics = r.where / "metrics"
    entries = sorted(metrics.rglob("*"))
    for f in entries:
        if not f.is_file():
            if not f.is_dir():
                notes.append(f"metrics/{f.relative_to(metrics).as_posix()}: not a regular file, skipped")
            continue
        key = f.relative_to(metrics).as_posix()
        frames.append(_metric_file(f, key, notes))
    long = (pl.concat(frames) if frames else
            pl.DataFrame(schema={"key": pl.String, "ts": pl.Int64, "value": pl.Float64, "step": pl.Int64}))
    log = _to_log(long)
    config: dict[str, Any] = {}
    params = r.where / "params"
    if params.is_dir():
        for f in sorted(p for p in params.rglob("*") if p.is_file()):
            try:
                config[f.relative_to(params).as_posix()] = _value(read_regular(f, MAX_PARAM_BYTES, "param").decode("utf-8"))
            except (OSError, UnicodeDecodeError, RunLogError) as exc:
                why = str(exc).removeprefix(f"{f}: ") if isinstance(exc, RunLogError) else "not UTF-8 text"
                notes.append(f"params/{f.name}: unreadable, ignored ({why})")
    return log, bound_config(config, params), notes


#: Steps and timestamps are Int64.
_I64 = 2**63


def _metric_file(f: Path, key: str, notes: list[str]) -> pl.DataFrame:
    raw = read_regular(f)
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        notes.append(f"metrics/{key}: dropped a last line cut short by an interrupted write")
    rows = []
    bad = out_of_range = 0
    for line in raw.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        try:
            ts, value = int(parts[0]), float(parts[1])
            step = int(parts[2]) if len(parts) > 2 else 0
        except (ValueError, IndexError):
            bad += 1
            continue
        if not (-_I64 <= ts < _I64 and -_I64 <= step < _I64):
            out_of_range += 1
            continue
        rows.append((key, ts, value, step))
    if bad:
        notes.append(f"metrics/{key}: {bad} unreadable line(s) skipped")
    if out_of_range:
        notes.append(f"metrics/{key}: {out_of_range} line(s) with a step or timestamp outside the 64-bit range skipped")
    return pl.DataFrame(rows, schema={"key": pl.String, "ts": pl.Int64, "value": pl.Float64, "step": pl.Int64},
                        orient="row")


def _to_log(long: pl.DataFrame) -> ScalarLog:
    """Points in write order (timestamp, then as stored), so the latest write of a step wins;
    plus ``_runtime`` (seconds since the first point, per step) from the timestamps (ms)."""
    long = long.with_row_index("_i").sort(["ts", "_i"])
    log = ScalarLog(keys=long.get_column("key").to_list(), steps=long.get_column("step").to_list(),
                    values=long.get_column("value").to_list())
    t0 = long.get_column("ts").min() if long.height else None
    if t0 is not None and "_runtime" not in set(log.keys):
        per_step = long.group_by("step").agg(pl.col("ts").max()).sort("step")
        log.keys.extend(["_runtime"] * per_step.height)
        log.steps.extend(per_step.get_column("step").to_list())
        # in floats: timestamps far apart must not overflow Int64
        log.values.extend(((per_step.get_column("ts").cast(pl.Float64) - float(t0)) / 1000.0).to_list())
    return log


def _connect(db: Path) -> sqlite3.Connection:
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        con.text_factory = lambda b: b.decode("utf-8", "replace")  # text that is not UTF-8 is still text
        return con
    except sqlite3.Error as exc:
        raise RunLogError(f"{db}: cannot open the database read-only ({exc})") from None


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"pragma table_info({table})")}


def _sqlite_runs(db: Path, con: sqlite3.Connection) -> dict[str, _Run]:
    try:
        cols = _columns(con, "runs")
        name = "name" if "name" in cols else "''"
        life = "lifecycle_stage" if "lifecycle_stage" in cols else "'active'"
        rows = con.execute(f"select run_uuid, {name}, experiment_id, status, {life} from runs "
                           "order by start_time").fetchall()
    except sqlite3.Error as exc:
        raise RunLogError(f"{db}: cannot read the runs table ({exc})") from None
    return {str(r[0]): _Run(run_id=str(r[0]), name=str(r[1] or ""), experiment=str(r[2]), status=str(r[3] or ""),
                            deleted=r[4] == "deleted", where=None) for r in rows}


def _read_sqlite_run(db: Path, con: sqlite3.Connection, run_id: str) -> tuple[ScalarLog, dict[str, Any], list[str]]:
    notes: list[str] = []
    try:
        cols = _columns(con, "metrics")
        is_nan = "is_nan" if "is_nan" in cols else "0"
        step = "step" if "step" in cols else "0"
        # Only what MLflow writes is read: integer steps (a step past the 64-bit range is stored as
        # a REAL), numeric values (a text value cannot be a metric), integer timestamps; other rows
        # are counted in a note. The checks run in SQLite, so the hot loop stays there.
        usable = (f"typeof({step}) in ('integer', 'null') and typeof(value) in ('integer', 'real', 'null')")
        rows = con.execute(f"select cast(key as text), case when typeof(timestamp) = 'integer' then timestamp end, "
                           f"value, {step}, case when typeof({is_nan}) = 'integer' then {is_nan} else 0 end "
                           f"from metrics where run_uuid = ? and {usable} order by timestamp, rowid", (run_id,)).fetchall()
        unusable = con.execute(f"select count(*) from metrics where run_uuid = ? and not ({usable})", (run_id,)).fetchone()[0]
        params = con.execute("select key, value from params where run_uuid = ?", (run_id,)).fetchall() \
            if "params" in {r[0] for r in con.execute("select name from sqlite_master where type='table'")} else []
    except sqlite3.Error as exc:
        raise RunLogError(f"{db}: cannot read the metrics of run {run_id} ({exc})") from None
    if unusable:
        notes.append(f"{unusable} metric row(s) skipped: a step that is not a 64-bit integer, or a value that is not a number")
    try:
        long = pl.DataFrame(rows, schema={"key": pl.String, "ts": pl.Int64, "value": pl.Float64, "step": pl.Int64,
                                          "is_nan": pl.Int64}, orient="row")
    except (Exception, PanicException) as exc:  # noqa: BLE001 - the SQL above admits only what fits
        raise RunLogError(f"{db}: cannot read the metrics of run {run_id} ({type(exc).__name__})") from None
    n_nan = int((long.get_column("is_nan") != 0).sum())
    n_inf = int((long.get_column("value").abs() >= _FLT_MAX).sum())
    long = long.with_columns(
        pl.when(pl.col("is_nan") != 0).then(float("nan"))
        .when(pl.col("value") >= _FLT_MAX).then(float("inf"))
        .when(pl.col("value") <= -_FLT_MAX).then(float("-inf"))
        .otherwise(pl.col("value").fill_null(float("nan"))).alias("value"),
        pl.col("step").fill_null(0),
    ).drop("is_nan")
    if n_nan or n_inf:
        notes.append(f"{n_nan} NaN and {n_inf} infinite value(s) restored from MLflow's encoding")
    return _to_log(long), bound_config({str(k): _value(str(v)) for k, v in params}, db), notes
