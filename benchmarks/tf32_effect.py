"""Does TF32 change what an SAE run ends at? Measured without a GPU, by emulating it.

On CUDA, ``tf32: true`` lets cuBLAS round the operands of the step's five GEMMs to TF32 (10 explicit
mantissa bits instead of 23) and accumulate in fp32. This script trains the same config (same seed,
same data) with the GEMM operands rounded that way on the CPU, both to nearest and truncated (the
harsher of the two conversions hardware uses), in bf16 (7 mantissa bits, ``precision: bf16``), and
in fp32 with another initialisation seed on the same data: that difference is the tolerance a
precision change has to stay within. It prints, side by side, each run's second-half median L0, explained variance and
MSE, the dead share at the end, and each one's difference from the fp32 run.

    python benchmarks/tf32_effect.py                 # the trainer's default config, 3,000 steps
    python benchmarks/tf32_effect.py --steps 1000 --set l1_alpha=0.01
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from sae_report.runlog import read_run  # noqa: E402
from trainer import TrainConfig, train  # noqa: E402
from trainer.sae import SparseAutoencoder  # noqa: E402

_MM = SparseAutoencoder._mm


def to_tf32(t: torch.Tensor, mode: str) -> torch.Tensor:
    """``t`` (float32) with its mantissa cut to TF32's 10 bits: rounded to nearest (ties to even) or
    truncated toward zero."""
    i = t.contiguous().view(torch.int32)
    if mode == "nearest":
        i = i + 0x0FFF + ((i >> 13) & 1)
    return (i & ~0x1FFF).view(torch.float32)


def _patched(mode: str):  # noqa: ANN202 - the replacement method
    def mm(self: Any, out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, bias: torch.Tensor | None = None,
           alpha: float = 1.0) -> torch.Tensor:
        return _MM(self, out, to_tf32(a, mode), to_tf32(b, mode), bias=bias, alpha=alpha)
    return mm


def _run(name: str, sets: list[str], root: Path, mode: str | None) -> dict[str, Any]:
    cfg = TrainConfig.from_yaml(None, sets)
    SparseAutoencoder._mm = _patched(mode) if mode else _MM  # type: ignore[method-assign]
    try:
        t0 = time.time()
        result = train(cfg, root / name, progress=False)
        wall = time.time() - t0
    finally:
        SparseAutoencoder._mm = _MM  # type: ignore[method-assign]
    m = read_run(Path(result.run_dir)).metrics
    half = m.filter(m["step"] > cfg.total_steps // 2)
    return {"name": name, "l0": float(half["l0"].median()), "ev": float(half["explained_variance"].median()),
            "mse": float(half["mse"].median()), "dead": float(m["dead"][-1]), "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = [f"total_steps={args.steps}", f"threads={args.threads}", "device=cpu", "checkpoint_every=100000",
            *args.sets]
    root = Path(tempfile.mkdtemp(prefix="tf32_effect_"))
    # every run reads the same data (data_seed); the last one differs only in the SAE's initialisation
    base.append(f"data_seed={args.seed}")
    plan = [("fp32", [f"seed={args.seed}"], None),
            ("tf32 nearest", [f"seed={args.seed}"], "nearest"),
            ("tf32 truncated", [f"seed={args.seed}"], "truncate"),
            ("bf16 operands", [f"seed={args.seed}", "precision=bf16"], None),
            (f"fp32 init {args.seed + 1}", [f"seed={args.seed + 1}"], None)]
    print(f"config: trainer defaults with {' '.join(base)}; second-half medians; runs in {root}", flush=True)
    rows = [_run(name.replace(" ", "_"), [*base, *extra], root, mode) | {"name": name} for name, extra, mode in plan]
    ref = rows[0]
    print(f"{'run':<16} {'L0':>9} {'dL0':>8} {'EV':>8} {'dEV':>8} {'MSE':>9} {'dMSE':>8} {'dead':>5} {'wall s':>7}")
    for r in rows:
        print(f"{r['name']:<16} {r['l0']:>9.3f} {100 * (r['l0'] / ref['l0'] - 1):>7.2f}% {r['ev']:>8.4f} "
              f"{r['ev'] - ref['ev']:>+8.4f} {r['mse']:>9.5f} {100 * (r['mse'] / ref['mse'] - 1):>7.2f}% "
              f"{r['dead']:>5.0f} {r['wall']:>7.1f}", flush=True)
    seed = rows[-1]
    tol_l0, tol_ev = abs(seed["l0"] / ref["l0"] - 1), abs(seed["ev"] - ref["ev"])
    for r in rows[1:-1]:
        d_l0, d_ev = abs(r["l0"] / ref["l0"] - 1), abs(r["ev"] - ref["ev"])
        verdict = "within" if d_l0 <= tol_l0 and d_ev <= tol_ev else "OUTSIDE"
        print(f"{r['name']}: |dL0| {100 * d_l0:.2f}% and |dEV| {d_ev:.4f} vs another init's {100 * tol_l0:.2f}% and "
              f"{tol_ev:.4f}: {verdict} the init-to-init tolerance", flush=True)


if __name__ == "__main__":
    main()
