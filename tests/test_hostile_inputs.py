"""Hostile and odd inputs through the CLI (issue 11, reader side): YAML bombs, special files, huge
or broken files, odd steps. Each case ends in exit 2 with the exact one-line error, or exit 0 with
an analysis and a note saying what was worked around; never a hang, a traceback or a blow-up."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from sae_report.cli import main
from sae_report.runlog import extras, reader, safeio

INGEST = Path(__file__).parent / "fixtures" / "ingest"

# 478 bytes: ten levels of nine aliases each, 9^10 (3.5 billion) strings once expanded
LAUGHS = "\n".join(['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
                   + [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]) + "\n"
# the same through merge keys: every level merges the previous one nine times (older PyYAML releases
# copy every merged pair, 9^9 of them; newer ones keep one pair per key; the bound counts merged
# pairs as expanded, so it is refused with either)
MERGE_BOMB = "\n".join(["m0: &m0 {k0: 1, k1: 2, k2: 3, k3: 4, k4: 5, k5: 6, k6: 7, k7: 8, k8: 9}"]
                       + [f"m{i}: &m{i} {{<<: [" + ", ".join([f"*m{i - 1}"] * 9) + f"], own{i}: 1}}" for i in range(1, 10)]) + "\n"
EXPANDS = "config expands to more than 100,000 values (YAML aliases/merge keys resolved); refused"
FIFO = "not a regular file (a FIFO); only regular files are read"


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fail (instead of hanging the suite) when a read blocks, e.g. on a FIFO."""
    def fire(signum, frame):  # noqa: ARG001
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _cli(*args: object, seconds: int = 60):
    with _deadline(seconds):
        return CliRunner().invoke(main, [str(a) for a in args])


def _analyze(path: Path, tmp_path: Path, *extra: object):
    return _cli("analyze", path, "--json", "--format", "json", "--no-siblings", "--out", tmp_path / "report", *extra)


def _error(res, text: str) -> None:
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    assert (res.exit_code, res.stderr) == (2, f"Error: {text}\n"), res.output


def _notes(res) -> list[str]:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["run"]["notes"]


def _rows(n: int = 200, start: int = 1) -> str:
    return "step,loss,l0_frac,dead_frac\n" + "".join(
        f"{s},{1 / (abs(s) + 2):.6g},{0.5 / (1 + abs(s)) ** 0.3:.6g},0.01\n" for s in range(start, start + n))


def _run_dir(root: Path, name: str = "run", config: str = "run_id: r1\nd_sae: 100\ntarget_l0: 0.05\n") -> Path:
    run = root / name
    (run / "metrics").mkdir(parents=True)
    (run / "metrics" / "part-000000.csv").write_text(_rows())
    (run / "config.yaml").write_text(config)
    return run


def _table(root: Path, config: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "metrics.csv").write_text(_rows())
    if config is not None:
        (root / "config.yaml").write_text(config)
    return root / "metrics.csv"


# --------------------------------------------------------------------------------------------
# 1. Billion laughs and other config bombs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bomb", [LAUGHS, MERGE_BOMB], ids=["aliases", "merge-keys"])
def test_yaml_bomb_in_a_run_directory_is_refused_fast(tmp_path: Path, bomb: str) -> None:
    assert len(bomb) < 1000
    run = _run_dir(tmp_path, config=bomb)
    t0 = time.perf_counter()
    _error(_analyze(run, tmp_path), f"{run / 'config.yaml'}: {EXPANDS}")
    assert time.perf_counter() - t0 < 10


def test_yaml_bomb_beside_a_metrics_csv_is_refused_by_analyze_and_import(tmp_path: Path) -> None:
    csv = _table(tmp_path / "log", LAUGHS)
    _error(_analyze(csv, tmp_path), f"{tmp_path / 'log' / 'config.yaml'}: {EXPANDS}")
    _error(_cli("import", csv, "--out", tmp_path / "imported"), f"{tmp_path / 'log' / 'config.yaml'}: {EXPANDS}")
    assert not (tmp_path / "imported").exists()


def test_yaml_bomb_as_a_wandb_export_config_and_mlflow_meta_is_refused(tmp_path: Path) -> None:
    export = tmp_path / "wb" / "history.csv"
    export.parent.mkdir()
    export.write_text("_step,_runtime,losses/overall_loss,metrics/l0\n" + "".join(f"{s},{s},{1 / s},{5}\n" for s in range(1, 60)))
    (export.parent / "config.yaml").write_text(LAUGHS)
    _error(_analyze(export, tmp_path, "--source", "wandb"), f"{export.parent / 'config.yaml'}: {EXPANDS}")
    mlruns = tmp_path / "mlruns"
    shutil.copytree(INGEST / "mlruns", mlruns)
    meta = next(mlruns.glob("*/*/meta.yaml"))
    meta.write_text(LAUGHS)
    _error(_analyze(mlruns, tmp_path), f"{meta}: meta.yaml {EXPANDS.removeprefix('config ')}")


def test_recursive_alias_and_deep_nesting_are_refused(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "recursive", config="run_id: r\nloop: &x [1, *x]\n")
    _error(_analyze(run, tmp_path),
           f"{run / 'config.yaml'}: config a YAML alias refers to a node that contains it (a recursive structure); refused")
    for depth in (100, 5000):  # past the bound, and past Python's recursion limit
        run = _run_dir(tmp_path, f"deep{depth}", config="a: " + "[" * depth + "]" * depth + "\n")
        _error(_analyze(run, tmp_path), f"{run / 'config.yaml'}: config nested more than 64 levels deep; refused")
    csv = _table(tmp_path / "json")
    (csv.parent / "config.json").write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    _error(_analyze(csv, tmp_path), f"{csv.parent / 'config.json'}: config nested more than 64 levels deep; refused")


def test_oversized_config_is_refused_before_it_is_read(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    (run / "config.yaml").write_text("run_id: r1\nblob: '" + "x" * (17 << 20) + "'\n")
    _error(_analyze(run, tmp_path),
           f"{run / 'config.yaml'}: 17 MiB, more than the 16 MiB a config may be (files read whole are bounded)")


def test_a_config_with_a_few_aliases_and_dates_still_reads(tmp_path: Path) -> None:
    config = ("run_id: r1\nd_sae: 100\nbase: &b {lr: 0.001, l1: 0.05}\nstage1: *b\nstage2: {<<: *b, lr: 0.01}\n"
              "started_at: 2024-01-02 03:04:05\n2: two\n")
    run = _run_dir(tmp_path, config=config)
    res = _analyze(run, tmp_path)
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.stdout)["run"]["config"]
    assert cfg["stage1"] == {"lr": 0.001, "l1": 0.05} and cfg["stage2"] == {"lr": 0.01, "l1": 0.05}
    assert cfg["started_at"] == "2024-01-02T03:04:05" and cfg["2"] == "two"  # plain JSON data


def test_escaped_surrogates_in_a_config_or_log_still_make_a_report(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, config='run_id: r1\n"\\ud800\\udc00": pair\nlone: "\\udfff"\n')
    res = _cli("analyze", run, "--json", "--no-siblings", "--out", tmp_path / "report")  # md, html and json
    assert res.exit_code == 0, res.output
    cfg = json.loads(res.stdout)["run"]["config"]
    assert cfg["\U00010000"] == "pair" and cfg["lone"] == "\ufffd"
    log = tmp_path / "s.ndjson"
    log.write_text('{"step": 1, "loss": 1, "\\udfff": 2}\n{"step": 2, "loss": 0.5}\n')
    assert "columns not used: \ufffd" in _notes(_analyze(log, tmp_path))


# --------------------------------------------------------------------------------------------
# 3. Only regular files
# --------------------------------------------------------------------------------------------


def test_fifo_as_config_or_metrics_part_is_refused_without_blocking(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "cfg")
    (run / "config.yaml").unlink()
    os.mkfifo(run / "config.yaml")
    _error(_analyze(run, tmp_path), f"{run / 'config.yaml'}: {FIFO}")
    run = _run_dir(tmp_path, "part")
    os.mkfifo(run / "metrics" / "part-000001.csv")
    _error(_analyze(run, tmp_path), f"{run / 'metrics' / 'part-000001.csv'}: {FIFO}")
    run = _run_dir(tmp_path, "events")
    os.mkfifo(run / "events.ndjson")
    _error(_analyze(run, tmp_path), f"{run / 'events.ndjson'}: {FIFO}")


def test_fifo_as_a_metrics_file_or_beside_it_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "live.csv"
    os.mkfifo(fifo)
    _error(_analyze(fifo, tmp_path), f"{fifo}: {FIFO}")
    csv = _table(tmp_path / "log")
    os.mkfifo(csv.parent / "config.yaml")
    _error(_analyze(csv, tmp_path), f"{csv.parent / 'config.yaml'}: {FIFO}")


def test_device_files_behind_symlinks(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "zero")
    part = run / "metrics" / "part-000000.csv"
    part.unlink()
    part.symlink_to("/dev/zero")
    _error(_analyze(run, tmp_path), f"{part}: not a regular file (a character device); only regular files are read")
    run = _run_dir(tmp_path, "urandom")
    (run / "summary.json").symlink_to("/dev/urandom")
    (run / "stats").mkdir()
    (run / "stats" / "feature_freq.npy").symlink_to("/dev/zero")
    notes = _notes(_analyze(run, tmp_path))
    assert "summary.json: ignored: not a regular file (a character device); only regular files are read" in notes
    assert "feature_freq.npy: ignored: not a regular file (a character device); only regular files are read" in \
        [n.split("/", 1)[1] for n in notes if n.startswith("stats/")]


def test_directories_where_files_belong(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "cfg")
    (run / "config.yaml").unlink()
    (run / "config.yaml").mkdir()
    _error(_analyze(run, tmp_path), f"{run / 'config.yaml'}: not a regular file (a directory); only regular files are read")
    run = _run_dir(tmp_path, "part")
    (run / "metrics" / "part-000001.csv").mkdir()
    _error(_analyze(run, tmp_path),
           f"{run / 'metrics' / 'part-000001.csv'}: not a regular file (a directory); only regular files are read")
    run = _run_dir(tmp_path, "summary")
    (run / "summary.json").mkdir()
    assert "summary.json: ignored: not a regular file (a directory); only regular files are read" in \
        _notes(_analyze(run, tmp_path))


def test_files_read_whole_have_a_size_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "MAX_EVENTS_BYTES", 1000)
    monkeypatch.setattr(extras, "MAX_SUMMARY_BYTES", 1000)
    run = _run_dir(tmp_path, "events")
    (run / "events.ndjson").write_text('{"step": 1, "kind": "start"}\n' * 100)
    _error(_analyze(run, tmp_path),
           f"{run / 'events.ndjson'}: 2.8 KiB, more than the 1000 bytes an events file may be (files read whole are bounded)")
    run = _run_dir(tmp_path, "summary")
    (run / "summary.json").write_text(json.dumps({"status": "completed", "pad": "x" * 2000}))
    assert ("summary.json: ignored: 2 KiB, more than the 1000 bytes a summary may be (files read whole are bounded)"
            in _notes(_analyze(run, tmp_path)))


def test_a_huge_line_in_a_csv_part_is_refused_before_parsing(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    part = run / "metrics" / "part-000001.csv"
    with part.open("wb") as fh:  # a sparse 200 MB line of NUL bytes (parsing it took 1.5 GiB)
        fh.write(b"step,loss\n5000,1\n")
        fh.truncate(200 << 20)
        fh.seek(0, 2)
        fh.write(b"\n")
    _error(_analyze(run, tmp_path),
           f"{part}: line 3 is 209,715,183 bytes long, more than the 1,048,576 a metrics row may be (not a metrics CSV)")


def test_broken_symlink_config(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    (run / "config.yaml").unlink()
    (run / "config.yaml").symlink_to("elsewhere.yaml")
    _error(_analyze(run, tmp_path), f"{run / 'config.yaml'}: a broken symbolic link (to elsewhere.yaml)")


# --------------------------------------------------------------------------------------------
# 7. NDJSON with a new key on every line stays linear
# --------------------------------------------------------------------------------------------


def test_ndjson_with_a_new_key_on_every_line_is_linear_and_bounded(tmp_path: Path) -> None:
    log = tmp_path / "keys.ndjson"
    with log.open("w") as fh:
        for i in range(40_000):  # 1.3 MB, the issue's case (was past 300 s and 2.6 GiB)
            fh.write(json.dumps({"step": i, "loss": 1.0 / (i + 1), f"key_{i}": i}) + "\n")
    t0 = time.perf_counter()
    notes = _notes(_analyze(log, tmp_path))
    assert time.perf_counter() - t0 < 10
    assert ("keys.ndjson: 39,000 key(s) not read: a log keeps at most 1,000 metric columns and names 1,000 other keys"
            in notes)


def test_run_events_with_many_keys_and_resumes_are_linear(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    lines = []
    for i in range(40_000):
        lines.append(json.dumps({"step": i, "kind": "resume" if i % 2 else "note", f"k{i}": i}))
    (run / "events.ndjson").write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    assert _analyze(run, tmp_path).exit_code == 0
    assert time.perf_counter() - t0 < 10
    events = reader.read_events(run / "events.ndjson")
    assert len(events) == 40_000 and [e.step for e in events[:3]] == [0, 1, 2]


def test_events_resume_rule_in_one_pass(tmp_path: Path) -> None:
    p = tmp_path / "events.ndjson"
    rows = [(5, "a"), (9, "b"), (7, "resume"), (8, "c"), (12, "d"), (6, "resume"), (7, "e"), (20, "resume")]
    p.write_text("".join(json.dumps({"step": s, "kind": k}) + "\n" for s, k in rows))
    # resume@7 drops b(9); resume@6 drops resume@7 and c(8), d(12); later events stay
    assert [(e.step, e.kind) for e in reader.read_events(p)] == [(5, "a"), (6, "resume"), (7, "e"), (20, "resume")]


# --------------------------------------------------------------------------------------------
# 8. A note or a one-line error instead of a traceback
# --------------------------------------------------------------------------------------------


def test_mlflow_file_store_step_past_int64(tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    shutil.copytree(INGEST / "mlruns", mlruns)
    metric = next(p for p in mlruns.glob("*/*/metrics/losses/overall_loss"))
    with metric.open("a") as fh:
        fh.write("1700000000000 0.5 99999999999999999999\n")
    notes = _notes(_analyze(mlruns, tmp_path))
    assert "metrics/losses/overall_loss: 1 line(s) with a step or timestamp outside the 64-bit range skipped" in notes


def test_mlflow_sqlite_text_value_and_huge_step(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    shutil.copy2(INGEST / "mlflow.db", db)
    with sqlite3.connect(db) as con:
        (run_id,) = con.execute("select run_uuid from runs").fetchone()
        con.execute("insert into metrics (key, value, timestamp, run_uuid, step, is_nan) values "
                    "('losses/overall_loss', 'not a number', 5, ?, 2001, 0)", (run_id,))
        con.execute("insert into metrics (key, value, timestamp, run_uuid, step, is_nan) values "
                    "('losses/overall_loss', 0.5, 6, ?, 99999999999999999999, 0)", (run_id,))
    notes = _notes(_analyze(db, tmp_path))
    assert "2 metric row(s) skipped: a step that is not a 64-bit integer, or a value that is not a number" in notes


def test_symlink_loop_and_broken_symlink_as_parts(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "loop")
    part = run / "metrics" / "part-000001.csv"
    part.symlink_to(part.name)
    _error(_analyze(run, tmp_path), f"{part}: a symbolic link loop")
    run = _run_dir(tmp_path, "broken")
    part = run / "metrics" / "part-000001.csv"
    part.symlink_to("gone.csv")
    _error(_analyze(run, tmp_path), f"{part}: a broken symbolic link (to gone.csv)")


def test_string_steps_in_a_parquet_part(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "junk")
    (run / "metrics" / "part-000000.csv").unlink()
    part = run / "metrics" / "part-000000.parquet"
    pl.DataFrame({"step": ["1", "2", "x"], "loss": [1.0, 0.5, 0.2]}).write_parquet(part)
    _error(_analyze(run, tmp_path), f"{part}: step 'x' is not a number (1 row(s))")
    run = _run_dir(tmp_path, "text")
    (run / "metrics" / "part-000000.csv").unlink()
    pl.DataFrame({"step": [str(s) for s in range(1, 101)], "loss": [1.0 / s for s in range(1, 101)]}).write_parquet(
        run / "metrics" / "part-000000.parquet")
    assert _analyze(run, tmp_path).exit_code == 0  # whole numbers written as text are steps


def test_summary_json_that_is_not_an_object(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    for text, kind in (("[1, 2]", "array"), ('"done"', "string"), ("null", "null")):
        (run / "summary.json").write_text(text)
        assert f"summary.json: ignored: a JSON {kind}, not an object" in _notes(_analyze(run, tmp_path))
    (run / "summary.json").write_text("{not json")
    assert any(n.startswith("summary.json: ignored: not a readable summary (Expecting property name")
               for n in _notes(_analyze(run, tmp_path)))


def _npy(shape: tuple[int, ...], dtype: str, data: bytes) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


@pytest.mark.parametrize("content, note", [
    (b"", "an empty file"),
    (os.urandom(64).replace(b"\x93", b"x"), "not a .npy array file"),
    (_npy((10**12,), "<f8", b"\0" * 64), "1,000,000,000,000 values, more than the 33,554,432 a stats array may hold"),
    (_npy((1000,), "<f8", b"\0" * 64), "its header promises 8,000 bytes of data, the file holds 64"),
    (_npy((4, 4), "<f8", b"\0" * 128), "a 2-D array, expected 1-D"),
    (_npy((4,), "<U2", b"\0" * 32), "holds <U2 values, not real numbers"),
    (_npy((2,), "|O", b"\0" * 16), "holds object values, not real numbers"),
], ids=["empty", "garbage", "huge-shape", "short", "2-D", "text", "object"])
def test_unusable_feature_freq_is_a_note(tmp_path: Path, content: bytes, note: str) -> None:
    run = _run_dir(tmp_path)
    (run / "stats").mkdir()
    (run / "stats" / "feature_freq.npy").write_bytes(content)
    assert f"stats/feature_freq.npy: ignored: {note}" in _notes(_analyze(run, tmp_path))


def test_good_stats_still_read(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    (run / "stats").mkdir()
    np.save(run / "stats" / "feature_freq.npy", np.linspace(0, 0.1, 100))
    np.save(run / "stats" / "input_sample.npy", np.ones((8, 4), dtype=np.float32))
    (run / "stats" / "input_dims.csv").write_text("dim,mean,std,absmax,outlier\n0,0.1,1,2,false\n1,junk,1,40,true\n")
    data = reader.read_run(run)
    assert data.feature_freq.shape == (100,) and data.input_sample.shape == (8, 4)
    assert data.input_dims["mean"].to_list() == [0.1, None] and data.input_dims["outlier"].to_list() == [False, True]
    assert _analyze(run, tmp_path).exit_code == 0


# --------------------------------------------------------------------------------------------
# 9. Odd steps
# --------------------------------------------------------------------------------------------

FRACTIONAL = "step 0.5 is not a whole number (100 row(s)); steps count optimizer updates, so fractional steps are refused, not rounded"


def _half_steps() -> str:
    return "step,loss\n" + "".join(f"{i * 0.5},{1 / (i + 1)}\n" for i in range(200))


def test_fractional_steps_are_refused_everywhere(tmp_path: Path) -> None:
    csv = tmp_path / "log" / "metrics.csv"
    csv.parent.mkdir()
    csv.write_text(_half_steps())
    _error(_analyze(csv, tmp_path), f"{csv}: {FRACTIONAL}")
    run = _run_dir(tmp_path, "csvpart")
    (run / "metrics" / "part-000000.csv").write_text(_half_steps())
    _error(_analyze(run, tmp_path), f"{run / 'metrics' / 'part-000000.csv'}: {FRACTIONAL}")
    run = _run_dir(tmp_path, "parquetpart")
    (run / "metrics" / "part-000000.csv").unlink()
    part = run / "metrics" / "part-000000.parquet"
    pl.DataFrame({"step": [i * 0.5 for i in range(200)], "loss": [1.0] * 200}).write_parquet(part)
    _error(_analyze(run, tmp_path), f"{part}: {FRACTIONAL}")


def test_whole_steps_written_as_floats_are_steps(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, "csv")
    (run / "metrics" / "part-000000.csv").write_text("step,loss\n" + "".join(f"{s}.0,{1 / s}\n" for s in range(1, 101))
                                                     + "1.01e2,0.01\n")
    data = reader.read_run(run)
    assert data.metrics["step"].to_list() == list(range(1, 102))
    run = _run_dir(tmp_path, "parquet")
    (run / "metrics" / "part-000000.csv").unlink()
    pl.DataFrame({"step": [float(s) for s in range(1, 101)], "loss": [1.0] * 100}).write_parquet(
        run / "metrics" / "part-000000.parquet")
    assert reader.read_run(run).metrics["step"].to_list() == list(range(1, 101))
    assert _analyze(run, tmp_path).exit_code == 0


def test_steps_past_int64_are_refused(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    part = run / "metrics" / "part-000000.csv"
    part.write_text("step,loss\n1,0.5\n99999999999999999999,0.4\n")
    _error(_analyze(run, tmp_path), f"{part}: step 1e+20 is outside the 64-bit integer range")


def test_negative_steps_are_kept_with_a_note(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    (run / "metrics" / "part-000000.csv").write_text(_rows(200, start=-100))
    assert "100 row(s) with a negative step (from -100): kept, in step order" in _notes(_analyze(run, tmp_path))
    csv = tmp_path / "log" / "metrics.csv"
    csv.parent.mkdir()
    csv.write_text(_rows(200, start=-100))
    assert "100 row(s) with a negative step (from -100): kept, in step order" in _notes(_analyze(csv, tmp_path))


def test_boolean_and_datetime_steps_are_refused(tmp_path: Path) -> None:
    stamps = [datetime.datetime(2024, 1, 1, 0, 0, i) for i in range(50)]
    for name, steps, words in (("bool", [True, False] * 25, "boolean"), ("dt", stamps, "datetime"),
                               ("date", [d.date() for d in stamps], "date")):
        run = _run_dir(tmp_path, name)
        (run / "metrics" / "part-000000.csv").unlink()
        part = run / "metrics" / "part-000000.parquet"
        pl.DataFrame({"step": steps, "loss": [1.0] * 50}).write_parquet(part)
        _error(_analyze(run, tmp_path),
               f"{part}: the step column holds {words} values, not step numbers (whole numbers of optimizer updates)")
        table = tmp_path / f"{name}.parquet"
        pl.DataFrame({"step": steps, "loss": [1.0] * 50}).write_parquet(table)
        _error(_analyze(table, tmp_path),
               f"{table}: the step column 'step' holds {words} values, not step numbers (whole numbers of optimizer updates)")
    log = tmp_path / "bool.ndjson"
    log.write_text('{"step": 1, "loss": 1}\n{"step": true, "loss": 0.5}\n')
    _error(_analyze(log, tmp_path), f"{log}: line 2: step is true, a boolean, not a step number")


def test_odd_event_steps_are_skipped_with_a_note(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    (run / "events.ndjson").write_text(
        '{"step": 5, "kind": "resample", "n": 3}\n{"step": 5.5, "kind": "resample"}\n{"step": true, "kind": "end"}\n'
        '{"step": 1e30, "kind": "end"}\n{"step": "7", "kind": "checkpoint"}\n{"step": 8, "kind": 3}\n[1]\n')
    data = reader.read_run(run)
    assert [(e.step, e.kind) for e in data.events] == [(5, "resample"), (7, "checkpoint")]
    assert "events.ndjson: skipped 5 unreadable line(s)" in data.notes


def test_header_only_part_is_an_error_like_the_standalone_reader(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    (run / "metrics" / "part-000000.csv").write_text("step,loss\n")
    _error(_analyze(run, tmp_path), f"{run / 'metrics'}: only header lines, no rows")
    csv = tmp_path / "log" / "metrics.csv"
    csv.parent.mkdir()
    csv.write_text("step,loss\n")
    _error(_analyze(csv, tmp_path), f"{csv}: only a header line, no rows")
    (run / "metrics" / "part-000000.csv").write_text("step,loss\n,0.5\n,0.4\n")
    _error(_analyze(run, tmp_path), f"{run / 'metrics'}: no row has a step (2 row(s) without one)")


def test_limits_are_what_the_docs_say() -> None:
    assert (safeio.MAX_CONFIG_BYTES, safeio.MAX_SUMMARY_BYTES, safeio.MAX_EVENTS_BYTES, safeio.MAX_STATS_BYTES) == (
        16 << 20, 16 << 20, 256 << 20, 128 << 20)
    assert (safeio.MAX_CONFIG_VALUES, safeio.MAX_CONFIG_DEPTH) == (100_000, 64)


# --- found by the fuzz and the output tests, fixed outside the readers ---------------------------


def test_glob_characters_in_a_run_path_are_just_characters(tmp_path: Path) -> None:
    from sae_report.fixtures import write_run

    run = write_run(tmp_path / "we[ird] *run?", "clean", steps=2_000, rows=300).run_dir
    result = CliRunner().invoke(main, ["analyze", str(run), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "report" / "analysis.json").read_text())["run"]["rows"] == 287  # every row read


def test_nonsense_event_counts_and_summary_dates_still_give_a_full_report(tmp_path: Path) -> None:
    from sae_report.fixtures import write_run

    run = write_run(tmp_path, "clean", steps=2_000, rows=300).run_dir
    with (run / "events.ndjson").open("a") as f:
        f.write('{"step": 100, "kind": "resample", "n": NaN}\n{"step": 200, "kind": "lr_change", "from": true, "to": 1e308}\n')
    for ended in (1e300, 1e12, -5, True):
        (run / "summary.json").write_text(json.dumps({"status": "completed", "ended_at": ended}))
        result = CliRunner().invoke(main, ["analyze", str(run)])
        assert result.exit_code == 0, result.output
        assert (run / "report" / "report.html").is_file()


def test_a_dictionary_size_no_integer_column_holds_is_a_usage_error(tmp_path: Path) -> None:
    from sae_report.fixtures import write_run

    run = write_run(tmp_path, "clean", steps=2_000, rows=300).run_dir
    result = CliRunner().invoke(main, ["analyze", str(run), "--d-sae", str(10**30)])
    assert result.exit_code == 2
    assert "Invalid value for '--d-sae': 1000000000000000000000000000000 is not in the range 1<=x<=2147483648." in result.output
