"""W&B history exports: CSV or Parquet files with W&B's column names.

Two kinds:

- a **full history** export (``run.scan_history()`` / the run's history table saved as CSV or
  Parquet): ``_step``, ``_runtime``, ``_timestamp`` and one column per logged key, empty where a key
  was not logged at that step;
- a **UI panel** export ("Export panel data -> CSV"): ``Step`` and ``<run name> - <key>`` columns,
  each with ``__MIN``/``__MAX`` companions. W&B buckets the history for the chart, so each row is a
  bucket, not a logged step: the data is read as a *sample* (``RunData.sampled``) and the report
  says so. A panel export can hold several runs; ``--run NAME`` picks one.

``run.history()`` without arguments returns 500 sampled rows; an export of exactly 500 rows at
uneven step gaps is read as sampled too, with a note saying why.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import polars as pl

from ..runlog import RunData, RunLogError
from ..runlog.safeio import InputRefused, check_regular, load_config_file, read_regular
from .scalars import Wide, build_run, cadence_notes, pick_run

SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
_WANDB_MARKERS = ("_step", "_runtime", "_timestamp")
_BUCKET = ("__MIN", "__MAX")
_SEP = " - "


def header(path: Path) -> list[str]:
    """Column names of a CSV/TSV or Parquet file (reads the header only); [] when unreadable."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return list(pl.read_parquet_schema(path))
        with open(path, "rb") as fh:
            line = fh.readline(1 << 20).decode("utf-8-sig", "replace").rstrip("\r\n")
    except Exception:  # noqa: BLE001 - detection never raises
        return []
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    return [c.strip().strip('"') for c in line.split(sep)] if line else []


def is_export(path: Path) -> bool:
    """True for a CSV/Parquet file whose columns are W&B's (``_step``, or bucketed UI columns)."""
    path = Path(path)
    if not (path.is_file() and path.suffix.lower() in SUFFIXES):
        return False
    cols = header(path)
    if any(c in _WANDB_MARKERS for c in cols):
        return True
    return any(c.endswith(_BUCKET) for c in cols) and any(_SEP in c for c in cols)


def _read_frame(path: Path, notes: list[str]) -> pl.DataFrame:
    """All columns as strings (CSV) or as stored (Parquet); a cut-short last CSV line is dropped."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            check_regular(path)
            return pl.read_parquet(path, glob=False)
        raw = read_regular(path)
        if raw and not raw.endswith(b"\n"):
            cut = raw.rfind(b"\n")
            if cut >= 0 and raw.count(b"\n") >= 1:
                raw = raw[: cut + 1]
                notes.append(f"{path.name}: dropped a last line cut short by an interrupted write")
        if not raw.strip():
            raise RunLogError(f"{path}: empty file (no header line)")
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return pl.read_csv(io.BytesIO(raw), infer_schema_length=0, separator=sep)
    except RunLogError:
        raise
    except Exception as exc:  # noqa: BLE001 - polars raises several types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RunLogError(f"{path}: not a readable W&B export ({first})") from None


def read_export(path: Path, run: str | None = None) -> RunData:
    """Read a W&B history export (full or bucketed UI; see the module doc)."""
    path = Path(path)
    notes: list[str] = []
    frame = _read_frame(path, notes)
    if frame.height == 0:
        raise RunLogError(f"{path}: W&B export with a header but no rows")
    bucketed = [c for c in frame.columns if c.endswith(_BUCKET)]
    run_id = path.stem
    if any(_SEP in c for c in frame.columns if c not in bucketed):
        frame, run_id = _one_ui_run(path, frame, run)
    sampled = bool(bucketed)
    kind = "W&B UI panel export (bucketed: __MIN/__MAX columns)" if sampled else "W&B history export"
    if bucketed:
        notes.append(f"{len(bucketed)} bucket min/max column(s) not used; each row stands for a bucket "
                     "of logged steps (W&B's chart sampling), so short spikes and the exact step of events "
                     "can be lost")
        frame = frame.drop([c for c in frame.columns if c.endswith(_BUCKET)])
    step_col = next((c for c in ("_step", "Step", "step", "global_step") if c in frame.columns), None)
    if step_col is None and sampled:
        shared = [c for c in frame.columns if _SEP not in c]
        raise RunLogError(f"{path}: no Step column (the panel's x axis was {shared[0] if shared else 'not a step'}); "
                          "export the panel with Step on the x axis")
    if step_col is not None and step_col != "step":
        if "step" in frame.columns:  # a key the user logged as "step": W&B's own step wins
            frame = frame.rename({"step": "step (logged key)"})
            notes.append(f"a logged key named 'step' is not used; W&B's {step_col} is the step")
        frame = frame.rename({step_col: "step"})
    if not sampled and _looks_like_history_sample(frame):
        sampled = True
        notes.append("exactly 500 rows at uneven step gaps: this looks like run.history()'s default "
                     "500-row sample; export with run.scan_history() for every step")
    unused = [c for c in frame.columns if c in ("_timestamp", "", "index") or c.startswith(("_wandb", "Unnamed:"))]
    frame = frame.drop(unused)
    config = sibling_config(path, notes)
    wide = Wide(frame=frame, notes=cadence_notes(frame.with_columns(
        pl.col(c).cast(pl.Float64, strict=False) if frame.schema[c] == pl.String else pl.col(c) for c in frame.columns)))
    origin = f"{kind} {path.name}" + (f", run {run_id}" if run_id != path.stem else "")
    return build_run(path, wide, config, source="wandb", run_id=run_id, origin=origin,
                     sampled=sampled, notes=notes)


def sibling_config(path: Path, notes: list[str]) -> dict[str, Any]:
    """The config next to an export: W&B's ``config.yaml`` (``{key: {value: ...}}`` entries, as
    downloaded from the run's Files tab) or a plain mapping (``config.yaml`` / ``config.json``);
    else {}."""
    for cand in (path.with_name(f"{path.stem}.config.yaml"), path.with_name("config.yaml"),
                 path.with_name("config.json")):
        if not os.path.lexists(cand):
            continue
        try:
            data = load_config_file(cand, as_json=False)  # JSON is YAML too
        except InputRefused:
            raise  # a FIFO, an oversized file or a YAML bomb: refused, not ignored
        except (OSError, RunLogError):
            notes.append(f"{cand.name} beside the export is unreadable: ignored")
            continue
        if not isinstance(data, dict):
            continue
        entries = {k: v for k, v in data.items() if k not in ("wandb_version", "_wandb")}
        if "wandb_version" in data or (entries and all(isinstance(v, dict) and "value" in v for v in entries.values())):
            notes.append(f"config from {cand.name} (W&B layout) beside the export")
            return {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in entries.items()}
        notes.append(f"config from {cand.name} beside the export")
        return entries
    return {}


def export_run_ids(path: Path) -> list[str]:
    """Run names of a UI panel export (``<run> - <key>`` columns); the file stem otherwise."""
    names = list(dict.fromkeys(c.rsplit(_SEP, 1)[0] for c in header(path)
                               if _SEP in c and not c.endswith(_BUCKET)))
    return names or [Path(path).stem]


def _one_ui_run(path: Path, frame: pl.DataFrame, run: str | None) -> tuple[pl.DataFrame, str]:
    """Keep the step column and one run's ``<run> - <key>`` columns, renamed to ``<key>``."""
    by_run: dict[str, list[str]] = {}
    for c in frame.columns:
        if _SEP in c:
            name = c.rsplit(_SEP, 1)[0]
            by_run.setdefault(name, []).append(c)
    run_id, cols = pick_run(path, by_run, run, what="W&B run")
    shared = [c for c in frame.columns if _SEP not in c]
    renamed = {c: c.rsplit(_SEP, 1)[1] for c in cols}
    return frame.select(shared + cols).rename(renamed), run_id


def _looks_like_history_sample(frame: pl.DataFrame) -> bool:
    if frame.height != 500 or "step" not in frame.columns:
        return False
    steps = frame.get_column("step").cast(pl.Float64, strict=False).drop_nulls().sort()
    gaps = steps.diff().drop_nulls()
    return gaps.len() > 10 and gaps.n_unique() > 1
