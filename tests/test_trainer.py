"""The SAE trainer: it learns, l1_alpha steers L0 the right way, resampling revives, schedules bite,
the math matches autograd, checkpoints hold what docs/trainer.md says. Tiny dims, one thread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from sae_report.runlog import read_run  # noqa: E402
from trainer import TrainConfig, train  # noqa: E402
from trainer.config import ConfigError  # noqa: E402
from trainer.sae import SparseAutoencoder  # noqa: E402
from trainer.schedules import L1Schedule, LRSchedule  # noqa: E402

TINY = dict(d_in=16, d_sae=64, batch_size=128, threads=1, checkpoint_every=0, synth_active=3.0, dead_window=50)


def tiny(**kw: object) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})  # type: ignore[arg-type]


def test_forward_backward_matches_autograd() -> None:
    torch.manual_seed(0)
    for variant in ("standard", "april2024"):
        sae = SparseAutoencoder(12, 40, variant=variant).double()
        for p in sae.parameters():
            p.grad = torch.zeros_like(p)
        with torch.no_grad():
            sae.b_enc.normal_(0, 0.1)
            sae.b_dec.normal_(0, 0.3)
        x = torch.randn(24, 12, dtype=torch.float64)
        stats = sae.forward_backward(x, 0.03, count_fires=True)
        ref = {n: p.detach().clone().requires_grad_(True) for n, p in sae.named_parameters()}
        f = torch.relu((x - ref["b_dec"]) @ ref["W_enc"] + ref["b_enc"])
        x_hat = f @ ref["W_dec"] + ref["b_dec"]
        w = ref["W_dec"].norm(dim=1) if variant == "april2024" else 1.0
        loss = ((x_hat - x) ** 2).mean() + 0.03 * (f * w).sum(dim=1).mean()
        loss.backward()
        assert float(stats.loss) == pytest.approx(float(loss.detach()), rel=1e-12)
        assert int(stats.fire_count.sum()) == int((f > 0).sum())
        for name, p in sae.named_parameters():
            assert torch.allclose(p.grad, ref[name].grad, atol=1e-12), (variant, name)


def test_loss_falls_and_metrics_are_complete(tmp_path: Path) -> None:
    result = train(tiny(total_steps=150, l1_alpha=0.01), run_dir=tmp_path / "run")
    assert result.status == "completed" and result.steps == 150 and result.tokens == 150 * 128
    data = read_run(tmp_path / "run")
    m = data.metrics
    assert m["step"].to_list() == list(range(1, 151))  # every step logged by default
    assert m["tokens"].to_list() == [128.0 * s for s in range(1, 151)]
    loss = m["loss"].to_numpy()
    assert loss[-20:].mean() < 0.5 * loss[:5].mean()
    np.testing.assert_allclose(m["l0_frac"].to_numpy(), m["l0"].to_numpy() / 64)
    np.testing.assert_allclose(m["loss"].to_numpy(), (m["mse"] + m["l1_alpha"] * m["l1"]).to_numpy(), rtol=1e-5)
    assert m["explained_variance"][-1] > m["explained_variance"][0]
    cfg = data.config
    assert cfg["dead_window_steps"] == 50 and cfg["dead_window_tokens"] == 50 * 128
    for key in ("sae_report_version", "torch_version", "device", "seed", "start_time", "run_id", "input_scale", "data"):
        assert key in cfg, key
    assert cfg["d_in"] == 16 and cfg["resample_interval"] == 1000 and cfg["data"]["kind"] == "synthetic"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["tokens"] == 150 * 128
    assert 0 < summary["feature_recovery"]["mmcs"] <= 1
    assert data.feature_freq.shape == (64,) and data.input_sample.shape == (1024, 16)
    assert data.input_dims.columns == ["dim", "mean", "std", "absmax", "outlier"]


def test_higher_l1_alpha_gives_lower_l0(tmp_path: Path) -> None:
    l0 = []
    for i, alpha in enumerate((0.005, 0.03, 0.1)):
        train(tiny(total_steps=200, l1_alpha=alpha), run_dir=tmp_path / f"r{i}")
        l0.append(read_run(tmp_path / f"r{i}").metrics["l0_frac"][-30:].mean())
    assert l0[0] > l0[1] > l0[2], l0


def test_higher_l1_alpha_kills_more_features_and_resampling_revives_them(tmp_path: Path) -> None:
    # 8 true features under 64 SAE features (8x the true dictionary), lr 0.01: the surplus features
    # die at a high l1_alpha and mostly survive a low one (measured: 0.4-1.4 vs 8-14 dead of 64, seeds 0-2).
    dead = []
    for i, alpha in enumerate((0.005, 0.1)):
        train(tiny(total_steps=400, l1_alpha=alpha, synth_features=8, synth_active=2.0, resample_interval=0, learning_rate=0.01),
              run_dir=tmp_path / f"r{i}")
        dead.append(read_run(tmp_path / f"r{i}").metrics["dead"][-50:].mean())
    assert dead[1] >= 5 and dead[1] > 3 * dead[0] + 3, dead
    # Resampling at step 200 finds the dead features (n > 0) and they leave the dead count.
    train(tiny(total_steps=260, l1_alpha=0.1, synth_features=8, synth_active=2.0, resample_interval=200, learning_rate=0.01),
          run_dir=tmp_path / "res")
    data = read_run(tmp_path / "res")
    (ev,) = [e for e in data.events if e.kind == "resample"]
    by_step = dict(zip(data.metrics["step"].to_list(), data.metrics["dead"].to_list()))
    assert ev.step == 200 and ev.data["n"] >= 3 and ev.data["n"] == by_step[200]
    assert by_step[201] <= by_step[200] - ev.data["n"] + 1


def test_resampling_revives_dead_features_and_logs_the_event(tmp_path: Path) -> None:
    # Ground truth: start from a trained SAE in which features 0-19 can never fire (b_enc = -100).
    train(tiny(total_steps=50), run_dir=tmp_path / "a")
    src = tmp_path / "a" / "checkpoints" / "final"
    weights = load_file(str(src / "sae.safetensors"))
    weights["b_enc"][:20] = -100.0
    killed = tmp_path / "killed"
    killed.mkdir()
    from safetensors.torch import save_file

    save_file(weights, str(killed / "sae.safetensors"))
    cfg = tiny(total_steps=120, init_from=str(killed), resample_interval=60, dead_window=20)
    train(cfg, run_dir=tmp_path / "run")
    data = read_run(tmp_path / "run")
    (ev,) = [e for e in data.events if e.kind == "resample"]
    assert ev.step == 60 and ev.data["n"] == len(ev.data["features"]) and ev.data["dead_window"] == 20
    assert set(range(20)) <= set(ev.data["features"])  # every killed feature was resampled
    dead = dict(zip(data.metrics["step"].to_list(), data.metrics["dead"].to_list()))
    assert dead[19] == 0 and dead[20] >= 20 and dead[60] >= 20  # dead once the window has passed
    # one full window after resampling, the killed features fire again
    assert dead[60 + 20] < 20 and dead[60 + 20] <= dead[60] - 15
    final = load_file(str(tmp_path / "run/checkpoints/final/sae.safetensors"))
    assert (final["b_enc"][:20] > -50).all()
    freq = data.feature_freq
    assert (freq[:20] > 0).sum() >= 15


def test_piecewise_schedule_changes_l1_alpha_on_the_named_steps(tmp_path: Path) -> None:
    cfg = tiny(total_steps=60, learning_rate=1e-3, l1_alpha_schedule={0: 0.01, 20: 0.02, 45: 0.04}, lr_schedule="step",
               lr_step_milestones=[30], lr_step_gamma=0.5)
    assert cfg.l1_schedule == "piecewise"
    train(cfg, run_dir=tmp_path / "run")
    data = read_run(tmp_path / "run")
    alpha = dict(zip(data.metrics["step"].to_list(), data.metrics["l1_alpha"].to_list()))
    assert [alpha[s] for s in (1, 19, 20, 44, 45, 60)] == [0.01, 0.01, 0.02, 0.02, 0.04, 0.04]
    lr = dict(zip(data.metrics["step"].to_list(), data.metrics["lr"].to_list()))
    assert lr[29] == pytest.approx(1e-3) and lr[30] == pytest.approx(5e-4)
    changes = [(e.kind, e.step, e.data["value"]) for e in data.events if e.kind in ("l1_change", "lr_change")]
    assert changes == [("l1_change", 20, 0.02), ("lr_change", 30, 5e-4), ("l1_change", 45, 0.04)]


def test_schedules_as_functions() -> None:
    cfg = TrainConfig(total_steps=100, learning_rate=1.0, lr_schedule="cosine", lr_warmup_steps=10,
                      lr_decay_steps=20, lr_min_ratio=0.1, l1_alpha=0.2, l1_warmup_steps=10)
    lr, l1 = LRSchedule(cfg), L1Schedule(cfg)
    assert [lr(s) for s in (1, 5, 10, 80)] == [0.1, 0.5, 1.0, 1.0]
    assert lr(90) == pytest.approx(0.1 + 0.9 * 0.5) and lr(100) == pytest.approx(0.1)
    assert [m.step for m in lr.milestones()] == [10, 81]
    assert l1(5) == pytest.approx(0.1) and l1(10) == 0.2 and cfg.l1_schedule == "warmup"
    lin = LRSchedule(TrainConfig(total_steps=10, learning_rate=1.0, lr_schedule="linear"))
    assert lin(10) == 0.0 and lin(5) == pytest.approx(0.5)


def test_checkpoint_layout_and_init_from(tmp_path: Path) -> None:
    first = train(tiny(total_steps=120, checkpoint_every=50), run_dir=tmp_path / "a")
    ckpts = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert ckpts == ["final", "step_000000050", "step_000000100", "step_000000120"]
    weights = load_file(str(tmp_path / "a/checkpoints/final/sae.safetensors"))
    assert {k: tuple(v.shape) for k, v in weights.items()} == {
        "W_enc": (16, 64), "b_enc": (64,), "W_dec": (64, 16), "b_dec": (16,)}
    assert torch.allclose(weights["W_dec"].norm(dim=1), torch.ones(64), atol=1e-5)  # unit-norm decoder rows
    meta = json.loads((tmp_path / "a/checkpoints/final/config.json").read_text())
    assert meta["d_sae"] == 64 and meta["step"] == 120
    # SAE-Track style: start a second SAE from the first one's weights (and Adam state)
    second = train(tiny(total_steps=5, init_from=str(tmp_path / "a"), init_optimizer=True), run_dir=tmp_path / "b")
    m_a, m_b = read_run(tmp_path / "a").metrics, read_run(tmp_path / "b").metrics
    assert m_b["loss"][0] < 0.5 * m_a["loss"][0]
    assert first.status == second.status == "completed"
    assert read_run(tmp_path / "b").config["init_from_step"] == 120


def test_april2024_variant_keeps_decoder_free_and_does_not_resample(tmp_path: Path) -> None:
    cfg = tiny(total_steps=80, sae_variant="april2024", l1_alpha=0.02)
    assert cfg.resample_interval == 0
    train(cfg, run_dir=tmp_path / "run")
    w = load_file(str(tmp_path / "run/checkpoints/final/sae.safetensors"))["W_dec"]
    assert not torch.allclose(w.norm(dim=1), torch.ones(64), atol=1e-3)
    assert not [e for e in read_run(tmp_path / "run").events if e.kind == "resample"]
    with pytest.raises(ConfigError, match="resample_interval: must be 0 with sae_variant april2024"):
        tiny(sae_variant="april2024", resample_interval=100)


def test_activation_files_npy_and_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(3000, 16)).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    shards = tmp_path / "shards"
    shards.mkdir()
    np.save(shards / "a.npy", acts[:1000])
    from safetensors.torch import save_file

    save_file({"activations": torch.from_numpy(acts[1000:2000])}, str(shards / "b.safetensors"))
    torch.save(torch.from_numpy(acts[2000:]), shards / "c.pt")
    cfg = dict(TINY, d_in=None, data_source="files", total_steps=40, shuffle_buffer_tokens=512, shuffle_block_tokens=128)
    for name, path in (("npy", tmp_path / "acts.npy"), ("dir", shards)):
        train(TrainConfig(**{**cfg, "data_path": str(path)}), run_dir=tmp_path / name)  # type: ignore[arg-type]
        data = read_run(tmp_path / name)
        assert data.config["d_in"] == 16 and data.config["data"]["n_tokens"] == 3000
        scale = data.config["input_scale"]
        assert scale == pytest.approx(np.sqrt(16) / np.linalg.norm(acts, axis=1).mean(), rel=0.05)
    # one epoch of the shuffled stream is a permutation of all tokens, and a function of the seed
    from trainer.data import FileData

    make = lambda: FileData(shards, seed=3, batch_size=128, buffer_tokens=512, block_tokens=128,  # noqa: E731
                            device=torch.device("cpu"))
    epoch = make().rows(0, 3000).numpy()
    assert not np.array_equal(epoch, acts)
    np.testing.assert_array_equal(np.sort(epoch, axis=0), np.sort(acts, axis=0))
    np.testing.assert_array_equal(make().rows(1234, 700).numpy(), epoch[1234:1934])


def test_docs_config_reference_is_current() -> None:
    from trainer.docs_keys import table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "trainer.md").read_text()
    assert table() in doc, "regenerate the table in docs/trainer.md with: python -m trainer.docs_keys"
    for key in TrainConfig.keys():
        assert f"`{key}`" in doc


def test_config_from_yaml_overrides_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("l1_alpha: 0.05\nresample_interval: 15000\nl1_alpha_schedule: {0: 0.01, 25000: 0.02}\n")
    cfg = TrainConfig.from_yaml(path, ["total_steps=1e5", "lr_step_milestones=[10, 5]", "device=cuda:1"])
    assert (cfg.total_steps, cfg.resample_interval, cfg.l1_schedule) == (100000, 15000, "piecewise")
    assert cfg.lr_step_milestones == [5, 10] and cfg.l1_alpha_schedule == {0: 0.01, 25000: 0.02}
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(path, ["l1_schedule=constant"])
    assert str(err.value) == "--set l1_schedule=constant: l1_schedule: is constant but l1_alpha_schedule is given (use piecewise)"


def test_example_configs_load() -> None:
    examples = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))
    assert len(examples) >= 5
    loaded = {p.stem: TrainConfig.from_yaml(p) for p in examples}
    assert [loaded[f"writeup_iter{i}"].l1_alpha for i in (1, 2, 3)] == [0.005, 0.05, 0.065]
    assert loaded["writeup_iter3"].resample_interval < loaded["writeup_iter1"].resample_interval
    assert all(loaded[f"writeup_iter{i}"].target_l0 == 0.05 for i in (1, 2, 3))
    assert loaded["option3_piecewise"].l1_schedule == "piecewise"


def test_bf16_precision_and_keep_checkpoints(tmp_path: Path) -> None:
    result = train(tiny(total_steps=60, precision="bf16", checkpoint_every=10, keep_checkpoints=2), run_dir=tmp_path / "r")
    loss = read_run(tmp_path / "r").metrics["loss"].to_numpy()
    assert result.status == "completed" and np.isfinite(loss).all() and loss[-10:].mean() < loss[:3].mean()
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["final", "step_000000050", "step_000000060"]


def test_explained_variance_formula() -> None:
    from trainer.sae import explained_variance

    x = torch.randn(50, 7, dtype=torch.float64)
    x_hat = x + 0.1 * torch.randn(50, 7, dtype=torch.float64)
    sse = ((x - x_hat) ** 2).sum()
    expected = 1 - sse / ((x - x.mean(dim=0)) ** 2).sum()
    assert float(explained_variance(sse, x)) == pytest.approx(float(expected), rel=1e-10)
