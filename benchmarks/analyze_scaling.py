"""Wall time and peak memory of ``sae-report analyze RUN --json``, beside the targets, and how
much of it is reading (``load_run``) against analyzing (``analysis.analyze``).

Cases (``KIND:ROWS``; the default set is what the README quotes):

- ``run``: a run directory in our format, as the trainer leaves it: ``metrics/part-*.parquet``
  of 100,000 rows each (lz4, statistics, as the trainer writes them) and a growing CSV tail, ``config.yaml``, events.
  Target at 10M rows (issue 10): under 3 s wall, peak RSS under 1.5x the metrics in memory.
- ``csv``: one ``metrics.csv`` export with ``config.yaml`` beside it; some cells empty (a metric
  logged every 10th step, a column with gaps), some ``nan``/``inf``/``-inf``. Target at 5M rows:
  under 8 s end to end.
- ``parquet``: the same table as one ``metrics.parquet`` file with ``config.yaml`` beside it.

Every case is the write-up scenario (``sae_report.fixtures``, every metric logged). For each
repeat, two fresh child processes:

1. ``python -m sae_report analyze PATH --json --no-siblings``: wall seconds and peak RSS (the
   child's ``ru_maxrss``) - the figures the targets are about;
2. a reader probe: RSS after the imports, then ``load_run(PATH)`` alone (seconds, peak RSS, the
   metrics frame's ``estimated_size()``), then ``analyze(data)`` alone (seconds, peak RSS).

Figures are medians of ``--repeats``. Cases run one after the other (never in parallel).

    python benchmarks/analyze_scaling.py                       # run:10K run:1M run:10M csv:5M parquet:5M
    python benchmarks/analyze_scaling.py --rows 10M            # only the 10M-row case(s)
    python benchmarks/analyze_scaling.py --cases csv:5M --repeats 1
    python benchmarks/analyze_scaling.py --quick               # run:10K run:100K csv:100K: a smoke test
    python benchmarks/analyze_scaling.py --keep /tmp/bench     # keep (and reuse) the generated inputs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the sae_report of this tree, also for the children (run with cwd=ROOT)
PART_ROWS = 100_000
DEFAULT_CASES = ("run:10K", "run:1M", "run:10M", "csv:5M", "parquet:5M")
QUICK_CASES = ("run:10K", "run:100K", "csv:100K")
#: (kind, rows) -> (wall seconds, peak RSS / metrics in memory); None where no target is set.
TARGETS: dict[tuple[str, int], tuple[float | None, float | None]] = {
    ("run", 10_000_000): (3.0, 1.5),
    ("csv", 5_000_000): (8.0, None),
}

_CLI = r"""
import resource, subprocess, sys, time, json
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"wall": wall, "rss": rss, "rc": p.returncode, "out": p.stdout.decode()[-2000:],
                  "err": p.stderr.decode()[-300:]}))
"""

_PROBE = r"""
import json, resource, sys, time
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
from sae_report.ingest import load_run
from sae_report.analysis import analyze
t_import = time.perf_counter() - t
rss_import = peak()
t = time.perf_counter()
data = load_run(sys.argv[1])
t_read = time.perf_counter() - t
rss_read = peak()
size = data.metrics.estimated_size()
rows = data.metrics.height
t = time.perf_counter()
analyze(data)
t_analyze = time.perf_counter() - t
print(json.dumps({"import": t_import, "rss_import": rss_import, "read": t_read, "rss_read": rss_read,
                  "size": size, "rows": rows, "analyze": t_analyze, "rss_analyze": peak()}))
"""


@dataclass(frozen=True)
class Case:
    kind: str
    rows: int

    @property
    def name(self) -> str:
        return f"{self.kind}:{_short(self.rows)}"


def _short(n: int) -> str:
    for unit, f in (("M", 1_000_000), ("K", 1_000)):
        if n >= f and n % f == 0:
            return f"{n // f}{unit}"
    return str(n)


def _count(text: str) -> int:
    t = text.strip().upper().replace("_", "").replace(",", "")
    mult = {"K": 1_000, "M": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def parse_case(text: str) -> Case:
    kind, _, rows = text.partition(":")
    if kind not in ("run", "csv", "parquet") or not rows:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KIND:ROWS with KIND run, csv or parquet (e.g. run:10M)")
    return Case(kind, _count(rows))


def _generated(rows: int) -> tuple[pl.DataFrame, dict, list[dict]]:
    from sae_report.fixtures import generate

    gen = generate("writeup", steps=rows - 1, seed=0, rows=rows)
    cols = dict(gen.columns)
    if "grad_norm" not in cols:  # the scenario does not log it; the trainer does: every column present
        rng = np.random.default_rng(1)
        cols["grad_norm"] = np.sqrt(np.abs(cols["loss"])) * rng.lognormal(0.0, 0.1, len(cols["loss"]))
    frame = pl.DataFrame(cols)
    from sae_report.runlog import METRIC_COLUMNS

    frame = frame.select([c for c in METRIC_COLUMNS if c in frame.columns])
    return frame, {"schema_version": 1, **gen.config}, list(gen.events)


def _export_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """What a foreign export holds: gaps and non-finite values among ordinary numbers."""
    n = frame.height
    idx = pl.int_range(n, eager=True)
    return frame.with_columns(
        # explained_variance logged every 10th step only: empty cells elsewhere
        pl.when(idx % 10 == 0).then(pl.col("explained_variance")).otherwise(None).alias("explained_variance"),
        # grad_norm with gaps, and an inf now and then
        pl.when(idx % 97 == 3).then(None).when(idx % 1009 == 5).then(float("inf"))
        .otherwise(pl.col("grad_norm")).alias("grad_norm"),
        # a few nan / -inf losses (a blow-up that recovered)
        pl.when(idx % 50_021 == 7).then(float("nan")).when(idx % 70_001 == 11).then(float("-inf"))
        .otherwise(pl.col("loss")).alias("loss"),
    )


def make_input(root: Path, case: Case) -> Path:
    """Generate (or reuse, under ``--keep``) the input of ``case``; returns the path to analyze."""
    base = root / case.name.replace(":", "_")
    target = base if case.kind == "run" else base / f"metrics.{case.kind}"
    if (base / ".complete").exists():
        return target
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    frame, config, events = _generated(case.rows)
    (base / "config.yaml").write_text(yaml.safe_dump(config))
    if case.kind == "run":
        (base / "metrics").mkdir()
        tail = max(1, min(PART_ROWS // 2, case.rows // 20))  # the live CSV tail
        body = case.rows - tail
        for i, start in enumerate(range(0, body, PART_ROWS)):
            frame.slice(start, min(PART_ROWS, body - start)).write_parquet(
                base / "metrics" / f"part-{i:06d}.parquet", compression="lz4", statistics=True)
        n_parts = -(-body // PART_ROWS)
        frame.slice(body).write_csv(base / "metrics" / f"part-{n_parts:06d}.csv", float_precision=None)
        with open(base / "events.ndjson", "w") as fh:
            for e in events:
                fh.write(json.dumps(e) + "\n")
    else:
        export = _export_frame(frame)
        if case.kind == "csv":
            # lowercase nan/inf as many tools write them (polars itself writes NaN)
            text = {c: pl.when(pl.col(c).is_nan()).then(pl.lit("nan"))
                    .when(pl.col(c).is_infinite()).then(pl.when(pl.col(c) > 0).then(pl.lit("inf")).otherwise(pl.lit("-inf")))
                    .otherwise(pl.col(c).cast(pl.String)).alias(c) for c in ("loss", "grad_norm")}
            export.with_columns(list(text.values())).write_csv(target, float_precision=None)
        else:
            export.write_parquet(target, compression="lz4", statistics=True)
    (base / ".complete").write_text("ok\n")
    return target


def _wrapped(cmd: list[str], path: Path) -> dict:
    # Through a small intermediate Python process: Linux carries the peak RSS of the process that
    # execs a child into the child's ru_maxrss, and this script holds the generated data.
    out = subprocess.run([sys.executable, "-c", _CLI, *cmd], stdout=subprocess.PIPE, check=True, cwd=ROOT)
    res = json.loads(out.stdout)
    if res["rc"] != 0:
        raise SystemExit(f"{cmd[1:4]} failed on {path}: {res['err']}")
    return res


def run_cli(path: Path) -> dict:
    return _wrapped([sys.executable, "-m", "sae_report", "analyze", str(path), "--json", "--no-siblings"], path)


def run_probe(path: Path) -> dict:
    return json.loads(_wrapped([sys.executable, "-c", _PROBE, str(path)], path)["out"])


def _mark(value: float, limit: float | None) -> str:
    if limit is None:
        return "-"
    return f"<{limit:g} {'ok' if value < limit else 'MISS'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", type=parse_case, default=None, metavar="KIND:ROWS",
                    help=f"cases to run (default: {' '.join(DEFAULT_CASES)})")
    ap.add_argument("--rows", nargs="+", type=_count, default=None, metavar="N",
                    help="keep only the cases with these row counts (10M, 5M, 1000000, ...)")
    ap.add_argument("--kinds", nargs="+", choices=("run", "csv", "parquet"), default=None,
                    help="keep only the cases of these kinds")
    ap.add_argument("--quick", action="store_true", help=f"smoke test: {' '.join(QUICK_CASES)}, one repeat")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="keep the generated inputs in this folder (reused next time)")
    args = ap.parse_args()
    cases = args.cases or [parse_case(c) for c in (QUICK_CASES if args.quick else DEFAULT_CASES)]
    if args.rows:
        cases = [c for c in cases if c.rows in args.rows]
    if args.kinds:
        cases = [c for c in cases if c.kind in args.kinds]
    if not cases:
        raise SystemExit("no case left after --rows/--kinds")
    repeats = 1 if args.quick else args.repeats
    root = Path(args.keep or tempfile.mkdtemp(prefix="analyze_scaling_"))
    root.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for case in cases:
            path = make_input(root, case)
            shutil.rmtree((path if path.is_dir() else path.parent) / "report", ignore_errors=True)
            cli, probe = [], []
            for _ in range(repeats):  # interleaved: this VM has slow spells
                cli.append(run_cli(path))
                probe.append(run_probe(path))
            med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
            res = {"case": case, "wall": med(cli, "wall"), "rss": med(cli, "rss") / 2**20,
                   "size": med(probe, "size") / 2**20, "rows": probe[0]["rows"],
                   **{k: med(probe, k) for k in ("import", "read", "analyze")},
                   **{k: med(probe, k) / 2**20 for k in ("rss_import", "rss_read", "rss_analyze")},
                   "walls": [r["wall"] for r in cli]}
            results.append(res)
            print(f"  measured {case.name}: {res['wall']:.2f} s, {res['rss']:.0f} MiB "
                  f"(walls {', '.join(f'{w:.2f}' for w in res['walls'])})", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"sae-report analyze PATH --json --no-siblings: median of {repeats}; {os.cpu_count()} CPUs; "
          f"polars {pl.__version__}")
    head = (f"{'case':<12} {'rows':>11} {'wall s':>7} {'target':>10} {'peak MiB':>9} {'metrics MiB':>11} "
            f"{'peak/met':>8} {'target':>10} | {'import MiB':>10} {'read s':>7} {'read peak':>9} "
            f"{'analyze s':>9} {'an. peak':>8}")
    print(head)
    print("-" * len(head))
    for r in results:
        case = r["case"]
        t_wall, t_ratio = TARGETS.get((case.kind, case.rows), (None, None))
        ratio = r["rss"] / r["size"] if r["size"] else float("nan")
        print(f"{case.name:<12} {r['rows']:>11,} {r['wall']:>7.2f} {_mark(r['wall'], t_wall):>10} {r['rss']:>9.0f} "
              f"{r['size']:>11.0f} {ratio:>8.2f} {_mark(ratio, t_ratio):>10} | {r['rss_import']:>10.0f} "
              f"{r['read']:>7.2f} {r['rss_read']:>9.0f} {r['analyze']:>9.2f} {r['rss_analyze']:>8.0f}")
    print("wall/peak: the CLI in a child process; import/read/analyze: a second child timing load_run() and "
          "analysis.analyze() alone (peaks are cumulative: read peak includes the imports, an. peak the read).")


if __name__ == "__main__":
    main()
