"""Wall time and peak memory of ``sae-report analyze RUN --json`` at 10K, 1M and 10M logged rows.

Each size is a generated run (the write-up scenario, every metric logged, resample events) written
as a run directory with one Parquet part; each measurement runs the CLI in a fresh child process
and reads the child's peak RSS from ``getrusage(RUSAGE_CHILDREN)``. Figures are medians of
``--repeats`` runs, printed side by side with the ratio to the smallest size (rows grow 100x, then
10x: linear growth means time ratios close to the row ratios, or below them while start-up costs
dominate).

    python benchmarks/analyze_scaling.py            # 10K, 1M, 10M rows (the lead runs this one)
    python benchmarks/analyze_scaling.py --quick    # 10K, 100K rows: a smoke test
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
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import resource, subprocess, sys, time, json
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"wall": wall, "rss": rss, "rc": p.returncode, "out": len(p.stdout), "err": p.stderr.decode()[-300:]}))
"""


def make_run(root: Path, rows: int) -> tuple[Path, int]:
    """A run directory with ``rows`` logged steps (one per step). Returns (dir, bytes on disk)."""
    from sae_report.fixtures import generate

    gen = generate("writeup", steps=rows - 1, seed=0, rows=rows)
    run = root / f"run_{rows}"
    (run / "metrics").mkdir(parents=True)
    frame = pl.DataFrame(gen.columns)
    frame.write_parquet(run / "metrics" / "part-000000.parquet", compression="zstd", statistics=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"schema_version": 1, **gen.config}))
    with open(run / "events.ndjson", "w") as fh:
        for e in gen.events:
            fh.write(json.dumps(e) + "\n")
    size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    return run, size


def measure(run: Path) -> dict:
    cmd = [sys.executable, "-m", "sae_report", "analyze", str(run), "--json", "--no-siblings"]
    out = subprocess.run([sys.executable, "-c", _CHILD, *cmd], stdout=subprocess.PIPE, check=True, cwd=ROOT)
    res = json.loads(out.stdout)
    if res["rc"] != 0:
        raise SystemExit(f"analyze failed on {run}: {res['err']}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10K and 100K rows only (smoke test)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="keep the generated runs in this folder")
    args = ap.parse_args()
    sizes = [10_000, 100_000] if args.quick else [10_000, 1_000_000, 10_000_000]
    repeats = 1 if args.quick else args.repeats
    root = Path(args.keep or tempfile.mkdtemp(prefix="analyze_scaling_"))
    root.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for rows in sizes:
            run, disk = make_run(root, rows)
            shutil.rmtree(run / "report", ignore_errors=True)
            runs = [measure(run) for _ in range(repeats)]
            wall = statistics.median(r["wall"] for r in runs)
            rss = statistics.median(r["rss"] for r in runs)
            data_mb = rows * 14 * 8 / 2**20  # the metrics as float64 columns in memory
            results.append((rows, wall, rss / 2**20, disk / 2**20, data_mb))
            print(f"  measured {rows:>11,} rows: {wall:.2f} s", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    base_rows, base_wall, base_rss = results[0][0], results[0][1], results[0][2]
    print(f"sae-report analyze --json (median of {repeats}; {os.cpu_count()} CPUs)")
    print(f"{'rows':>12} {'wall s':>8} {'x time':>7} {'x rows':>7} {'peak MiB':>9} {'x mem':>6} "
          f"{'data MiB':>9} {'mem/data':>8} {'disk MiB':>8}")
    for rows, wall, rss, disk, data_mb in results:
        print(f"{rows:>12,} {wall:>8.2f} {wall / base_wall:>7.1f} {rows / base_rows:>7.0f} {rss:>9.0f} "
              f"{rss / base_rss:>6.1f} {data_mb:>9.0f} {rss / data_mb:>8.1f} {disk:>8.1f}")
    big = results[-1]
    if big[0] >= 10_000_000:
        print(f"goal: 10M rows under 10 s -> {'met' if big[1] < 10 else 'NOT met'} ({big[1]:.2f} s)")


if __name__ == "__main__":
    main()
