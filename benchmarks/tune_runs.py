"""How many runs `sae-report tune` needs to reach a target L0, from several starting l1_alpha values.

Runs one campaign per starting value on the trainer's default synthetic data (d_in 64,
d_sae 512, batch 1024, 3000 steps unless overridden) and prints, side by side: the runs taken,
whether the target was reached, the l1_alpha sequence, the final settled L0 and the wall time.

    python benchmarks/tune_runs.py --quick            # smoke run: one start, tiny model, ~1 min
    python benchmarks/tune_runs.py                    # full: 5 starts x default model (~7-30 min)
    python benchmarks/tune_runs.py --starts 0.01 0.1 --steps 1500 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sae_report.tune import tune  # noqa: E402

QUICK = ["total_steps=300", "batch_size=128", "d_in=32", "expansion_factor=4", "learning_rate=0.003",
         "checkpoint_every=100"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one start value on a tiny model (smoke run)")
    ap.add_argument("--starts", type=float, nargs="+", default=None, help="starting l1_alpha values")
    ap.add_argument("--target", type=float, default=0.05, help="target L0 fraction (default 0.05)")
    ap.add_argument("--tolerance", type=float, default=0.1, help="relative tolerance (default 0.1)")
    ap.add_argument("--max-runs", type=int, default=8, help="budget per campaign (default 8, to see >5)")
    ap.add_argument("--steps", type=int, default=None, help="total_steps per run (default: trainer default)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the SAE and the data")
    ap.add_argument("--out", type=Path, default=None, help="keep the campaigns here (default: a temp dir)")
    args = ap.parse_args()
    starts = args.starts or ([0.03] if args.quick else [0.003, 0.01, 0.03, 0.1, 0.3])
    sets = list(QUICK) if args.quick else []
    if args.steps:
        sets.append(f"total_steps={args.steps}")
    sets += [f"threads={args.threads}", f"seed={args.seed}"]
    root = args.out or Path(tempfile.mkdtemp(prefix="tune_runs_"))
    print(f"target L0 {100 * args.target:g}% +- {100 * args.tolerance:g}%, budget {args.max_runs} runs, "
          f"overrides: {' '.join(sets) or '(trainer defaults)'}; campaigns in {root}", flush=True)
    print(f"{'start l1':>9} {'runs':>4} {'reached':>7} {'final l1':>9} {'settled L0':>10} {'wall s':>7}  l1_alpha sequence",
          flush=True)
    results = []
    for s in starts:
        t0 = time.time()
        camp = tune(None, args.target, tolerance=args.tolerance, max_runs=args.max_runs,
                    out_dir=root / f"start_{s:g}", overrides=[*sets, f"l1_alpha={s}"], analyze=False)
        wall = time.time() - t0
        best = camp.best_iteration()
        settled = (best.row or {}).get("settled_l0") if best else None
        seq = " -> ".join(f"{it.l1_alpha:.3g}" for it in camp.iterations)
        reached = camp.status == "reached"
        results.append((s, len(camp.iterations), reached, wall))
        print(f"{s:>9.3g} {len(camp.iterations):>4} {str(reached):>7} {best.l1_alpha if best else float('nan'):>9.3g} "
              f"{100 * settled if settled else float('nan'):>9.3g}% {wall:>7.0f}  {seq}", flush=True)
    runs = [r[1] for r in results if r[2]]
    ok = sum(r[2] for r in results)
    within5 = sum(1 for r in results if r[2] and r[1] <= 5)
    print(f"reached {ok}/{len(results)}; within 5 runs {within5}/{len(results)}; runs taken median "
          f"{statistics.median(runs) if runs else float('nan'):g}, max {max(runs) if runs else float('nan')}; "
          f"wall per campaign median {statistics.median(r[3] for r in results):.0f} s", flush=True)


if __name__ == "__main__":
    main()
