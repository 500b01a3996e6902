"""Read a run from wherever it was logged, into one ``RunData``.

Each source module exposes ``detect(path) -> bool`` and ``read(path, run=None) -> RunData`` and
raises ``RunLogError`` (one line naming the file) for anything unusable. ``load_run`` picks the
source (``auto``: the first whose ``detect`` says yes, in the order of ``SOURCES``).

Metric names the aliases do not know (a TensorBoard tag ``loss/total``, your own ``my_l0``) are
mapped by the caller: ``load_run(path, column_map={"loss/total": "loss"})``, or every read inside
``with mapped_columns(["loss/total=loss", "my_l0=l0"]):`` (the commands' ``--map NAME=COLUMN``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Mapping, Sequence

from ..runlog import RunData, RunLogError, is_run_dir, read_run
from ..runlog.safeio import check_regular
from ..runlog.aliases import ColumnMapError, mapped_columns, parse_column_map

__all__ = ["SOURCES", "ColumnMapError", "load_run", "mapped_columns", "parse_column_map"]

#: source name -> module (relative to this package) that reads it, in detection order.
SOURCES: dict[str, str] = {
    "wandb": ".wandb",
    "tensorboard": ".tensorboard",
    "mlflow": ".mlflow",
    "csv": ".tables",
    "ndjson": ".tables",
    "parquet": ".tables",
}


def _module(name: str):
    return importlib.import_module(SOURCES[name], __name__)


def load_run(path: str | Path, *, source: str = "auto", run: str | None = None,
             column_map: Mapping[str, str] | Sequence[str] | None = None) -> RunData:
    """Read the run at ``path``; ``source`` forces a reader, ``run`` picks one run in a store,
    ``column_map`` names metrics the aliases do not know (``{"loss/total": "loss"}`` or
    ``["loss/total=loss"]``; ``ColumnMapError`` when malformed)."""
    if column_map:
        with mapped_columns(column_map):
            return load_run(path, source=source, run=run)
    path = Path(path)
    if not path.exists():
        if os.path.islink(path):
            check_regular(path)  # a broken symbolic link or a loop, said as such
        raise RunLogError(f"{path}: no such file or directory")
    if not path.is_dir():
        check_regular(path)  # a FIFO or a device is refused before any reader opens it
    if source in ("auto", "sae-report") and is_run_dir(path):
        return read_run(path)
    if source == "sae-report":
        return read_run(path)
    if source != "auto":
        if source not in SOURCES:
            raise RunLogError(f"{path}: unknown source {source!r} (choose from sae-report, {', '.join(SOURCES)})")
        return _module(source).read(path, run=run, kind=source)
    for name in SOURCES:
        try:
            mod = _module(name)
        except ImportError:
            continue
        if mod.detect(path):
            return mod.read(path, run=run, kind=None)
    raise RunLogError(f"{path}: not a run directory or a metrics log this version reads "
                      "(sae-report run, CSV, NDJSON, Parquet, W&B, TensorBoard, MLflow)")
