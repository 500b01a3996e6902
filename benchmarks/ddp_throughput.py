"""Data-parallel throughput (torchrun, gloo on CPU), side by side in one run: one process of one
thread against N processes of one thread each, every process training the same per-rank batch.

    python benchmarks/ddp_throughput.py                      # d_in 512, d_sae 4096, per-rank batch 4096, 2 ranks
    python benchmarks/ddp_throughput.py --quick              # smoke run (tiny shapes)
    python benchmarks/ddp_throughput.py --ranks 2 --steps 30 --repeats 2

Both modes run ``trainer.train`` end to end (activations from an .npy file through the shuffle
buffer, every step logged, checkpoint and stats at the end outside the timed loop):

- single   one process, one thread, batch = the per-rank batch.
- ddp      ``torchrun --standalone --nproc_per_node N``: global batch = N x the per-rank batch, each
           rank reading only its rows; one all_reduce per step (gradients, fire counts, metric sums).

Printed per mode: steady tokens/s (the loop without its first step; ddp: the global batch), the
step time, the time rank 0 spent inside the all_reduce per step (waiting for the slower rank
included) and its share of the step, and tokens/s relative to the single process (ideal: N).
"no-wait share" uses the smallest all_reduce time over the ranks instead: the rank that arrives
last waits for nobody, so its time is about the transfer itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(out: str, config: dict) -> None:
    """One process of a mode (under torchrun: one rank): train, write what rank r measured."""
    sys.path.insert(0, str(ROOT))
    import torch

    from trainer import TrainConfig, train

    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(config)
    rank = int(os.environ.get("RANK", "0"))
    run_dir = Path(out) / "run"
    result = train(cfg, run_dir=run_dir, progress=False)
    steps = result.steps
    loop_s = result.tokens / result.tokens_per_s if result.tokens_per_s else 0.0
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "steps": steps, "loop_s": loop_s, "tokens_per_s": result.tokens_per_s,
        "steady_tokens_per_s": result.steady_tokens_per_s, "comm_s": result.comm_s,
        "world_size": result.world_size,
    }))


def run_mode(ranks: int, args: argparse.Namespace, data: Path, tmp: Path, tag: str) -> dict:
    out = tmp / tag
    out.mkdir(parents=True)
    config = {"d_in": args.d_in, "d_sae": args.d_sae, "batch_size": args.batch * ranks, "total_steps": args.steps,
              "log_every": 1, "checkpoint_every": 0, "threads": 1, "device": "cpu", "data_source": "files",
              "data_path": str(data), "seed": 0, "stats_sample": 1024}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launch = [sys.executable] if ranks == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    cmd = [*launch, str(Path(__file__).resolve()), "--worker", str(out), json.dumps(config)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        sys.exit(f"{tag} failed:\n{res.stderr[-3000:]}")
    per_rank = [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]
    r0 = per_rank[0]
    tokens_per_step = args.batch * ranks
    step_s = tokens_per_step / r0["steady_tokens_per_s"]
    comm = [p["comm_s"] / p["steps"] for p in per_rank]
    return {"ranks": ranks, "tokens_per_s": r0["steady_tokens_per_s"], "step_s": step_s,
            "comm_step_s": comm[0], "comm_min_step_s": min(comm) if ranks > 1 else 0.0,
            "loop_share": r0["comm_s"] / r0["loop_s"] if r0["loop_s"] else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=2, metavar=("OUT", "CONFIG_JSON"), help=argparse.SUPPRESS)
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=4096, help="per-rank batch (the single process trains this batch)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=1, help="rounds, modes interleaved; medians printed")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, a few steps (smoke run)")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], json.loads(args.worker[1]))
        return
    if args.quick:
        args.d_in, args.d_sae, args.batch, args.steps = 32, 128, 256, 10
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="ddp_bench_") as name:
        tmp = Path(name)
        data = tmp / "acts.npy"
        n = max(args.batch * args.ranks * 4, 16384)
        np.save(data, np.random.default_rng(0).standard_normal((n, args.d_in), dtype=np.float32))
        results: dict[str, list[dict]] = {"single": [], "ddp": []}
        for i in range(args.repeats):
            results["single"].append(run_mode(1, args, data, tmp, f"single{i}"))
            results["ddp"].append(run_mode(args.ranks, args, data, tmp, f"ddp{i}"))
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in results.items()}
    base = med["single"]["tokens_per_s"]
    print(f"d_in {args.d_in}, d_sae {args.d_sae}, per-rank batch {args.batch}, {args.steps} steps, "
          f"1 thread per process, gloo on CPU, {os.cpu_count()} CPUs seen, {args.repeats} round(s), medians")
    print(f"{'mode':<8}{'ranks':>6}{'global batch':>14}{'tokens/s':>12}{'step ms':>10}{'all_reduce ms':>15}"
          f"{'comm share':>12}{'no-wait share':>15}{'vs single':>11}")
    for mode, r in med.items():
        ranks = int(r["ranks"])
        share = r["comm_step_s"] / r["step_s"] if ranks > 1 else 0.0
        nowait = r["comm_min_step_s"] / r["step_s"] if ranks > 1 else 0.0
        print(f"{mode:<8}{ranks:>6}{args.batch * ranks:>14,}{r['tokens_per_s']:>12,.0f}{1000 * r['step_s']:>10.1f}"
              f"{1000 * r['comm_step_s']:>15.1f}{100 * share:>11.1f}%{100 * nowait:>14.1f}%"
              f"{r['tokens_per_s'] / base:>10.2f}x")
    print(f"ideal for {args.ranks} ranks: {args.ranks:.2f}x (only with {args.ranks} free cores)")


if __name__ == "__main__":
    main()
