"""A hypothesis-driven fuzz of run directories (issue 11): random files and types where the run
directory's files belong (random bytes and text as parts, config, events, summary and stats;
structured CSV, NDJSON, YAML with aliases, Parquet and .npy with odd types and shapes), special
files (FIFOs), symlinks (to /dev/zero, /dev/urandom, loops, dangling, files and folders outside),
large (sparse) files, folders where files belong, missing and extra files.

Each example runs ``python -m sae_report analyze RUN`` (one in six: ``import RUN``) in a child
process, with ``RLIMIT_DATA`` at 1.5 GiB as a guard and killed at 10 s, and measures the child's
wall time and peak RSS (``wait4``'s ``ru_maxrss``). It must end with exit 0 and an analysis
(import: a run directory), or exit 2 and exactly one line ``Error: ...``, within 10 s and 1 GiB.

The default (60 examples, derandomized, about 30 s) is sized for CI; more:

    SAE_REPORT_FUZZ_EXAMPLES=1000 python -m pytest tests/test_fuzz_rundir.py -s

(random, not derandomized, when the variable is set; ``-s`` shows the figures: examples, outcomes,
worst wall time and worst peak RSS).
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = int(os.environ.get("SAE_REPORT_FUZZ_EXAMPLES", "0") or 0)
LIMIT_S = 10.0
LIMIT_RSS = 1 << 30
GUARD_DATA = 3 << 29  # 1.5 GiB: RLIMIT_DATA (RLIMIT_AS would stop the chart renderer's reservations)

METRIC_NAMES = ("step", "loss", "mse", "l1", "l0", "l0_frac", "dead", "dead_frac", "explained_variance", "lr",
                "l1_alpha", "tokens", "grad_norm", "elapsed_s")
TARGETS = ("config.yaml", "metrics/part-000000.csv", "metrics/part-000001.parquet", "metrics/part-000002.csv",
           "events.ndjson", "summary.json", "stats/feature_freq.npy", "stats/input_sample.npy", "stats/input_dims.csv",
           "metrics", "stats", "metrics/part-000003.csv.tmp", "metrics/README", "checkpoints/final/state.json")

FIGURES: dict[str, object] = {"examples": 0, "exit 0": 0, "exit 2": 0, "worst_s": 0.0, "worst_rss": 0, "worst_case": ""}


# --------------------------------------------------------------------------------------------
# What a file may be
# --------------------------------------------------------------------------------------------

_cell = st.one_of(
    st.integers(-3, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "inf", "-inf", "NaN", "Infinity", "1.5", "2.0", "-7", "1e30", "99999999999999999999",
                     "true", "abc", " 5 ", '"q"', "0x10", "1,2"]),
    st.text(max_size=6))
_csv = st.builds(
    lambda header, rows, end: (",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows) + end).encode(
        "utf-8", "surrogatepass"),
    st.lists(st.one_of(st.sampled_from(METRIC_NAMES), st.text(min_size=1, max_size=5)), min_size=1, max_size=6),
    st.lists(st.lists(_cell, min_size=0, max_size=7), max_size=30),
    st.sampled_from(["", "12", "\n", "\r\n"]))
_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**25), 10**25), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)
_event = st.fixed_dictionaries(
    {"step": st.one_of(st.integers(-5, 300), st.integers(-(10**25), 10**25), st.floats(), st.booleans(), st.text(max_size=4)),
     "kind": st.one_of(st.sampled_from(["start", "resample", "resume", "l1_change", "checkpoint", "end", "nonfinite"]),
                       st.integers())},
    optional={"n": _json_value, "features": st.lists(st.integers(-5, 10**6), max_size=20), "value": _json_value,
              "from": _json_value, "to": _json_value, "status": _json_value, "ended_at": _json_value,
              "started_at": _json_value, "elapsed_s": _json_value})
_ndjson = st.builds(lambda rows, end: ("\n".join(json.dumps(r) for r in rows) + end).encode(),
                    st.lists(st.one_of(_event, _json_value), max_size=20), st.sampled_from(["", "\n", "\n{\"step\": 3,"]))


def _yaml_text(kind: str, depth: int, width: int) -> bytes:
    if kind == "aliases":  # width**depth values once expanded (a bomb when both are large)
        lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
        return ("run_id: fuzz\nd_sae: 64\n" + "\n".join(lines) + "\n").encode()
    if kind == "merge":
        lines = ["m0: &m0 {k: 1}"] + [f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * width)}], k{i}: 1}}" for i in range(1, depth)]
        return ("\n".join(lines) + "\n").encode()
    if kind == "recursive":
        return b"run_id: r\nx: &x [1, *x]\n"
    if kind == "nested":
        return ("run_id: r\ndeep: " + "[" * (depth * 40) + "]" * (depth * 40) + "\n").encode()
    return (f"run_id: r{depth}\nd_sae: {width}\ntarget_l0: 0.05\nl1_alpha: .nan\nstarted_at: 2024-01-02 03:04:05\n"
            f"when: !!timestamp 2001-12-14\nblob: !!binary aGVsbG8=\nset: !!set {{a, b}}\n{width}: int key\n").encode()


_odd = st.sampled_from([0, -1, 1, 3, 0.5, 1e300, -1e300, float("nan"), float("inf"), "abc", "", True, None, [], {}, [1, 2],
                        {"value": 5}, 10**30, "2024-01-01", "0.05"])
_config = st.builds(
    lambda d: json.dumps(d).encode(),  # JSON is YAML too
    st.dictionaries(st.sampled_from(["run_id", "schema_version", "d_sae", "d_in", "target_l0", "l1_alpha", "learning_rate",
                                     "resample_interval", "total_steps", "batch_size", "dead_window_steps",
                                     "dead_window_tokens", "imported_from", "provenance", "started_at"]),
                    _odd | st.fixed_dictionaries({"notes": _odd, "sampled": _odd, "source": _odd}), max_size=8))
_yaml = st.builds(_yaml_text, st.sampled_from(["aliases", "merge", "recursive", "nested", "plain"]),
                  st.integers(1, 12), st.integers(1, 12))


def _parquet_bytes(step_kind: str, n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    steps: object
    if step_kind == "int":
        steps = pl.Series("step", rng.integers(-3, 50, n), dtype=pl.Int64)
    elif step_kind == "whole_float":
        steps = pl.Series("step", np.arange(n, dtype=np.float64))
    elif step_kind == "float":
        steps = pl.Series("step", rng.normal(size=n) * 10)
    elif step_kind == "text":
        steps = pl.Series("step", [str(x) for x in rng.integers(0, 40, n)][:-1] + ["x"] if n else [], dtype=pl.String)
    elif step_kind == "bool":
        steps = pl.Series("step", rng.integers(0, 2, n).astype(bool))
    elif step_kind == "datetime":
        steps = pl.Series("step", np.arange(n).astype("datetime64[ms]"))
    elif step_kind == "uint_big":
        steps = pl.Series("step", np.full(n, 2**64 - 1, dtype=np.uint64))
    elif step_kind == "null":
        steps = pl.Series("step", [None] * n, dtype=pl.Null)
    else:  # "list"
        steps = pl.Series("step", [[1, 2]] * n)
    frame = pl.DataFrame([steps, pl.Series("loss", rng.normal(size=n)), pl.Series("l0_frac", rng.random(n)),
                          pl.Series("dead", [str(x) for x in rng.integers(0, 5, n)])])
    buf = io.BytesIO()
    frame.write_parquet(buf)
    return buf.getvalue()


_parquet = st.builds(_parquet_bytes, st.sampled_from(["int", "whole_float", "float", "text", "bool", "datetime", "uint_big",
                                                      "null", "list"]), st.integers(0, 40), st.integers(0, 2**16))


def _npy_bytes(dtype: str, shape: tuple[int, ...], trim: int) -> bytes:
    buf = io.BytesIO()
    if dtype == "object":
        np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": shape})
        return buf.getvalue() + b"\0" * 16
    arr = np.ones(shape, dtype=dtype) if dtype != "<U3" else np.full(shape, "abc")
    np.save(buf, arr, allow_pickle=False)
    data = buf.getvalue()
    return data[:max(0, len(data) - trim)] if trim else data


_npy = st.builds(_npy_bytes, st.sampled_from(["<f8", "<f4", "<f2", "<i4", "|b1", "<U3", "<c16", ">f8", "object"]),
                 st.lists(st.integers(0, 6), max_size=3).map(tuple), st.sampled_from([0, 0, 1, 9]))

#: (kind, payload): what to put where a run directory's file belongs.
THING = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=600)),
    st.tuples(st.just("bytes"), st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))),
    st.tuples(st.just("bytes"), _csv),
    st.tuples(st.just("bytes"), _ndjson),
    st.tuples(st.just("bytes"), st.builds(lambda v: json.dumps(v).encode(), _json_value)),
    st.tuples(st.just("bytes"), st.builds(lambda v: json.dumps(v).encode(), st.fixed_dictionaries(
        {}, optional={k: _json_value for k in ("status", "steps", "ended_at", "started_at", "elapsed_s", "tokens")}))),
    st.tuples(st.just("bytes"), _yaml),
    st.tuples(st.just("bytes"), _config),
    st.tuples(st.just("bytes"), _parquet),
    st.tuples(st.just("bytes"), _npy),
    st.tuples(st.just("sparse"), st.tuples(st.sampled_from([17 << 20, 70 << 20, 150 << 20]),
                                           st.sampled_from([b"", b"step,loss\n1,2\n", b'{"step": 1, "kind": "x"}\n',
                                                            b"\x93NUMPY"]),
                                           st.sampled_from([b"", b"\n", b"\n5,1\n"]))),
    st.tuples(st.just("fifo"), st.none()),
    st.tuples(st.just("symlink"), st.sampled_from(["/dev/zero", "/dev/urandom", "/dev/null", "self", "dangling", "loop",
                                                   "outside_file", "outside_dir", "run_dir"])),
    st.tuples(st.just("dir"), st.booleans()),
    st.tuples(st.just("missing"), st.none()),
    st.tuples(st.just("bytes"), st.just(b"")),
)


def _base_rows(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    lines = ["step,loss,l0,l0_frac,dead_frac,lr,l1_alpha,explained_variance"]
    for s in range(1, n + 1):
        loss = float(rng.choice([1.0 / s, float("nan"), float("inf")], p=[0.96, 0.02, 0.02]))
        lines.append(f"{s},{loss!r},{max(0.5, 60 / s ** 0.3):.4g},{0.5 / s ** 0.3:.4g},{min(0.9, s / 400):.4g},"
                     f"0.001,0.05,{1 - 1 / s:.4g}")
    return "\n".join(lines) + "\n"


def _make(run: Path, outside: Path, base: tuple[bool, int, int], mutations: list[tuple[str, tuple[str, object]]]) -> None:
    good, n, seed = base
    (run / "metrics").mkdir(parents=True)
    if good:
        (run / "metrics" / "part-000000.csv").write_text(_base_rows(n, seed))
        (run / "config.yaml").write_text("run_id: fuzz\nd_sae: 64\ntarget_l0: 0.05\nresample_interval: 50\n")
        (run / "events.ndjson").write_text('{"step": 0, "kind": "start", "d_sae": 64}\n{"step": 50, "kind": "resample", "n": 3}\n')
        (run / "summary.json").write_text('{"status": "completed", "steps": %d}\n' % n)
        (run / "stats").mkdir()
        np.save(run / "stats" / "feature_freq.npy", np.linspace(0, 0.1, 64))
    (outside / "other.csv").write_text(_base_rows(20, 1))
    for target, (kind, payload) in mutations:
        p = run / target
        if p.is_symlink() or p.is_file():
            p.unlink()
        elif p.is_dir():
            shutil.rmtree(p)
        elif os.path.lexists(p):
            p.unlink()
        if kind == "missing":
            continue
        for parent in reversed(p.relative_to(run).parents[:-1]):  # a later mutation inside an earlier one's file
            q = run / parent
            if os.path.lexists(q) and (q.is_symlink() or not q.is_dir()):
                q.unlink()
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "bytes":
            p.write_bytes(payload)  # type: ignore[arg-type]
        elif kind == "sparse":
            size, head, tail = payload  # type: ignore[misc]
            with open(p, "wb") as fh:
                fh.write(head)
                fh.truncate(size)
                fh.seek(0, 2)
                fh.write(tail)
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "dir":
            p.mkdir()
            if payload:
                (p / "part-000000.csv").write_text("step,loss\n1,1\n")
        else:  # symlink
            to = {"self": p.name, "dangling": "nowhere", "loop": p.name + ".b", "outside_file": str(outside / "other.csv"),
                  "outside_dir": str(outside), "run_dir": str(run)}.get(str(payload), str(payload))
            if payload == "loop":
                partner = p.parent / (p.name + ".b")
                if os.path.lexists(partner):
                    shutil.rmtree(partner) if partner.is_dir() and not partner.is_symlink() else partner.unlink()
                partner.symlink_to(p.name)
            p.symlink_to(to)


def _child(args: list[str]) -> tuple[int, float, int, str, str]:
    """Run the CLI in a child: (exit code, wall seconds, peak RSS bytes, stdout, stderr)."""
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (GUARD_DATA, GUARD_DATA))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "sae_report", *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, preexec_fn=limits)
        killed = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > LIMIT_S + 5 and not killed:
                proc.kill()
                killed = True
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (proc.returncode, wall, usage.ru_maxrss * 1024, out.read().decode("utf-8", "replace"),
                err.read().decode("utf-8", "replace"))


@pytest.fixture(scope="module")
def figures():
    yield FIGURES
    print(f"\nrun-directory fuzz: {FIGURES['examples']} examples, {FIGURES['exit 0']} exit 0, {FIGURES['exit 2']} exit 2; "
          f"worst wall {FIGURES['worst_s']:.2f} s, worst peak RSS {int(FIGURES['worst_rss']) / 2**20:.0f} MiB "
          f"({FIGURES['worst_case']})")


_mutations = st.lists(st.tuples(st.sampled_from(TARGETS), THING), min_size=0, max_size=4)


@settings(max_examples=EXAMPLES or 60, deadline=None, derandomize=not EXAMPLES, database=None,
          suppress_health_check=list(HealthCheck))
@given(base=st.tuples(st.booleans() | st.just(True), st.integers(1, 300), st.integers(0, 2**16)),
       mutations=_mutations, command=st.sampled_from(["json"] * 4 + ["all", "import"]))
def test_random_run_directories_end_in_a_report_or_one_line(figures, base, mutations, command) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        run, outside = root / "run", root / "outside"
        outside.mkdir()
        _make(run, outside, base, mutations)
        out = root / "out"
        if command == "import":
            args = ["import", str(run), "--out", str(out)]
        else:
            args = ["analyze", str(run), "--out", str(out), "--no-siblings", "--json",
                    "--format", "json" if command == "json" else "md,html,json"]
        code, wall, rss, stdout, stderr = _child(args)
        case = f"{command}: {[(t, k) for t, (k, _) in mutations]}"
        figures["examples"] = int(figures["examples"]) + 1
        if wall > float(figures["worst_s"]):
            figures["worst_s"] = wall
        if rss > int(figures["worst_rss"]):
            figures["worst_rss"], figures["worst_case"] = rss, case
        lines = stderr.strip().splitlines()
        assert code in (0, 2), f"exit {code} ({case}):\n{stderr[-3000:]}"
        assert "Traceback" not in stderr, f"{case}:\n{stderr[-3000:]}"
        if code == 2:
            figures["exit 2"] = int(figures["exit 2"]) + 1
            assert len(lines) == 1 and lines[0].startswith("Error: "), f"{case}:\n{stderr[-3000:]}"
            assert "please report it" not in lines[0], f"{case}: {lines[0]}"
        else:
            figures["exit 0"] = int(figures["exit 0"]) + 1
            if command == "import":
                assert (out / "metrics").is_dir() and (out / "config.yaml").is_file(), case
            else:
                doc = json.loads(stdout)
                assert doc["schema_version"] == 2 and (out / "analysis.json").is_file(), case
        assert wall <= LIMIT_S, f"{wall:.1f} s ({case})"
        assert rss <= LIMIT_RSS, f"{rss / 2**20:.0f} MiB ({case})"
