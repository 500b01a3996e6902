"""The topk, batchtopk and jumprelu SAEs: their hand-written gradients match autograd in float64,
each trains on the default synthetic data and recovers the true features, resume is exact, the
BatchTopK threshold is saved, and the config checks each variant's keys. Tiny dims, one thread."""

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
from trainer.variants import select_batchtopk, select_topk  # noqa: E402

VARIANTS = ("topk", "batchtopk", "jumprelu")


# --- gradients against autograd (float64) --------------------------------------------------------


class _Step(torch.autograd.Function):
    """H(x - theta) with the paper's pseudo-derivative (rectangle kernel) for theta only."""

    @staticmethod
    def forward(ctx, x, theta, eps):  # type: ignore[override]
        ctx.save_for_backward(x, theta)
        ctx.eps = eps
        return (x > theta).to(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, theta = ctx.saved_tensors
        k = ((x - theta).abs() < 0.5 * ctx.eps).to(x) / ctx.eps
        return None, -(k * g).sum(dim=0), None


class _JumpReLU(torch.autograd.Function):
    """x H(x - theta): gradient H for x, -(theta/eps) K for theta."""

    @staticmethod
    def forward(ctx, x, theta, eps):  # type: ignore[override]
        ctx.save_for_backward(x, theta)
        ctx.eps = eps
        return x * (x > theta).to(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, theta = ctx.saved_tensors
        k = ((x - theta).abs() < 0.5 * ctx.eps).to(x) / ctx.eps
        return (x > theta).to(x) * g, -(theta * k * g).sum(dim=0), None


def _reference(sae: SparseAutoencoder, x: torch.Tensor, coef: float, k: int | None, dead: torch.Tensor | None):
    """The variant's loss through autograd, and the gradients of every parameter."""
    ref = {n: getattr(sae, n).detach().clone().requires_grad_(True) for n in sae.PARAM_NAMES}
    pre = (x - ref["b_dec"]) @ ref["W_enc"] + ref["b_enc"]
    B = x.shape[0]
    if sae.variant == "jumprelu":
        f = _JumpReLU.apply(pre, ref["threshold"], sae.bandwidth)
        l0 = _Step.apply(pre, ref["threshold"], sae.bandwidth).sum(dim=1).mean()
        x_hat = f @ ref["W_dec"] + ref["b_dec"]
        loss = ((x_hat - x) ** 2).mean() + coef * l0
    else:
        if sae.variant == "topk":
            vals, idx = pre.topk(k, dim=1)
            f = torch.zeros_like(pre).scatter(1, idx, vals.relu())
        else:
            vals, idx = pre.relu().reshape(-1).topk(B * k)
            f = torch.zeros_like(pre).reshape(-1).scatter(0, idx, vals).reshape(pre.shape)
        x_hat = f @ ref["W_dec"] + ref["b_dec"]
        loss = ((x_hat - x) ** 2).mean()
        n = int(dead.sum()) if dead is not None else 0
        if n and coef > 0:
            ka, scale = min(sae.aux_k, n), min(n / sae.aux_k, 1.0)
            av, ai = torch.where(dead[None], pre, -torch.inf).topk(ka, dim=1)
            a = torch.zeros_like(pre).scatter(1, ai, av.relu())
            e = (x - x_hat).detach()
            loss = loss + coef * scale * ((a @ ref["W_dec"] - e) ** 2).mean()
    loss.backward()
    return loss.detach(), {n: t.grad for n, t in ref.items()}


def _sae(variant: str, d_in: int = 12, d_sae: int = 40, **kw) -> SparseAutoencoder:
    torch.manual_seed(0)
    sae = SparseAutoencoder(d_in, d_sae, variant=variant, **kw).double()
    for p in sae.parameters():
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.1)
        sae.b_dec.normal_(0, 0.3)
        sae.W_enc.add_(0.05 * torch.randn_like(sae.W_enc))
        if variant == "jumprelu":
            sae.threshold.uniform_(0.05, 0.6)
    return sae


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("with_dead", [False, True])
@pytest.mark.parametrize("path", ["dense", "sparse", "syncfree-dense", "syncfree-sparse"])
def test_gradients_match_autograd_in_float64(variant: str, with_dead: bool, path: str, monkeypatch) -> None:
    """TopK/BatchTopK both ways: dense GEMMs (small SAEs) and the sparse kernels (large ones), each
    in the CPU's forms and in the sync-free forms a GPU uses (``variants.SYNC_FREE``)."""
    if variant == "jumprelu" and (with_dead or path != "dense"):
        pytest.skip("JumpReLU has no AuxK and one (dense, sync-free) path")
    import trainer.variants

    monkeypatch.setattr(trainer.variants, "DENSE_BELOW", 1 << 40 if path.endswith("dense") else 0)
    monkeypatch.setattr(trainer.variants, "SYNC_FREE", path.startswith("syncfree"))
    # wide bandwidth for jumprelu, so that many entries fall inside the kernel and test its terms
    sae = _sae(variant, jumprelu_bandwidth=0.4, aux_k=5)
    x = torch.randn(24, 12, dtype=torch.float64)
    dead = torch.zeros(40, dtype=torch.bool)
    if with_dead:
        dead[[1, 4, 7, 8, 20, 33, 39]] = True  # 7 dead: k_aux 5, scale 1; also with 3 (scale 0.6) below
    coef = 0.3 if variant != "jumprelu" else 0.02
    k = 4
    stats = sae.forward_backward(x, coef, count_fires=True, k=k, dead=dead if with_dead else None)
    loss, grads = _reference(sae, x, coef, k, dead if with_dead else None)
    assert float(stats.loss) == pytest.approx(float(loss), rel=1e-12)
    for name in sae.PARAM_NAMES:
        got = getattr(sae, name).grad
        assert torch.allclose(got, grads[name], atol=1e-12, rtol=1e-10), (variant, name, (got - grads[name]).abs().max())
    if variant != "jumprelu" and with_dead:
        assert float(stats.aux_loss) > 0
        dead2 = torch.zeros(40, dtype=torch.bool)
        dead2[[3, 9, 30]] = True  # fewer dead than aux_k: k_aux 3, scale 3/5
        stats = sae.forward_backward(x, coef, count_fires=True, k=k, dead=dead2)
        loss, grads = _reference(sae, x, coef, k, dead2)
        assert float(stats.loss) == pytest.approx(float(loss), rel=1e-12)
        for name in sae.PARAM_NAMES:
            assert torch.allclose(getattr(sae, name).grad, grads[name], atol=1e-12, rtol=1e-10), (variant, name)
        sae.aux_k = 2  # many dead latents for few AuxK slots: the sparse AuxK kernels on the sparse path
        stats = sae.forward_backward(x, coef, count_fires=True, k=k, dead=dead)
        loss, grads = _reference(sae, x, coef, k, dead)
        assert float(stats.loss) == pytest.approx(float(loss), rel=1e-12)
        for name in sae.PARAM_NAMES:
            assert torch.allclose(getattr(sae, name).grad, grads[name], atol=1e-12, rtol=1e-10), (variant, name)
    if variant == "jumprelu":  # the kernel really contributed: some entries lie within the bandwidth
        assert float(sae.threshold.grad.abs().max()) > 0


def test_fire_counts_and_l0() -> None:
    for variant in VARIANTS:
        sae = _sae(variant)
        x = torch.randn(24, 12, dtype=torch.float64)
        stats = sae.forward_backward(x, 0.01, count_fires=True, k=4, dead=None)
        f = sae.encode(x, k=4) if variant != "batchtopk" else None
        if variant == "topk":
            assert int(stats.fire_count.sum()) == int((f > 0).sum()) <= 24 * 4
        if variant == "batchtopk":
            assert int(stats.fire_count.sum()) <= 24 * 4
        if variant == "jumprelu":
            assert int(stats.fire_count.sum()) == int((f > 0).sum())
            mse = float(stats.mse)
            assert float(stats.loss) == pytest.approx(mse + 0.01 * float(stats.fire_count.sum()) / 24, rel=1e-12)


@pytest.mark.parametrize("sync_free", [False, True])
def test_batchtopk_selection_is_the_batch_top_including_the_fallback(sync_free: bool, monkeypatch) -> None:
    import trainer.variants

    monkeypatch.setattr(trainer.variants, "SYNC_FREE", sync_free)  # True: the batch's top taken directly
    g = torch.Generator().manual_seed(1)
    for trial in range(20):
        pre = torch.randn(64, 200, generator=g, dtype=torch.float64)
        if trial % 2:  # a few tokens far larger than the rest: they hold more than 4k of the batch's top
            pre[:3] *= 20
        crow, col, val = select_batchtopk(pre, 5)
        rows = torch.repeat_interleave(torch.arange(64), crow.diff())
        got = set(zip(rows.tolist(), col.tolist()))
        top = pre.reshape(-1).topk(64 * 5).indices
        want = {(int(i) // 200, int(i) % 200) for i in top}
        assert got == want
        assert torch.equal(val, pre[rows, col])
        # row-major: rows ascending, columns ascending within a row
        assert bool((rows.diff() >= 0).all()) and bool((col.diff()[rows.diff() == 0] > 0).all())
    crow, col, val = select_topk(pre, 7)
    assert torch.equal(crow, torch.arange(0, 64 * 7 + 1, 7)) and bool((col.view(64, 7).diff(dim=1) > 0).all())


# --- training, recovery, resume -------------------------------------------------------------------

#: The default synthetic data (d_in 64, d_sae 512, 64 true features, 16 active per token) at each
#: example's settings, shortened; each must recover the true features as the standard SAE does.
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(variant: str, **over) -> TrainConfig:
    cfg = TrainConfig.from_yaml(EXAMPLES / f"{variant}.yaml")
    return cfg.replace(**{"threads": 1, "checkpoint_every": 0, **over})


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_trains_and_recovers_the_true_features(variant: str, tmp_path: Path) -> None:
    result = train(_example(variant, total_steps=1500), run_dir=tmp_path / "run")
    assert result.status == "completed"
    assert result.feature_recovery is not None and result.feature_recovery >= 0.9, result.feature_recovery
    data = read_run(tmp_path / "run")
    m = data.metrics
    cfg = data.config
    assert cfg["sae_variant"] == variant and cfg["l1_alpha"] is None
    loss = m["loss"].to_numpy()
    assert loss[-50:].mean() < 0.5 * loss[:5].mean()
    assert m["l1"].null_count() == m.height and m["l1_alpha"].null_count() == m.height  # no L1 here
    if variant == "jumprelu":
        np.testing.assert_allclose(m["loss"].to_numpy(), (m["mse"] + m["l0_coefficient"] * m["l0"]).to_numpy(), rtol=1e-5)
        assert 0.01 < m["l0_frac"][-200:].median() < 0.15
    else:
        np.testing.assert_allclose(m["loss"].to_numpy(),
                                   (m["mse"] + cfg["aux_loss_coefficient"] * m["aux_loss"]).to_numpy(), rtol=1e-5)
        assert (m["k"].to_numpy() == cfg["k"]).all()
        l0 = m["l0"].to_numpy()
        assert (l0 <= cfg["k"] + 1e-9).all() if variant == "topk" else abs(l0[-100:].mean() - cfg["k"]) < 0.5
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["feature_recovery"]["mmcs"] == pytest.approx(result.feature_recovery)


@pytest.mark.parametrize("variant", VARIANTS)
def test_resume_is_exact(variant: str, tmp_path: Path) -> None:
    """Stopped at a checkpoint and resumed: the metrics equal an uninterrupted run's, bit for bit
    (``elapsed_s`` aside), and so do the final weights (the JumpReLU threshold, its Adam state and
    the AuxK dead bookkeeping included)."""
    over = dict(total_steps=240, checkpoint_every=120, dead_window=40, batch_size=256)
    train(_example(variant, **over), run_dir=tmp_path / "whole")
    train(_example(variant, **{**over, "total_steps": 120}), run_dir=tmp_path / "cut")
    train(_example(variant, **over), resume=tmp_path / "cut")
    a, b = read_run(tmp_path / "whole").metrics, read_run(tmp_path / "cut").metrics
    assert a.height == b.height == 240
    for col in a.columns:
        if col != "elapsed_s":
            assert a[col].to_list() == b[col].to_list() or (a[col].null_count() == a.height == b[col].null_count()), col
    wa = load_file(str(tmp_path / "whole/checkpoints/final/sae.safetensors"))
    wb = load_file(str(tmp_path / "cut/checkpoints/final/sae.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    if variant in ("topk", "batchtopk"):
        assert (a["aux_loss"].to_numpy()[60:] > 0).any()  # AuxK was at work in this stretch


def test_batchtopk_saves_its_inference_threshold(tmp_path: Path) -> None:
    train(_example("batchtopk", total_steps=200), run_dir=tmp_path / "run")
    w = load_file(str(tmp_path / "run/checkpoints/final/sae.safetensors"))
    thr = w["threshold"]
    assert thr.shape == (w["W_dec"].shape[0],) and float(thr.min()) == float(thr.max()) > 0
    # used at inference: about k latents per token on fresh data
    sae = SparseAutoencoder(64, w["W_dec"].shape[0], variant="batchtopk")
    sae.load_tensors(w, "ckpt")
    assert float(sae.threshold) == float(thr[0])
    from trainer.data import SyntheticData

    cfg = TrainConfig.from_yaml(EXAMPLES / "batchtopk.yaml")
    data = SyntheticData(d_in=64, n_features=64, active=cfg.synth_active, power=cfg.synth_power, noise=cfg.synth_noise,
                         outlier_dims=0, outlier_scale=10.0, mean_norm=cfg.synth_mean_norm,
                         magnitude_sigma=cfg.synth_magnitude_sigma, seed=0, batch_size=512, device=torch.device("cpu"))
    data.scale = json.loads((tmp_path / "run/checkpoints/final/config.json").read_text())["input_scale"]
    l0 = float((sae.encode(data.batch(10_000)) > 0).sum(dim=1).double().mean())
    assert 0.5 * cfg.k < l0 < 2.0 * cfg.k, l0


def test_variant_config_checks() -> None:
    assert TrainConfig().l1_alpha == 0.01 and TrainConfig(sae_variant="april2024").l1_alpha == 0.01
    cfg = TrainConfig(sae_variant="topk", k=16)
    assert cfg.l1_alpha is None and cfg.resample_interval == 0 and cfg.l0_coefficient is None
    assert TrainConfig(sae_variant="jumprelu").l0_coefficient is not None
    with pytest.raises(ConfigError, match="k: required with sae_variant topk"):
        TrainConfig(sae_variant="topk")
    with pytest.raises(ConfigError, match="l1_alpha: not used by sae_variant topk"):
        TrainConfig(sae_variant="topk", k=8, l1_alpha=0.01)
    with pytest.raises(ConfigError, match="k: only used by sae_variant topk and batchtopk"):
        TrainConfig(k=8)
    with pytest.raises(ConfigError, match="l0_coefficient: only used by sae_variant jumprelu"):
        TrainConfig(l0_coefficient=0.1)
    with pytest.raises(ConfigError, match="resample_interval: must be 0 with sae_variant jumprelu"):
        TrainConfig(sae_variant="jumprelu", resample_interval=100)
    with pytest.raises(ConfigError, match="k: must be at most d_sae"):
        TrainConfig(sae_variant="topk", k=600, d_sae=512)
    # SAELens' names: architecture, l0_warm_up_steps; sparsify's k_decay_steps
    cfg = TrainConfig.from_dict({"architecture": "jumprelu", "l0_coefficient": 0.002, "l0_warm_up_steps": 50})
    assert (cfg.sae_variant, cfg.l0_coefficient, cfg.l0_warmup_steps) == ("jumprelu", 0.002, 50)
