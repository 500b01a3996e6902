"""Read a run from wherever it was logged, into one ``RunData``.

Each source module exposes ``detect(path) -> bool`` and ``read(path, run=None) -> RunData`` and
raises ``RunLogError`` (one line naming the file) for anything unusable. ``load_run`` picks the
source (``auto``: the first whose ``detect`` says yes, in the order of ``SOURCES``).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ..runlog import RunData, RunLogError, is_run_dir, read_run
from ..runlog.safeio import check_regular

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


def load_run(path: str | Path, *, source: str = "auto", run: str | None = None) -> RunData:
    """Read the run at ``path``; ``source`` forces a reader, ``run`` picks one run in a store."""
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
