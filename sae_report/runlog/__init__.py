"""The run directory: one schema, shared by the writer (the trainer) and the reader (the analyzer).

Layout (``schema_version`` 1; the README's "Run directory format" documents it for other tools)::

    RUN/
      config.yaml          fully resolved config + provenance (written once, atomically)
      metrics/
        part-000000.parquet  immutable parts, each written to a temp file then renamed
        part-000001.csv      the growing tail: append-only CSV with a header line
      events.ndjson        one JSON object per line, each with "step" and "kind"
      summary.json         written at the end (status, steps, tokens, duration)
      stats/               feature_freq.npy, input_sample.npy, input_dims.csv
      checkpoints/step_000001000/  sae.safetensors + config.json (+ optimizer/state)

Rules the reader applies (and other writers may rely on):
- Parts are read in name order. A later part supersedes every earlier row at or after its first
  step (this is how a resumed run replaces the rows logged after its checkpoint). Within a part a
  repeated step keeps the later row.
- A part that exists both as ``.parquet`` and ``.csv`` (a crash between the two) is read from the
  parquet file.
- A CSV line without its final newline (a write cut short by ``kill -9``) is dropped with a note.
- ``nan``/``inf`` in any float column are kept: they are signals, not missing values.
- A row without a step (an empty ``step`` cell) cannot be placed: it is dropped with a note.

The metrics come back with each column in one contiguous buffer (``columns.ColumnBuffers``), so
the analyzer's numpy views of them cost no copy.

This module imports no torch: the analyzer uses it without the training extra.
"""

from .reader import (
    CsvRead,
    Event,
    RunData,
    is_run_dir,
    read_config,
    read_events,
    read_metrics_csv,
    read_metrics_dir,
    read_parquet_checked,
    read_run,
    supersede_and_dedup,
)
from .schema import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    EVENT_KINDS,
    EVENTS_FILE,
    INTERVENTION_KINDS,
    METRIC_COLUMNS,
    METRICS_DIR,
    SCHEMA_VERSION,
    STATS_DIR,
    SUMMARY_FILE,
    RunLogError,
    atomic_write_bytes,
    atomic_write_text,
    finite_float,
    to_jsonable,
)
from .writer import RunLogWriter
from .lock import LOCK_FILE, FolderLock, LockHeldError, lock_folder  # noqa: F401 (writers: one at a time)

__all__ = [
    "CHECKPOINTS_DIR", "CONFIG_FILE", "EVENT_KINDS", "EVENTS_FILE", "INTERVENTION_KINDS", "METRIC_COLUMNS",
    "METRICS_DIR", "SCHEMA_VERSION", "STATS_DIR", "SUMMARY_FILE", "CsvRead", "Event", "RunData", "RunLogError",
    "RunLogWriter", "atomic_write_bytes", "atomic_write_text", "finite_float", "is_run_dir", "read_config",
    "read_events", "read_metrics_csv", "read_metrics_dir", "read_parquet_checked", "read_run",
    "supersede_and_dedup", "to_jsonable",
]
