"""The CUDA path (issue 15), where torch sees a GPU; skipped elsewhere (CI has no GPU: run
``python -m pytest tests/test_gpu.py`` on a GPU machine).

- The training step (forward/backward, decoder-gradient projection, fused Adam, post-step) makes no
  host synchronisation, for every variant and both precisions: ``torch.cuda.set_sync_debug_mode
  ("error")`` turns any sync into an error.
- Activation files reach the GPU through pinned memory with non-blocking copies and give the same
  batches as on the CPU.
- A short run on CUDA (TF32 on, the default there) ends where the same run on the CPU ends, within
  the tolerance docs/trainer.md states for TF32.
- A one-GPU torchrun run trains and writes one run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("standard", "april2024", "topk", "batchtopk", "jumprelu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_the_step_does_not_synchronise_with_the_host(variant: str, precision: str) -> None:
    from trainer.sae import SparseAutoencoder

    sae = SparseAutoencoder(256, 2048, variant=variant, device="cuda", generator=torch.Generator().manual_seed(0),
                            aux_k=64)
    sae.bf16 = precision == "bf16"
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3, fused=True)
    x = torch.randn(1024, 256, device="cuda")
    k = 32 if variant in ("topk", "batchtopk") else None
    coef = 0.001 if variant == "jumprelu" else (1 / 32 if k else 0.01)
    dead = torch.zeros(2048, dtype=torch.bool, device="cuda") if k else None

    def step() -> None:
        sae.forward_backward(x, coef, count_fires=True, k=k, dead=dead)
        sae.project_decoder_grad()
        opt.step()
        sae.post_step()

    step()  # the first step allocates and may initialise lazily
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


def test_file_batches_on_cuda_equal_the_cpu_batches(tmp_path: Path) -> None:
    from trainer.data import FileData

    acts = np.random.default_rng(0).standard_normal((5000, 64)).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    kw = {"seed": 1, "batch_size": 256, "buffer_tokens": 2048, "block_tokens": 512}
    cpu = FileData(tmp_path / "acts.npy", device=torch.device("cpu"), **kw)
    gpu = FileData(tmp_path / "acts.npy", device=torch.device("cuda"), **kw)
    for step in (1, 2, 9, 20, 40):  # across buffers and an epoch boundary
        a, b = cpu.batch(step), gpu.batch(step)
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=0)


def _train(args: list[str], env: dict[str, str] | None = None, launch: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(launch or [sys.executable]), "-m", "sae_report", "train", "-q", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _summary(out: Path) -> dict:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return json.loads((runs[0] / "summary.json").read_text())


def test_a_short_run_on_cuda_ends_where_the_cpu_run_ends(tmp_path: Path) -> None:
    """The synthetic data is drawn on the device (CUDA's generator gives other numbers than the
    CPU's), so the two runs see different samples of one distribution: the check is statistical,
    on second-half medians."""
    from sae_report.runlog import read_run

    sets = ["--set", "total_steps=1000", "--set", "seed=3"]
    ends = {}
    for device in ("cpu", "cuda"):
        res = _train([*sets, "--set", f"device={device}", "--out", str(tmp_path / device)])
        assert res.returncode == 0, res.stderr
        run = next(p for p in (tmp_path / device).iterdir() if p.is_dir())
        m = read_run(run).metrics
        half = m.filter(m["step"] > 500)
        ends[device] = {k: float(half[k].median()) for k in ("l0", "explained_variance")}
    for key in ("l0", "explained_variance"):
        a, b = ends["cpu"][key], ends["cuda"][key]
        assert abs(a - b) <= 0.10 * abs(a), (key, a, b)


def test_one_gpu_torchrun_trains_one_run(tmp_path: Path) -> None:
    res = _train(["--set", "total_steps=200", "--set", "device=cuda", "--out", str(tmp_path / "ddp")],
                 launch=[sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"])
    assert res.returncode == 0, res.stderr
    summary = _summary(tmp_path / "ddp")
    assert summary["status"] == "completed" and summary["steps"] == 200 and summary["device"].startswith("cuda")
