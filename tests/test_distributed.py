"""Data-parallel training under torchrun (trainer/distributed.py): 2 gloo ranks of one thread each
equal one process with the same global batch; one writer; a killed rank stops the job with one
line and the run resumes from its last checkpoint (also with another number of ranks)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

import polars as pl  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from trainer.config import ConfigError, TrainConfig  # noqa: E402
from trainer.data import FileData, SyntheticData  # noqa: E402
from trainer.distributed import local_batch  # noqa: E402
from trainer.loop import _check_distributed  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STEPS = 50
CONFIG = {"d_in": 32, "d_sae": 128, "batch_size": 256, "total_steps": STEPS, "log_every": 1, "checkpoint_every": 10,
          "threads": 1, "device": "cpu", "seed": 3, "l1_alpha": 0.5, "resample_interval": 20, "dead_window": 5,
          "density_every": 15}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                              "MASTER_PORT", "SAE_REPORT_TEST_KILL_AT")}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "SAE_REPORT_DIST_TIMEOUT_S": "30",
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep), **extra})
    return env


def _train(args: list[str], ranks: int, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] \
        if ranks > 1 else [sys.executable]
    return subprocess.run([*launch, "-m", "sae_report", "train", "-q", *args], capture_output=True, text=True,
                          env=_env(**env), cwd=ROOT, timeout=timeout)


def _metrics(run: Path) -> pl.DataFrame:
    """Every metric row written, as written (no superseding or de-duplication)."""
    parts = sorted((run / "metrics").iterdir())
    return pl.concat([pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p) for p in parts],
                     how="vertical_relaxed")


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.ndjson").read_text().splitlines()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "final" / "sae.safetensors"))


def _one_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The config file, and the one-process reference run."""
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = tmp / "cfg.yaml"
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in CONFIG.items()))
    res = _train([str(cfg), "--out", str(tmp / "single")], 1)
    assert res.returncode == 0, res.stderr
    return cfg, _one_run(tmp / "single")


def _assert_same(run: Path, ref: Path) -> None:
    a, b = _weights(run), _weights(ref)
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5, msg=name)
    ma, mb = _metrics(run), _metrics(ref)
    # the rows in force: a resumed run's later parts supersede the rows after its checkpoint
    ma = ma.unique("step", keep="last").sort("step")
    mb = mb.unique("step", keep="last").sort("step")
    assert ma["step"].to_list() == mb["step"].to_list() == list(range(1, STEPS + 1))
    for col in ("tokens", "loss", "mse", "l1", "l0", "dead", "explained_variance", "grad_norm", "lr", "l1_alpha",
                "l2_ratio", "density_below_1e-5", "density_below_1e-6", "mean_log10_density", "dense_features"):
        np.testing.assert_allclose(ma[col].to_numpy(), mb[col].to_numpy(), atol=1e-5, rtol=1e-5, err_msg=col)


def test_two_ranks_equal_one_process_with_one_writer(setup: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, ref = setup
    res = _train([str(cfg), "--out", str(tmp_path / "ddp")], 2)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("completed: 50 steps") == 1  # rank 0 reports, the other rank says nothing
    run = _one_run(tmp_path / "ddp")
    _assert_same(run, ref)
    # one writer: every step once, one start, one end, each checkpoint once
    rows = _metrics(run)
    assert rows.height == STEPS and rows["step"].to_list() == list(range(1, STEPS + 1))
    events = _events(run)
    kinds = [e["kind"] for e in events]
    assert kinds.count("start") == 1 and kinds.count("end") == 1
    ckpts = [e["step"] for e in events if e["kind"] == "checkpoint"]
    assert ckpts == sorted(set(ckpts)) == [10, 20, 30, 40, 50]
    resamples = [e for e in events if e["kind"] == "resample"]
    assert resamples == [e for e in _events(ref) if e["kind"] == "resample"] and resamples
    config = (run / "config.yaml").read_text()
    assert "world_size: 2\n" in config and "batch_size_per_rank: 128\n" in config and "batch_size: 256\n" in config
    assert not (run / ".sae-report.lock").exists()


def test_one_process_run_resumes_with_two_ranks(setup: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, ref = setup
    run = tmp_path / "copy"
    shutil.copytree(ref, run)
    for name in ("step_000000030", "step_000000040", "step_000000050", "final"):
        shutil.rmtree(run / "checkpoints" / name)
    (run / "summary.json").unlink()
    res = _train(["--resume", str(run)], 2)
    assert res.returncode == 0, res.stderr
    _assert_same(run, ref)
    changes = [e for e in _events(run) if e["kind"] == "config_change"]
    assert changes == [{"step": 21, "kind": "config_change", "key": "world_size", "from": 1, "to": 2}]
    assert "world_size: 2\n" in (run / "config.yaml").read_text()


def test_killed_rank_stops_the_job_and_the_run_resumes(setup: tuple[Path, Path], tmp_path: Path) -> None:
    cfg, ref = setup
    t = time.monotonic()
    res = _train([str(cfg), "--out", str(tmp_path / "k")], 2, SAE_REPORT_TEST_KILL_AT="1:25")
    assert time.monotonic() - t < 60
    assert res.returncode != 0
    run = _one_run(tmp_path / "k")
    assert "Error: rank 0 lost a peer at step 25 (" in res.stderr, res.stderr
    assert f"the checkpoint checkpoints/step_000000020 is intact; resume with: sae-report train --resume {run}" \
        in res.stderr
    # ours is one line (torchrun adds its own report of the failed child): no traceback from our code
    assert str(ROOT / "trainer") not in res.stderr and str(ROOT / "sae_report") not in res.stderr

    # resumed under torchrun, and this time rank 0 dies: rank 1 says so
    res = _train(["--resume", str(run)], 2, SAE_REPORT_TEST_KILL_AT="0:35")
    assert res.returncode != 0
    assert "Error: rank 1 lost a peer at step 35 (" in res.stderr, res.stderr
    assert "checkpoints/step_000000030 is intact" in res.stderr

    # and finished in one process: another number of ranks, the same global batch and data order
    res = _train(["--resume", str(run)], 1)
    assert res.returncode == 0, res.stderr
    _assert_same(run, ref)
    changes = [e for e in _events(run) if e["kind"] == "config_change"]
    assert changes == [{"step": 31, "kind": "config_change", "key": "world_size", "from": 2, "to": 1}]
    config = (run / "config.yaml").read_text()
    assert "world_size: 1\n" in config and "batch_size_per_rank: 256\n" in config
    assert [e["kind"] for e in _events(run)].count("start") == 1


def test_rank_slices_make_the_global_batch(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32)
    np.save(tmp_path / "acts.npy", arr)
    files = FileData(tmp_path / "acts.npy", seed=1, batch_size=240, buffer_tokens=1000, block_tokens=100,
                     device=torch.device("cpu"))
    files.scale = 0.5
    synth = SyntheticData(d_in=8, n_features=16, active=2.0, power=1.0, noise=0.01, outlier_dims=0, outlier_scale=1.0,
                          mean_norm=0.5, magnitude_sigma=0.3, seed=2, batch_size=240, device=torch.device("cpu"))
    for data in (files, synth):
        for step in (1, 7, 13):  # 13 crosses an epoch of the file data
            whole = data.batch(step)
            for world in (2, 3, 4):
                parts = torch.cat([local_batch(data, step, r, world) for r in range(world)])
                torch.testing.assert_close(parts, whole, atol=0, rtol=0)


def test_what_several_ranks_refuse() -> None:
    with pytest.raises(ConfigError, match=r"^batch_size: 255 is the global batch and must be divisible by the 2 ranks"):
        _check_distributed(TrainConfig.from_dict({"batch_size": 255}), 2)
    _check_distributed(TrainConfig.from_dict({"batch_size": 256}), 4)
    _check_distributed(TrainConfig.from_dict({"sae_variant": "batchtopk", "k": 8}), 2)  # global selection


@pytest.mark.parametrize("variant", ["batchtopk", "topk"])
def test_topk_variants_on_two_ranks_equal_one_process(variant: str, tmp_path: Path) -> None:
    """BatchTopK selects over the global batch (an all_gather of each rank's candidates) and learns
    its threshold from the global minimum; AuxK revives the latents dead on the global counts."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in {**CONFIG, "sae_variant": variant, "k": 2, "d_sae": 512, "l1_alpha": "null",
                                                        "resample_interval": 0, "aux_dead_window": 3}.items()))
    runs = {}
    for ranks in (1, 2):
        res = _train([str(cfg), "--out", str(tmp_path / f"r{ranks}")], ranks)
        assert res.returncode == 0, res.stderr
        runs[ranks] = _one_run(tmp_path / f"r{ranks}")
    a, b = _weights(runs[2]), _weights(runs[1])
    assert set(a) == set(b) and ("threshold" in a) == (variant == "batchtopk")
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5, msg=name)
    ma, mb = _metrics(runs[2]), _metrics(runs[1])
    assert ma["step"].to_list() == mb["step"].to_list() == list(range(1, STEPS + 1))
    for col in ("loss", "mse", "l0", "dead", "explained_variance", "aux_loss"):
        np.testing.assert_allclose(ma[col].to_numpy(), mb[col].to_numpy(), atol=1e-5, rtol=1e-5, err_msg=col)
    assert float(mb["aux_loss"].max()) > 0  # AuxK had dead latents to revive
