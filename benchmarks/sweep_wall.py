"""Wall time of `sae-report sweep` with `--parallel 2` vs sequential (`--parallel 1`), one run.

Four small runs (l1_alpha 0.01, 0.02, 0.04, 0.08; d_in 64, d_sae 512, batch 512, 1500 steps
unless overridden), one torch thread each, on the CPU, each sweep a fresh folder; the comparison
at the end is part of the time. Prints both wall times side by side and their ratio, plus the
seconds each sweep's children spent (the sum of the runs' wall times).

    python benchmarks/sweep_wall.py                   # ~1-2 min on 2 free cores
    python benchmarks/sweep_wall.py --steps 300       # quicker; child start-up (torch import) dominates
    python benchmarks/sweep_wall.py --parallel 4 --values 0.01 0.02 0.04 0.08
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sweep(folder: Path, values: list[float], sets: list[str], parallel: int) -> tuple[float, float]:
    """(wall seconds of the whole command, sum of its runs' seconds)."""
    cmd = [sys.executable, "-m", "sae_report", "sweep", "--grid", "l1_alpha=" + ",".join(map(str, values)),
           "--out", str(folder), "--devices", "cpu", "--parallel", str(parallel)]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"sweep --parallel {parallel} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    runs = json.loads((folder / "sweep.json").read_text())["runs"]
    return wall, sum(r["seconds"] or 0.0 for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=float, nargs="+", default=[0.01, 0.02, 0.04, 0.08], help="l1_alpha values")
    ap.add_argument("--steps", type=int, default=1500, help="total_steps per run (default 1500)")
    ap.add_argument("--parallel", type=int, default=2, help="runs at once in the parallel sweep (default 2)")
    ap.add_argument("--out", type=Path, default=None, help="keep the sweeps here (default: a temp dir)")
    args = ap.parse_args()
    sets = [f"total_steps={args.steps}", "batch_size=512", "d_in=64", "expansion_factor=8", "threads=1",
            "checkpoint_every=500"]
    root = args.out or Path(tempfile.mkdtemp(prefix="sweep_wall_"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{len(args.values)} runs ({' '.join(sets)}), {cores} cores visible; sweeps in {root}", flush=True)
    seq_wall, seq_busy = _sweep(root / "sequential", args.values, sets, 1)
    par_wall, par_busy = _sweep(root / f"parallel{args.parallel}", args.values, sets, args.parallel)
    print(f"{'':>12} {'wall s':>8} {'runs s (sum)':>13}")
    print(f"{'--parallel 1':>12} {seq_wall:>8.1f} {seq_busy:>13.1f}")
    print(f"{f'--parallel {args.parallel}':>12} {par_wall:>8.1f} {par_busy:>13.1f}")
    print(f"speed-up (sequential / parallel wall): {seq_wall / par_wall:.2f}x")


if __name__ == "__main__":
    main()
