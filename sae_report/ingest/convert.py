"""Convert any log ``load_run`` reads into a sae-report run directory (``sae-report import``).

The run is written through ``RunLogWriter`` into a temporary folder beside ``--out``
(``.NAME.import-<pid>-<random>``) and renamed into place only when complete and read back
identical, so an interrupted import never leaves a half-written run: Ctrl-C and SIGTERM remove the
temporary folder, the swap of the old run for the new one is never cut in half, and a temporary
folder left by a killed import (its pid gone) is swept by the next import beside it. An existing
``--out`` is locked while it is replaced (``sae-report train`` writing it makes the import fail
with one line naming that process). A failed write (disk full, read-only) is one line and leaves
``--out`` as it was. The input is only read. Provenance (source, path, run id, sampled, the
reader's notes) goes into ``config.yaml`` under ``imported_from``.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import polars as pl

from ..runlog import LOCK_FILE, RunData, RunLogError, RunLogWriter, lock_folder, read_run
from . import load_run
from ..runlog.aliases import canonical_config
from ..runlog.safeio import remove_entry


class OutputExistsError(Exception):
    """``--out`` exists and is not empty, and replacing it was not asked for."""


class OutputInsideInputError(Exception):
    """``--out`` would be written inside the run being imported (or would replace it)."""


class ImportWriteError(Exception):
    """Writing ``--out`` failed (disk full, read-only, ...); ``--out`` is as it was. One line."""


class ImportInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM during ``import_all`` after some runs were written (``done``)."""

    def __init__(self, done: list["ImportResult"]) -> None:
        super().__init__(f"interrupted after {len(done)} run(s)")
        self.done = done


#: Signals that arrived while an old run was being swapped for a new one (handled after the swap).
_deferred: list[int] = []


@dataclass(frozen=True)
class ImportResult:
    """What ``import_run`` wrote."""

    run_dir: Path
    """The run directory written."""
    data: RunData
    """The run as read from the source (source, sampled, notes, metrics)."""
    rows: int
    """Metric rows written (one per step)."""
    columns: list[str]
    """Canonical metric columns written, ``step`` first."""


def import_run(path: str | Path, out: str | Path, *, source: str = "auto", run: str | None = None,
               force: bool = False, label: str | None = None) -> ImportResult:
    """Read ``path`` (any supported source) and write it as a run directory at ``out``.

    ``label`` replaces the run id in the written ``config.yaml`` (the source's id stays under
    ``imported_from``): ``import_all`` uses MLflow run names so comparisons show names, not uuids.

    Raises ``RunLogError`` for unusable input, ``OutputExistsError`` when ``out`` is a non-empty
    directory or a file and ``force`` is False, ``OutputInsideInputError`` when ``out`` lies inside
    ``path`` or contains it.
    """
    path, out = Path(path), Path(out)
    src, dst = path.resolve(), out.resolve()
    if path.exists() and (dst == src or dst in src.parents or (src in dst.parents and not _beside_store(src, dst))):
        raise OutputInsideInputError(f"{out}: --out must be outside the input {path} (the input is never modified)")
    if _holds_files(out) and not force:
        raise OutputExistsError(f"{out}: already exists; choose a new --out or add --force to replace it")
    data = load_run(path, source=source, run=run)
    existed = out.exists()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_imports(out)
        # An existing --out is locked while it is replaced: a trainer writing it refuses us, and
        # nothing else writes it until we are done (LockHeldError names the holder).
        lock = lock_folder(out) if out.is_dir() else None
        try:
            if _holds_files(out) and not force:  # checked again, now that nobody else writes it
                raise OutputExistsError(f"{out}: already exists; choose a new --out or add --force to replace it")
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-{os.getpid()}-", dir=out.parent))
            try:
                umask = os.umask(0)
                os.umask(umask)
                tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a run directory is not
                _write(tmp, data, path, label)
                back = read_run(tmp).metrics
                if not _same(back, data.metrics):
                    raise RunLogError(f"{out}: the written run does not read back identical to {path} (not written)")
                _replace(tmp, out)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        finally:
            if lock is not None:
                lock.release()
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        what = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        kept = f"{out} is unchanged" if existed else "nothing written"
        raise ImportWriteError(f"{out}: cannot write ({what}{where}); {kept}") from None
    return ImportResult(run_dir=out, data=data, rows=data.metrics.height, columns=list(data.metrics.columns))


def _holds_files(out: Path) -> bool:
    """``out`` is a file, or a folder holding anything but a lock file."""
    if not out.exists() and not out.is_symlink():
        return False
    if not out.is_dir() or out.is_symlink():
        return True
    return any(p.name != LOCK_FILE for p in out.iterdir())


_STALE_RE = re.compile(r"^\.(?P<name>.+)\.(?P<what>import|replaced)-(?P<pid>\d+)-[A-Za-z0-9_]+$")


def sweep_stale_imports(out: Path) -> list[Path]:
    """Remove the temporary folders that killed imports (``kill -9``) left beside ``out``: an
    ``.NAME.import-<pid>-*`` folder whose process is gone; an ``.NAME.replaced-<pid>-*`` folder
    (an old run moved aside just before the new one was renamed in) is put back when ``out`` is
    missing, else removed. Folders of live processes are left alone."""
    removed: list[Path] = []
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        m = _STALE_RE.match(p.name)
        if not m or m.group("name") != out.name or _alive(int(m.group("pid"))):
            continue
        if m.group("what") == "replaced" and not out.exists():
            try:
                os.replace(p, out)
            except OSError:
                pass
            continue
        if remove_entry(p):
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C / SIGTERM wait until the block is done (an old run swapped for a new one is never
    left half way); they are then in ``_deferred``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, frame: _deferred.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _beside_store(src: Path, dst: Path) -> bool:
    """True when ``src`` is a project folder holding the store in a subfolder (``wandb/``,
    ``mlruns/``, ``*.db``) and ``dst`` lies outside that subfolder: ``import . --out runs/x``."""
    if not src.is_dir():
        return False
    stores = [p for p in ("wandb", "mlruns") if (src / p).is_dir()]
    has_db = any(src.glob("*.db"))
    return bool(stores or has_db) and dst.relative_to(src).parts[0] not in stores


def list_runs(path: str | Path, *, source: str = "auto") -> tuple[str, list[str]]:
    """``(source, run ids)`` of the store at ``path``: the runs ``--run`` can pick. A single-run
    source (our run directory, a CSV/NDJSON/Parquet file) gives ``[""]``."""
    from . import SOURCES, _module
    from ..runlog import is_run_dir

    path = Path(path)
    if not path.exists():
        raise RunLogError(f"{path}: no such file or directory")
    if source == "auto":
        if is_run_dir(path):
            return "sae-report", [""]
        source = next((name for name in SOURCES if _safe_detect(name, path)), "")
        if not source:
            raise RunLogError(f"{path}: not a run directory or a metrics log this version reads "
                              "(sae-report run, CSV, NDJSON, Parquet, W&B, TensorBoard, MLflow)")
    if source not in SOURCES:
        return source, [""]
    mod = _module(source)
    return source, (list(mod.run_ids(path)) if hasattr(mod, "run_ids") else [""])


def _safe_detect(name: str, path: Path) -> bool:
    from . import _module

    try:
        return bool(_module(name).detect(path))
    except ImportError:
        return False


def import_all(path: str | Path, out_dir: str | Path, *, source: str = "auto",
               force: bool = False) -> list[ImportResult]:
    """Import every run of the store at ``path`` into ``out_dir/<run>/`` (a sweep logged to
    one W&B folder, MLflow store or TensorBoard log folder -> sibling run directories that
    ``compare`` and ``recommend`` read together). ``<run>`` is the run id, or the MLflow run name
    when every run has a distinct one. Stops at the first unusable run."""
    source, ids = list_runs(path, source=source)
    labels = {i: i for i in ids}
    if source == "mlflow":  # run names, when every run has one and they differ
        from .mlflow import run_labels

        names = run_labels(Path(path))
        if all(names.get(i) for i in ids) and len({names[i] for i in ids}) == len(ids):
            labels = {i: names[i] for i in ids}
    out_dir = Path(out_dir)
    results: list[ImportResult] = []
    _deferred.clear()
    try:
        for run_id in ids:
            if _deferred:  # a Ctrl-C / SIGTERM came while the last run was swapped in: stop here
                raise KeyboardInterrupt
            name = _dir_name(labels[run_id]) if run_id else Path(path).stem
            results.append(import_run(path, out_dir / name, source=source, run=run_id or None, force=force,
                                      label=name if run_id and labels[run_id] != run_id else None))
    except KeyboardInterrupt:
        raise ImportInterrupted(results) from None
    return results


def _dir_name(run_id: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in run_id).strip("._")
    return safe or "run"


def _same(back: pl.DataFrame, frame: pl.DataFrame) -> bool:
    """The read-back frame holds ``frame`` exactly (NaN as NaN, null as null); columns the source
    did not have are all null."""
    if any(c not in back.columns for c in frame.columns) or back.height != frame.height:
        return False
    extra = [c for c in back.columns if c not in frame.columns]
    if extra and back.select(pl.col(extra).is_not_null().any()).row(0) != (False,) * len(extra):
        return False
    return back.select(frame.columns).equals(frame, null_equal=True)


def _write(run_dir: Path, data: RunData, path: Path, label: str | None = None) -> None:
    frame = data.metrics
    # One part holds every row, so rows may be logged grouped by which metrics they carry.
    with RunLogWriter(run_dir, part_rows=frame.height + 1) as writer:
        # canonical keys filled in (learning_rate from lr, dead_window from a window in tokens, ...), so
        # the run reads back with them and the conversions are noted once, under imported_from
        config = canonical_config(dict(data.config))
        config.pop("schema_version", None)
        config["run_id"] = label or data.run_id
        config["imported_from"] = {
            "path": str(path.resolve()),
            "source": data.source,
            "run_id": data.run_id,
            "sampled": bool(data.sampled),
            "rows": frame.height,
            "notes": list(data.notes),
            "imported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        writer.write_config(config)
        _log_rows(writer, frame)
        for ev in data.events:
            writer.log_event(ev.kind, ev.step, **ev.data)
        steps = frame.get_column("step")
        summary = {**data.summary, "imported": True, "source": data.source, "sampled": bool(data.sampled),
                   "rows": frame.height}
        summary.setdefault("steps", int(steps.max()) if frame.height else 0)
        writer.write_summary(summary)


def _log_rows(writer: RunLogWriter, frame: pl.DataFrame) -> None:
    """Log rows grouped by the set of metrics they hold, so a metric not logged at a step stays
    null (the writer takes whole columns; a null inside one would become NaN)."""
    metrics = [c for c in frame.columns if c != "step"]
    if not metrics or frame.height == 0:
        if frame.height:
            writer.log_metrics({"step": frame.get_column("step").to_numpy()})
        return
    pattern = pl.concat_str([pl.col(c).is_null().cast(pl.UInt8).cast(pl.String) for c in metrics])
    for group in frame.with_columns(pattern.alias("_nulls")).partition_by("_nulls", maintain_order=True):
        mask = group.get_column("_nulls")[0]
        present = [c for c, bit in zip(metrics, mask) if bit == "0"]
        writer.log_metrics({c: group.get_column(c).to_numpy() for c in ["step", *present]})


def _replace(tmp: Path, out: Path) -> None:
    """Put ``tmp`` at ``out`` (the old ``out`` moved aside, then removed); signals wait until done."""
    with _signals_deferred():
        if not out.exists() and not out.is_symlink():
            try:
                os.rename(tmp, out)
            except OSError:
                if _holds_files(out):  # another import got there first
                    raise OutputExistsError(f"{out}: already exists; choose a new --out or add --force to replace it") from None
                raise
            return
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.replaced-{os.getpid()}-", dir=out.parent))
        old.rmdir()
        os.replace(out, old)
        os.replace(tmp, out)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
