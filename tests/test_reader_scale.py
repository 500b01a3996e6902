"""Reading metrics into contiguous columns: the run-format rules (supersede, last row wins,
nulls, nan/inf) against a plain-Python reference, on random parts and at scale, through both the
collect-at-once and the batch-by-batch paths; and the table readers against the text-then-cast
rule they replace."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from sae_report.ingest import tables
from sae_report.runlog.aliases import _to_float, canonicalize
from sae_report.runlog import columns
from sae_report.runlog import read_metrics_dir, read_run, supersede_and_dedup

METRICS = ("loss", "l0")


def _cell(v: float | None) -> str:
    if v is None:
        return ""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def _write_parts(metrics: Path, parts: list[tuple[str, list[str], list[dict]]]) -> None:
    """parts: (kind, metric columns, rows); a row is {"step": int | None, metric: float | None}."""
    metrics.mkdir(parents=True)
    for i, (kind, cols, rows) in enumerate(parts):
        names = ["step", *cols]
        if kind == "parquet":
            frame = pl.DataFrame({c: [r.get(c) for r in rows] for c in names},
                                 schema={c: (pl.Int64 if c == "step" else pl.Float64) for c in names})
            frame.write_parquet(metrics / f"part-{i:06d}.parquet", compression="zstd", statistics=True)
        else:
            text = ",".join(names) + "\n" + "".join(
                ",".join("" if c == "step" and r["step"] is None else str(r["step"]) if c == "step" else _cell(r.get(c))
                         for c in names) + "\n" for r in rows)
            (metrics / f"part-{i:06d}.csv").write_text(text)


def _reference(parts: list[tuple[str, list[str], list[dict]]]) -> tuple[list[int], dict[str, list], int, int]:
    """The README's rules in plain Python: (steps, columns, rows without a step, rows superseded)."""
    firsts = [min((r["step"] for r in rows if r["step"] is not None), default=None) for _, _, rows in parts]
    present = {c for _, cols, _ in parts for c in cols}
    kept: dict[int, dict] = {}
    no_step = superseded = 0
    for i, (_, cols, rows) in enumerate(parts):
        later = [f for f in firsts[i + 1:] if f is not None]
        cutoff = min(later) if later else None
        for r in rows:
            if r["step"] is None:
                no_step += 1
            elif cutoff is not None and r["step"] >= cutoff:
                superseded += 1
            else:
                superseded += r["step"] in kept  # a repeated step: the earlier row goes
                kept[r["step"]] = {c: r.get(c) for c in cols}  # the whole row: absent columns are null
    steps = sorted(kept)
    return steps, {c: [kept[s].get(c) for s in steps] for c in sorted(present)}, no_step, superseded


def _same(a: list, b: list) -> bool:
    return len(a) == len(b) and all((x is None and y is None) or (x is not None and y is not None and (
        x == y or (math.isnan(x) and math.isnan(y)))) for x, y in zip(a, b))


_value = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64), st.just(float("nan")))
_row = st.fixed_dictionaries({"step": st.one_of(st.integers(0, 40), st.integers(0, 40), st.none())},
                             optional={"loss": _value, "l0": _value})
_part = st.tuples(st.sampled_from(["parquet", "csv"]), st.lists(st.sampled_from(METRICS), unique=True),
                  st.lists(_row, min_size=0, max_size=25))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(_part, min_size=1, max_size=5), eager_rows=st.sampled_from([columns.EAGER_ROWS, 3]))
def test_random_parts_follow_the_run_format_rules(parts, eager_rows: int) -> None:
    # a CSV part with no rows among several is a tail just opened: skipped, as the reader does
    # (a CSV part always has a metric column: a row of one empty step cell would be a blank line)
    parts = [(k, cols or (["loss"] if k == "csv" else []), rows) for k, cols, rows in parts]
    parts = [(k, cols, [{c: v for c, v in r.items() if c == "step" or c in cols} for r in rows])
             for k, cols, rows in parts]
    parts = [p for p in parts if not (p[0] == "csv" and not p[2] and len(parts) > 1)] or parts[:1]
    old = columns.EAGER_ROWS
    columns.EAGER_ROWS = eager_rows
    try:
        with tempfile.TemporaryDirectory() as d:
            _write_parts(Path(d) / "metrics", parts)
            notes: list[str] = []
            frame = read_metrics_dir(Path(d) / "metrics", notes)
    finally:
        columns.EAGER_ROWS = old
    steps, cols, no_step, superseded = _reference(parts)
    assert frame["step"].to_list() == steps
    assert frame["step"].null_count() == 0 and frame["step"].flags["SORTED_ASC"]
    for c, values in cols.items():
        assert _same(frame[c].to_list(), values), c
    assert set(frame.columns) == {"step", *cols}
    assert (f"{no_step} row(s) without a step dropped" in notes) == bool(no_step)
    assert (f"{superseded} rows superseded by later writes (resume or repeated steps)" in notes) == bool(superseded)
    assert all(n == 1 for n in frame.n_chunks("all"))


def _contiguous(s: pl.Series) -> bool:
    """One chunk, and numpy views of it share memory (no copy) when it has no nulls."""
    return s.n_chunks() == 1 and (s.null_count() > 0 or np.shares_memory(s.to_numpy(), s.to_numpy()))


@pytest.mark.parametrize("eager_rows", [columns.EAGER_ROWS, 5_000])
def test_many_parts_with_a_resume_and_repeats_at_scale(tmp_path: Path, eager_rows: int, monkeypatch) -> None:
    """20 parquet parts of 20K rows and a CSV tail; a resume at part 12 rewinds 30K steps; part 5
    repeats a stretch of steps (the later rows win); the grad_norm column was never logged."""
    monkeypatch.setattr(columns, "EAGER_ROWS", eager_rows)
    rng = np.random.default_rng(0)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    frames = []
    start = 0
    for i in range(21):
        if i == 12:
            start -= 30_000  # resumed from an earlier checkpoint
        step = np.arange(start, start + 20_000)
        if i == 5:
            step[15_000:] -= 1_000  # a stretch logged twice within one part
        loss = rng.normal(size=len(step))
        loss[rng.integers(0, len(step), 50)] = np.nan
        loss[rng.integers(0, len(step), 50)] = np.inf
        frame = pl.DataFrame({"step": step, "loss": loss, "l0": rng.uniform(1, 100, len(step)),
                              "grad_norm": pl.Series([None] * len(step), dtype=pl.Float64)})
        if i < 20:
            frame.write_parquet(metrics / f"part-{i:06d}.parquet", compression="zstd", statistics=True)
        else:
            frame.write_csv(metrics / f"part-{i:06d}.csv", float_precision=None)
        frames.append(frame.with_columns(pl.lit(i, dtype=pl.Int32).alias("_part"),
                                         pl.int_range(pl.len()).alias("_row")))
        start = int(step.max()) + 1
    expected = supersede_and_dedup(pl.concat(frames))  # the previous implementation, as reference
    run = read_run(tmp_path)
    assert_frame_equal(run.metrics.select(expected.columns), expected)
    assert run.metrics.height == expected.height < 21 * 20_000
    assert any("rows superseded by later writes" in n for n in run.notes)
    assert run.metrics["grad_norm"].null_count() == run.metrics.height
    assert all(_contiguous(run.metrics[c]) for c in run.metrics.columns)


def test_usual_log_is_read_without_dropping_or_copying(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    for i in range(3):
        pl.DataFrame({"step": np.arange(i * 1000, (i + 1) * 1000), "loss": np.linspace(1, 0, 1000)}).write_parquet(
            metrics / f"part-{i:06d}.parquet")
    (metrics / "part-000003.csv").write_text("step,loss,l0\n3000,0.5,7\n3001,,8\n3002,nan,9\n3003,0.1")
    run = read_run(tmp_path)
    m = run.metrics
    assert m["step"].to_list() == list(range(3003))
    assert m["l0"].to_list()[:3000] == [None] * 3000 and m["l0"].to_list()[3000:] == [7.0, 8.0, 9.0]
    assert m["loss"][3001] is None and math.isnan(m["loss"][3002])
    assert [n for n in run.notes if "config.yaml" not in n] == [
        "part-000003.csv: dropped a last line cut short by an interrupted write"]
    assert all(_contiguous(m[c]) for c in m.columns)


# ---------------------------------------------------------------------------------------------
# Tables: parsed into buffers exactly as text-then-cast did
# ---------------------------------------------------------------------------------------------

TOKENS = ["1", "1.5", "-2e3", "1E-3", ".5", "5.", "+1", "nan", "NaN", "NAN", "-nan", "inf", "-inf", "+inf", "Inf",
          "Infinity", "-Infinity", "infinity", "abc", "1.5x", "0x10", "1_000", "true", "1e400", "-1e400",
          "1e-400", "00012", "1.2.3", "--1", "e5", ".", "+", "-", "nan(1)", "1d5", "9" * 60, '"2.5"', ""]


def _rule(cells: list[str]) -> list[float | None]:
    """What the table readers promise: the text, stripped, cast (``aliases._to_float``)."""
    return _to_float(pl.Series([c.strip('"') if c else None for c in cells], dtype=pl.String)).to_list()


@pytest.mark.parametrize("pad", ["", " ", "\t", "\r"], ids=["plain", "space", "tab", "lone-cr"])
@pytest.mark.parametrize("eager_rows", [columns.EAGER_ROWS, 7])
def test_csv_numbers_read_as_text_then_cast_would(tmp_path: Path, pad: str, eager_rows: int, monkeypatch) -> None:
    """Plain files are parsed by polars directly; any whitespace around a value sends the file
    through text + strip + cast; both give what the text rule gives."""
    monkeypatch.setattr(columns, "EAGER_ROWS", eager_rows)
    cells = [f"{t}{pad}" if i % 2 and t else t for i, t in enumerate(TOKENS)]
    lines = [f"{i},{c},{i * 2}" for i, c in enumerate(cells)]
    f = tmp_path / "m.csv"
    f.write_text("step,loss,note\n" + "\n".join(lines) + "\n")
    data = tables.read(f)
    assert data.metrics["step"].to_list() == list(range(len(TOKENS)))
    assert _same(data.metrics["loss"].to_list(), _rule([c.replace("\r", " ") for c in cells]))
    assert "columns not used: note" in data.notes


def test_large_csv_equals_the_text_reading(tmp_path: Path, monkeypatch) -> None:
    """Gaps, nan/inf, an unknown text column, a bucketed __MIN column and CRLF line ends: the same
    frame as reading all text and canonicalizing it."""
    monkeypatch.setattr(columns, "EAGER_ROWS", 1_000)
    rng = np.random.default_rng(1)
    n = 20_000
    loss = rng.normal(size=n).astype(object)
    loss[rng.integers(0, n, 200)] = "nan"
    loss[rng.integers(0, n, 200)] = "-inf"
    loss[rng.integers(0, n, 200)] = ""
    ev = np.where(np.arange(n) % 10 == 0, rng.uniform(size=n).astype(str), "")
    rows = [f"{s},{a},{b},run-{s % 3},{s * 0.5}" for s, a, b in zip(range(n), loss, ev)]
    f = tmp_path / "metrics.csv"
    f.write_bytes(("_step,train/loss,explained_variance,name,loss__MIN\r\n" + "\r\n".join(rows) + "\r\n").encode())
    (tmp_path / "config.yaml").write_text("d_sae: 100\n")
    data = tables.read(f)
    expected = canonicalize(pl.read_csv(f, infer_schema_length=0), {"d_sae": 100})
    assert_frame_equal(data.metrics, expected.frame)
    assert data.sampled and any("columns not used: name, loss__MIN" in x for x in data.notes)
    assert all(_contiguous(data.metrics[c]) for c in data.metrics.columns)


def test_csv_appended_while_parsed_reads_the_lines_seen_first(tmp_path: Path, monkeypatch) -> None:
    f = tmp_path / "m.csv"
    f.write_text("step,loss\n" + "".join(f"{s},{s / 10}\n" for s in range(100)))
    real = tables._parse_csv
    calls = []

    def parse_then_append(*args, **kwargs):
        out = real(*args, **kwargs)
        if not calls:
            with open(f, "a") as fh:
                fh.write("100,9.9\n101,9.")  # a live writer, mid-line
        calls.append(1)
        return out

    monkeypatch.setattr(tables, "_parse_csv", parse_then_append)
    data = tables.read(f)
    assert data.metrics["step"].to_list() == list(range(100)) and len(calls) == 2


def test_parquet_column_types_convert_as_to_float(tmp_path: Path, monkeypatch) -> None:
    """Numbers and booleans become Float64 as numpy copies them; text, dates and nested values
    go through the same rule as ``aliases._to_float``; either way the result is ``_to_float``'s."""
    monkeypatch.setattr(columns, "EAGER_ROWS", 2)
    frame = pl.DataFrame({
        "step": pl.Series([3, 1, 2, None], dtype=pl.Int64),
        "loss": pl.Series([1.5, None, 2.5, 3.0], dtype=pl.Float32),
        "mse": pl.Series([" 1.5 ", "nan", "x", None], dtype=pl.String),
        "l1": pl.Series([True, False, None, True], dtype=pl.Boolean),
        "lr": pl.Series([1, 2, None, 2**62], dtype=pl.UInt64),
        "l0": pl.Series([[1.0], [2.0], None, []], dtype=pl.List(pl.Float64)),
        "dead": pl.Series([1, 2, 3, 4], dtype=pl.Int8),
        "elapsed_s": pl.Series([0, 10, 20, 30], dtype=pl.Datetime("ms")),
    })
    f = tmp_path / "history.parquet"
    frame.write_parquet(f)
    data = tables.read(f)
    expected = canonicalize(pl.DataFrame([_to_float(frame[c]) for c in frame.columns]), {})
    assert_frame_equal(data.metrics, expected.frame)
    assert data.metrics["step"].to_list() == [1, 2, 3]


def test_names_with_spaces_keep_the_fast_parse(tmp_path: Path, monkeypatch) -> None:
    """Only values decide whether polars may parse the numbers itself: a header with spaces or
    other scripts (W&B UI exports) does not send the file through text."""
    seen = []
    real = tables._parse_csv
    monkeypatch.setattr(tables, "_parse_csv", lambda *a, **k: seen.append(a[3]) or real(*a, **k))
    f = tmp_path / "m.csv"
    f.write_text("Step,train/loss,run α - note\n1,0.5,x\n2,nan,y\n")
    assert tables.read(f).metrics["loss"].to_list()[0] == 0.5 and seen == [True]
    f.write_text("Step,train/loss,run α - note\n1, 0.5,x\n2,nan,y\n")
    assert tables.read(f).metrics["loss"].to_list()[0] == 0.5 and seen == [True, False]
