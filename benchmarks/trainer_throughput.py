"""Trainer throughput, side by side in one run: ours, a plain torch step, SAELens, the matmul limit,
for every SAE variant (standard ReLU + L1, topk, batchtopk, jumprelu) beside SAELens' same architecture.

    python benchmarks/trainer_throughput.py                       # CPU: d_in 512, d_sae 4096, batch 4096, k 32
    python benchmarks/trainer_throughput.py --quick               # smoke run (tiny shapes, 1 repeat)
    python benchmarks/trainer_throughput.py --variants topk jumprelu --threads 1
    python benchmarks/trainer_throughput.py --saelens-python benchmarks/.venv-saelens/bin/python
    python benchmarks/trainer_throughput.py --device cuda --d-in 2048 --d-sae 32768

The standard modes train the same ReLU SAE (f = relu(W_enc(x - b_dec) + b_enc), x_hat = W_dec f + b_dec,
MSE + l1_alpha * L1, Adam, unit-norm decoder) on the same activations:

- ours          ``trainer.train`` end to end: .npy activations through the shuffle buffer, every
                step logged (metrics kept on the device, flushed to the run directory), checkpoint
                and stats at the end (outside the timed loop). tokens/s = TrainResult.steady_tokens_per_s
                (the training loop without its first step, as the other modes are timed after a warm-up step).
- ours-nolog    the same with ``log_every: 0`` (no metrics, no dead-feature tracking): the
                difference is our logging overhead.
- plain         a hand-written torch step of the same model through autograd + torch.optim.Adam.
- saelens       SAELens' ``SAETrainer.fit()`` with ``StandardTrainingSAE`` (its own venv, given by
                --saelens-python, or importable here); skipped with a message when absent. Timed
                around fit() (its first step included: at 20 steps that costs it about 1/20).
- limit         the five GEMMs of a step and nothing else (the matmul limit).

Each other variant runs as ``ours-<variant>`` (``trainer.train`` with ``sae_variant`` set, logging
every step) and ``saelens-<variant>`` (SAELens' ``TopKTrainingSAE``, ``BatchTopKTrainingSAE``,
``JumpReLUTrainingSAE`` with its defaults: AuxK coefficient 1, JumpReLU threshold 0.01, bandwidth
0.05, k as given), on the same data; the ratio of the two is printed per variant.

Modes are interleaved over --repeats rounds (this VM gives an occasional run 10-25% slow) and the
medians are printed with ratios. glibc malloc settings change every figure: compare within a run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rounds import interleaved  # noqa: E402 (benchmarks/rounds.py)

SAELENS_SCRIPT = r"""
import json, sys, time, torch
import sae_lens
from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.config import LoggingConfig
from sae_lens.training.sae_trainer import SAETrainer, SAETrainerConfig
a = json.loads(sys.argv[1])
torch.set_num_threads(a["threads"]) if a["threads"] else None
data = torch.from_numpy(__import__("numpy").load(a["npy"])).to(a["device"])
B = a["batch"]
def provider():
    i = 0
    while True:
        yield data[(i * B) % len(data):(i * B) % len(data) + B]
        i += 1
arch = a.get("arch", "standard")
if arch == "standard":
    sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=a["d_in"], d_sae=a["d_sae"], l1_coefficient=a["l1"], device=a["device"]))
elif arch == "jumprelu":
    sae = sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(
        d_in=a["d_in"], d_sae=a["d_sae"], l0_coefficient=a["l0"], device=a["device"]))
else:
    cls, cfg_cls = {"topk": (sae_lens.TopKTrainingSAE, sae_lens.TopKTrainingSAEConfig),
                    "batchtopk": (sae_lens.BatchTopKTrainingSAE, sae_lens.BatchTopKTrainingSAEConfig)}[arch]
    sae = cls(cfg_cls(d_in=a["d_in"], d_sae=a["d_sae"], k=a["k"], device=a["device"]))
cfg = SAETrainerConfig(total_training_samples=a["steps"] * B, train_batch_size_samples=B, lr=a["lr"], lr_end=a["lr"],
                       device=a["device"], n_batches_for_norm_estimate=1, logger=LoggingConfig(log_to_wandb=False))
trainer = SAETrainer(cfg=cfg, sae=sae, data_provider=provider())
t = time.perf_counter()
trainer.fit()
if a["device"].startswith("cuda"):
    torch.cuda.synchronize()
print(json.dumps({"tokens_per_s": a["steps"] * B / (time.perf_counter() - t)}))
"""


#: Our variants and their settings in this benchmark (SAELens gets the same k / coefficient).
VARIANT_KEYS = {"standard": {"l1_alpha": 0.05}, "topk": {}, "batchtopk": {}, "jumprelu": {"l0_coefficient": 0.002}}


def measure_ours(npy: Path, args: argparse.Namespace, log: bool, workdir: Path, variant: str = "standard") -> float:
    from trainer import TrainConfig, train

    keys = dict(VARIANT_KEYS[variant])
    if variant in ("topk", "batchtopk"):
        keys["k"] = args.k
    cfg = TrainConfig(
        data_source="files", data_path=str(npy), d_sae=args.d_sae, batch_size=args.batch, total_steps=args.steps + 1,
        sae_variant=variant, learning_rate=1e-4, resample_interval=0, checkpoint_every=0, log_every=1 if log else 0,
        device=args.device, threads=args.threads, stats_sample=256, precision=args.precision, tf32=args.tf32,
        shuffle_buffer_tokens=args.batch * 8, shuffle_block_tokens=args.batch, **keys,
    )
    run = workdir / f"ours_{time.monotonic_ns()}"
    result = train(cfg, run_dir=run)
    shutil.rmtree(run, ignore_errors=True)
    return result.steady_tokens_per_s  # like the other modes: without the first (warm-up) step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_plain(data: torch.Tensor, args: argparse.Namespace) -> float:
    d, s, dev = args.d_in, args.d_sae, args.device
    g = torch.Generator().manual_seed(0)
    w = torch.randn(s, d, generator=g)
    w /= w.norm(dim=1, keepdim=True)
    W_dec = torch.nn.Parameter(w.to(dev))
    W_enc = torch.nn.Parameter(w.t().contiguous().to(dev))
    b_enc = torch.nn.Parameter(torch.zeros(s, device=dev))
    b_dec = torch.nn.Parameter(torch.zeros(d, device=dev))
    opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=1e-4)

    def step(x: torch.Tensor) -> None:
        f = torch.relu((x - b_dec) @ W_enc + b_enc)
        x_hat = f @ W_dec + b_dec
        loss = ((x_hat - x) ** 2).mean() + 0.05 * f.sum(dim=1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))

    return _timed(step, data, args)


def measure_limit(data: torch.Tensor, args: argparse.Namespace) -> float:
    d, s, B, dev = args.d_in, args.d_sae, args.batch, args.device
    dt = torch.bfloat16 if args.precision == "bf16" else torch.float32
    W_enc = torch.randn(d, s, device=dev, dtype=dt)
    W_dec = torch.randn(s, d, device=dev, dtype=dt)
    f, xh = torch.empty(B, s, device=dev, dtype=dt), torch.empty(B, d, device=dev, dtype=dt)
    gdec, genc, df = torch.empty(s, d, device=dev, dtype=dt), torch.empty(d, s, device=dev, dtype=dt), torch.empty(B, s, device=dev, dtype=dt)

    def step(x: torch.Tensor) -> None:
        x = x.to(dt)
        torch.mm(x, W_enc, out=f)          # forward: encoder
        torch.mm(f, W_dec, out=xh)         # forward: decoder
        torch.mm(f.t(), xh, out=gdec)      # backward: decoder weights
        torch.mm(xh, W_dec.t(), out=df)    # backward: features
        torch.mm(x.t(), df, out=genc)      # backward: encoder weights

    return _timed(step, data, args)


def _timed(step, data: torch.Tensor, args: argparse.Namespace) -> float:
    B = args.batch
    batches = [data[(i * B) % len(data):(i * B) % len(data) + B] for i in range(args.steps + 1)]
    step(batches[0])  # warm-up: allocations, kernel selection
    _sync(args.device)
    t = time.perf_counter()
    for x in batches[1:]:
        step(x)
    _sync(args.device)
    return args.steps * B / (time.perf_counter() - t)


def measure_saelens(python: str, npy: Path, args: argparse.Namespace, arch: str = "standard") -> float:
    payload = json.dumps({"npy": str(npy), "d_in": args.d_in, "d_sae": args.d_sae, "batch": args.batch, "steps": args.steps,
                          "l1": 0.05, "l0": 0.002, "k": args.k, "arch": arch, "lr": 1e-4, "device": args.device,
                          "threads": args.threads})
    out = subprocess.run([python, "-c", SAELENS_SCRIPT, payload], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "SAELens failed")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["tokens_per_s"])


def find_saelens(arg: str | None) -> tuple[str | None, str]:
    if arg:
        if not Path(arg).exists():
            return None, f"--saelens-python {arg}: no such file"
        return arg, arg
    default = ROOT / "benchmarks" / ".venv-saelens" / "bin" / "python"
    if default.exists():
        return str(default), str(default)
    try:
        import sae_lens  # noqa: F401

        return sys.executable, "this interpreter"
    except ImportError:
        return None, "SAELens not found (pip install sae-lens in its own venv, pass --saelens-python)"


def matmul_peak(args: argparse.Namespace) -> float:
    """Best FLOP/s of a large square GEMM in the step's precision (the device's practical peak)."""
    dt = torch.bfloat16 if args.precision == "bf16" else torch.float32
    n = 8192 if args.device.startswith("cuda") else 2048
    a, b = torch.randn(n, n, device=args.device, dtype=dt), torch.randn(n, n, device=args.device, dtype=dt)
    best = 0.0
    for _ in range(5):
        _sync(args.device)
        t = time.perf_counter()
        for _ in range(10 if args.device.startswith("cuda") else 2):
            torch.mm(a, b)
        _sync(args.device)
        reps = 10 if args.device.startswith("cuda") else 2
        best = max(best, reps * 2 * n ** 3 / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--k", type=int, default=32, help="topk/batchtopk: active latents per token")
    ap.add_argument("--variants", nargs="+", default=["standard", "topk", "batchtopk", "jumprelu"],
                    choices=["standard", "topk", "batchtopk", "jumprelu"], help="SAE variants to measure")
    ap.add_argument("--no-baselines", action="store_true", help="skip ours-nolog, plain and limit")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--saelens-python", default=None, help="python of a venv with sae-lens installed")
    ap.add_argument("--no-saelens", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny shapes, 3 steps, 1 round")
    args = ap.parse_args()
    if args.quick:
        args.d_in, args.d_sae, args.batch, args.steps, args.repeats, args.k = 64, 512, 512, 3, 1, 16
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tf32 and args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True

    saelens, saelens_note = (None, "skipped (--no-saelens)") if args.no_saelens else find_saelens(args.saelens_python)
    print(f"shapes: d_in {args.d_in}, d_sae {args.d_sae}, batch {args.batch}, k {args.k}; {args.steps} steps x {args.repeats} rounds; "
          f"device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.precision}")
    print(f"malloc: MALLOC_MMAP_MAX_={os.environ.get('MALLOC_MMAP_MAX_', 'unset')} "
          f"MALLOC_TRIM_THRESHOLD_={os.environ.get('MALLOC_TRIM_THRESHOLD_', 'unset')}")
    print(f"SAELens: {saelens_note}")

    workdir = Path(tempfile.mkdtemp(prefix="sae_bench_"))
    try:
        rng = np.random.default_rng(0)
        n_tokens = args.batch * 8
        acts = rng.standard_normal((n_tokens, args.d_in), dtype=np.float32)
        npy = workdir / "acts.npy"
        np.save(npy, acts)
        data = torch.from_numpy(acts).to(args.device)
        modes: dict = {}
        for v in args.variants:
            name = "ours" if v == "standard" else f"ours-{v}"
            modes[name] = (lambda v=v: measure_ours(npy, args, True, workdir, v))
            if v == "standard" and not args.no_baselines:
                modes["ours-nolog"] = lambda: measure_ours(npy, args, False, workdir)
                modes["plain"] = lambda: measure_plain(data, args)
                modes["limit"] = lambda: measure_limit(data, args)
            if saelens:
                modes["saelens" if v == "standard" else f"saelens-{v}"] = (lambda v=v: measure_saelens(saelens, npy, args, v))
        med = interleaved(modes, args.repeats, width=17)
        print("\nmedian tokens/s (steps/s):")
        for m, v in med.items():
            print(f"  {m:17s} {v:>12,.0f}  ({v / args.batch:.3f} steps/s)")
        print("ratios:")
        if "plain" in med and "ours" in med:
            print(f"  ours / plain torch step   {med['ours'] / med['plain']:.3f}")
        for v in args.variants:
            mine, theirs = ("ours", "saelens") if v == "standard" else (f"ours-{v}", f"saelens-{v}")
            label = "ours / SAELens" if v == "standard" else f"{v} / SAELens {v}"
            if mine in med and theirs in med:
                print(f"  {label:31s} {med[mine] / med[theirs]:.3f}")
            else:
                print(f"  {label:31s} n/a: {saelens_note if not saelens else 'a mode failed'}")
        if "ours" not in med or "limit" not in med:
            return
        print(f"  ours / matmul limit       {med['ours'] / med['limit']:.3f}")
        print(f"  logging overhead          {100 * (med['ours-nolog'] / med['ours'] - 1):.2f}% "
              f"(ours-nolog vs ours: time per step with logging / without - 1)")
        flops_per_token = 5 * 2 * args.d_in * args.d_sae
        peak = matmul_peak(args)
        print(f"  matmul peak measured      {peak / 1e12:.2f} TFLOP/s ({args.precision}, large square GEMM)")
        print(f"  ours reaches              {100 * med['ours'] * flops_per_token / peak:.1f}% of that peak "
              f"({med['ours'] * flops_per_token / 1e12:.3f} TFLOP/s of step GEMMs)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
