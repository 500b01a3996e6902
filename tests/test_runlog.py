"""The run directory format: what the writer promises and what the reader tolerates."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sae_report.runlog import (
    METRIC_COLUMNS,
    SCHEMA_VERSION,
    RunLogError,
    RunLogWriter,
    read_events,
    read_run,
)


def _rows(start: int, stop: int, **extra: float) -> dict[str, np.ndarray]:
    step = np.arange(start, stop)
    cols = {"step": step, "loss": 1.0 / (step + 1), "l0": np.full(len(step), 5.0)}
    for k, v in extra.items():
        cols[k] = np.full(len(step), v)
    return cols


def test_roundtrip_keeps_rows_columns_and_nonfinite(tmp_path: Path) -> None:
    with RunLogWriter(tmp_path, part_rows=300) as w:
        w.write_config({"run_id": "train_0000abcd", "d_sae": 64})
        for s in range(0, 1000, 100):
            cols = _rows(s, s + 100)
            cols["loss"] = np.where(cols["step"] == 505, np.nan, cols["loss"])
            cols["grad_norm"] = np.where(cols["step"] == 7, np.inf, 1.0)
            w.log_metrics(cols)
        w.log_event("resample", 500, n=3, features=[1, 2, 3])
    run = read_run(tmp_path)
    assert run.run_id == "train_0000abcd"
    assert run.config["schema_version"] == SCHEMA_VERSION
    assert run.metrics["step"].to_list() == list(range(1000))
    assert run.metrics.columns == list(METRIC_COLUMNS)
    row = run.metrics.filter(pl.col("step") == 505)
    assert math.isnan(row["loss"][0])
    assert math.isinf(run.metrics.filter(pl.col("step") == 7)["grad_norm"][0])
    # columns never logged read back as null, not NaN: NaN is reserved for real non-finite values
    assert run.metrics["mse"].null_count() == 1000
    assert [(e.kind, e.step, e.data["n"]) for e in run.events] == [("resample", 500, 3)]
    parts = sorted(p.name for p in (tmp_path / "metrics").iterdir())
    assert parts == ["part-000000.parquet", "part-000001.parquet", "part-000002.parquet", "part-000003.parquet"]


def test_partial_last_line_is_dropped_with_note(tmp_path: Path) -> None:
    w = RunLogWriter(tmp_path)
    w.log_metrics(_rows(0, 50))
    w._tail.write(b"50,1.0,0.02")  # what kill -9 in the middle of a write leaves
    w._tail.flush()
    run = read_run(tmp_path)
    assert run.metrics.height == 50
    assert any("cut short" in n for n in run.notes)


def test_resume_supersedes_rows_after_checkpoint(tmp_path: Path) -> None:
    with RunLogWriter(tmp_path) as w:
        w.log_metrics(_rows(0, 1000))
    with RunLogWriter(tmp_path) as w:  # resumed from a checkpoint at step 600
        w.log_event("resume", 600)
        cols = _rows(601, 800)
        cols["loss"] = np.full(199, 7.0)
        w.log_metrics(cols)
    run = read_run(tmp_path)
    steps = run.metrics["step"].to_list()
    assert steps == list(range(800)), "rows 800-999 of the abandoned stretch must be gone"
    assert run.metrics.filter(pl.col("step") > 600)["loss"].unique().to_list() == [7.0]


def test_parquet_and_csv_of_same_part_reads_parquet_once(tmp_path: Path) -> None:
    with RunLogWriter(tmp_path) as w:
        w.log_metrics(_rows(0, 10))
    # a crash between writing the parquet part and deleting its csv leaves both
    (tmp_path / "metrics" / "part-000000.csv").write_text("step,loss\n0,99\n")
    run = read_run(tmp_path)
    assert run.metrics.height == 10
    assert run.metrics["loss"][0] == 1.0


def test_events_tolerate_garbage_and_resume(tmp_path: Path) -> None:
    lines = [
        json.dumps({"step": 10, "kind": "resample", "n": 2}),
        "not json",
        json.dumps({"step": 90, "kind": "checkpoint"}),
        json.dumps({"step": 50, "kind": "resume"}),
        json.dumps({"step": 70, "kind": "l1_change", "value": 0.02}),
        '{"step": 80, "ki',
    ]
    (tmp_path / "events.ndjson").write_text("\n".join(lines))
    notes: list[str] = []
    events = read_events(tmp_path / "events.ndjson", notes)
    assert [(e.step, e.kind) for e in events] == [(10, "resample"), (50, "resume"), (70, "l1_change")]
    assert notes == ["events.ndjson: skipped 2 unreadable line(s)"]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "no such run directory"),
        (lambda p: p.mkdir(), "not a run directory (no metrics/ folder)"),
        (lambda p: (p / "metrics").mkdir(parents=True), "no metrics parts"),
        (lambda p: ((p / "metrics").mkdir(parents=True), (p / "metrics" / "part-000000.csv").write_text("")), "empty metrics file"),
        (lambda p: ((p / "metrics").mkdir(parents=True), (p / "metrics" / "part-000000.parquet").write_bytes(b"PAR1garbage")), "not a readable parquet part"),
    ],
)
def test_unusable_run_dirs_are_one_line_errors(tmp_path: Path, setup, message: str) -> None:
    run = tmp_path / "run"
    setup(run)
    with pytest.raises(RunLogError) as err:
        read_run(run)
    text = str(err.value)
    assert message in text and "\n" not in text and str(run) in text


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with RunLogWriter(tmp_path) as w:
        w.write_config({"schema_version": SCHEMA_VERSION + 1})
        w.log_metrics(_rows(0, 3))
    with pytest.raises(RunLogError, match="newer than this sae-report reads"):
        read_run(tmp_path)


def test_log_survives_kill_9_and_is_readable_while_running(tmp_path: Path) -> None:
    """A writer process killed with SIGKILL: everything flushed before the kill reads back."""
    script = textwrap.dedent(
        f"""
        import numpy as np, sys, time
        from sae_report.runlog import RunLogWriter
        w = RunLogWriter({str(tmp_path)!r}, part_rows=1000)
        s = 0
        while True:
            step = np.arange(s, s + 100)
            w.log_metrics({{"step": step, "loss": 1.0 / (step + 1)}})
            s += 100
            if s == 2500:
                print("ready", flush=True)
            time.sleep(0.001)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        live = read_run(tmp_path)  # readable while the writer is still going
        assert live.metrics.height >= 2500
    finally:
        proc.kill()
        proc.wait()
    run = read_run(tmp_path)
    steps = run.metrics["step"].to_numpy()
    assert steps[0] == 0 and np.all(np.diff(steps) == 1), "no gaps and nothing corrupted before the last flush"
    assert run.metrics.height >= live.metrics.height
    assert np.allclose(run.metrics["loss"].to_numpy(), 1.0 / (steps + 1))


def test_writer_rejects_unknown_columns(tmp_path: Path) -> None:
    w = RunLogWriter(tmp_path)
    with pytest.raises(ValueError, match="unknown metric columns"):
        w.log_metrics({"step": [1], "l0_pct": [3.0]})
    w.close()
    assert not os.listdir(tmp_path / "metrics")


def test_atomic_writes_respect_umask(tmp_path: Path) -> None:
    from sae_report.runlog import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644
