"""How many runs `sae-report tune` needs to reach a target L0, from several starting l1_alpha values.

Runs one campaign per starting value on the trainer's default synthetic data (d_in 64,
d_sae 512, batch 1024, 3000 steps unless overridden) and prints, side by side: the runs taken,
whether the target was reached, the l1_alpha sequence, the final settled L0 and the wall time.

    python benchmarks/tune_runs.py --quick            # smoke run: one start, tiny model, ~1 min
    python benchmarks/tune_runs.py                    # full: 5 starts x default model (~7-30 min)
    python benchmarks/tune_runs.py --starts 0.01 0.1 --steps 1500 --threads 2
    python benchmarks/tune_runs.py --quick --starts 0.003 0.03 0.3 --parallel 2
                                                      # each start one run at a time, then 2 at once
                                                      # (--devices cpu --parallel 2): rounds and wall
                                                      # time side by side, with their ratio

With ``--parallel N`` every campaign is run twice, in one run of the script: one run at a time in
this process, then ``N`` at a time in child processes (each round: the recommendation and points
across its interval). Rounds are what the wall time follows when the device slots are free.
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
    ap.add_argument("--parallel", type=int, default=0,
                    help="also run each campaign N runs at a time (--devices cpu --parallel N) and compare")
    args = ap.parse_args()
    starts = args.starts or ([0.03] if args.quick else [0.003, 0.01, 0.03, 0.1, 0.3])
    sets = list(QUICK) if args.quick else []
    if args.steps:
        sets.append(f"total_steps={args.steps}")
    sets += [f"threads={args.threads}", f"seed={args.seed}"]
    root = args.out or Path(tempfile.mkdtemp(prefix="tune_runs_"))
    print(f"target L0 {100 * args.target:g}% +- {100 * args.tolerance:g}%, budget {args.max_runs} runs, "
          f"overrides: {' '.join(sets) or '(trainer defaults)'}; campaigns in {root}", flush=True)
    print(f"{'start l1':>9} {'mode':>10} {'runs':>4} {'rounds':>6} {'reached':>7} {'final l1':>9} {'settled L0':>10} "
          f"{'wall s':>7}  l1_alpha sequence", flush=True)
    modes = [1] + ([args.parallel] if args.parallel > 1 else [])
    results: dict[int, list[tuple[float, int, int, bool, float]]] = {m: [] for m in modes}
    for s in starts:
        for m in modes:
            t0 = time.time()
            camp = tune(None, args.target, tolerance=args.tolerance, max_runs=args.max_runs,
                        out_dir=root / f"start_{s:g}" / f"x{m}", overrides=[*sets, f"l1_alpha={s}"], analyze=False,
                        devices=["cpu"] if m > 1 else (), parallel=m if m > 1 else None)
            wall = time.time() - t0
            best = camp.best_iteration()
            settled = (best.row or {}).get("settled_l0") if best else None
            rounds = max((it.round for it in camp.iterations), default=0) if m > 1 else len(camp.iterations)
            seq = " -> ".join(f"{it.l1_alpha:.3g}" for it in camp.iterations)
            reached = camp.status == "reached"
            results[m].append((s, len(camp.iterations), rounds, reached, wall))
            mode = "1 at once" if m == 1 else f"{m} at once"
            print(f"{s:>9.3g} {mode:>10} {len(camp.iterations):>4} {rounds:>6} {str(reached):>7} "
                  f"{best.l1_alpha if best else float('nan'):>9.3g} {100 * settled if settled else float('nan'):>9.3g}% "
                  f"{wall:>7.0f}  {seq}", flush=True)
    for m in modes:
        res = results[m]
        runs = [r[1] for r in res if r[3]]
        ok = sum(r[3] for r in res)
        within5 = sum(1 for r in res if r[3] and r[1] <= 5)
        print(f"{m} at once: reached {ok}/{len(res)}; within 5 runs {within5}/{len(res)}; runs taken median "
              f"{statistics.median(runs) if runs else float('nan'):g}, max {max(runs) if runs else float('nan')}; "
              f"rounds median {statistics.median(r[2] for r in res):g}; wall per campaign median "
              f"{statistics.median(r[4] for r in res):.0f} s", flush=True)
    if len(modes) == 2:
        ratios = [a[4] / b[4] for a, b in zip(results[1], results[modes[1]])]
        print(f"wall time, one at a time / {modes[1]} at once: median {statistics.median(ratios):.2f}x "
              f"(per start: {', '.join(f'{r:.2f}x' for r in ratios)})", flush=True)


if __name__ == "__main__":
    main()
