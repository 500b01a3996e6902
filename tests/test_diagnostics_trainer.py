"""The trainer's diagnostics (issue 17): l2_ratio (shrinkage) on every logged step, the
feature-density summary every density_every steps with the per-feature density kept on disk, and
with data_source: model the LM's loss with the SAE spliced in (ce_loss_*), each checked against an
independent computation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from sae_report.runlog import read_run  # noqa: E402
from trainer.config import ConfigError, TrainConfig  # noqa: E402
from trainer.data import SyntheticData  # noqa: E402
from trainer.loop import train  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SMALL = dict(d_in=16, d_sae=64, batch_size=128, device="cpu", threads=1, seed=1)


def _cfg(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())


def _data(cfg: dict) -> SyntheticData:
    """The run's synthetic data, rebuilt from its config.yaml."""
    data = SyntheticData(d_in=cfg["d_in"], n_features=cfg["synth_features"], active=cfg["synth_active"],
                         power=cfg["synth_power"], noise=cfg["synth_noise"], outlier_dims=cfg["synth_outlier_dims"],
                         outlier_scale=cfg["synth_outlier_scale"], mean_norm=cfg["synth_mean_norm"],
                         magnitude_sigma=cfg["synth_magnitude_sigma"], seed=cfg["data_seed"],
                         batch_size=cfg["batch_size"], device=torch.device("cpu"))
    data.scale = cfg["input_scale"]
    return data


def _row(run: Path, step: int) -> dict:
    m = read_run(run).metrics
    return m.filter(m["step"] == step).to_dicts()[0]


# ------------------------------------------------------------------------------------------------
# l2_ratio
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant,extra", [("standard", {}), ("april2024", {}), ("topk", {"k": 8}),
                                           ("jumprelu", {})])
def test_l2_ratio_equals_the_ratio_from_a_checkpoints_weights(tmp_path: Path, variant: str, extra: dict) -> None:
    """The row of step 11 is computed with the weights of the checkpoint at step 10, on batch 11."""
    res = train(TrainConfig(sae_variant=variant, total_steps=12, checkpoint_every=10, density_every=0, **SMALL,
                            **extra), tmp_path)
    run = res.run_dir
    cfg = _cfg(run)
    w = load_file(str(run / "checkpoints" / "step_000000010" / "sae.safetensors"))
    x = _data(cfg).batch(11).double()
    pre = (x - w["b_dec"].double()) @ w["W_enc"].double() + w["b_enc"].double()
    if variant == "topk":
        vals, idx = pre.topk(8, dim=1)
        f = torch.zeros_like(pre).scatter_(1, idx, vals.relu())
    elif variant == "jumprelu":
        f = pre * (pre > w["threshold"].double())
    else:
        f = pre.relu()
    x_hat = f @ w["W_dec"].double() + w["b_dec"].double()
    expect = float((x_hat.norm(dim=1) / x.norm(dim=1)).mean())
    got = _row(run, 11)["l2_ratio"]
    assert got == pytest.approx(expect, rel=2e-4)
    m = read_run(run).metrics
    assert m["l2_ratio"].null_count() == 0 and m["l2_ratio"].is_finite().all()


def test_a_strong_l1_penalty_shrinks_the_reconstruction(tmp_path: Path) -> None:
    """Synthetic data without the constant offset (b_dec would reconstruct it unshrunk, and the ratio
    of a collapsed SAE would stay at ||mean|| / ||x||)."""
    ratios, runs = {}, {}
    for alpha in (0.001, 0.2):
        res = train(TrainConfig(l1_alpha=alpha, total_steps=300, checkpoint_every=0, density_every=0, synth_mean_norm=0.0,
                                d_in=32, d_sae=128, batch_size=256, device="cpu", threads=1, seed=0),
                    tmp_path / str(alpha))
        m = read_run(res.run_dir).metrics
        ratios[alpha] = float(m["l2_ratio"].tail(20).mean())
        runs[alpha] = res.run_dir
    assert ratios[0.001] > 0.95
    assert ratios[0.2] < 0.7
    # ... and the analysis of the trained runs says so: a shrinkage finding for the strong penalty only,
    # quoting the second-half median of the logged l2_ratio
    from sae_report.analysis import analyze
    from sae_report.analysis.result import FindingKind

    strong = analyze(read_run(runs[0.2]))
    (f,) = [f for f in strong.findings if f.kind == FindingKind.SHRINKAGE]
    m = read_run(runs[0.2]).metrics
    first, last = int(m["step"].min()), int(m["step"].max())
    median = float(m.filter(m["step"] >= first + (last - first) / 2)["l2_ratio"].median())
    assert f"a median of {median:.4g} over the second half" in f.explanation and median < 0.9
    assert not [f for f in analyze(read_run(runs[0.001])).findings if f.kind == FindingKind.SHRINKAGE]


# ------------------------------------------------------------------------------------------------
# the feature-density summary
# ------------------------------------------------------------------------------------------------


def test_the_density_columns_are_the_summary_of_the_saved_density(tmp_path: Path) -> None:
    res = train(TrainConfig(total_steps=60, density_every=20, dead_window=20, checkpoint_every=0, l1_alpha=1.0,
                            learning_rate=0.03, resample_interval=0, **SMALL), tmp_path)
    run = res.run_dir
    m = read_run(run).metrics
    cols = ["density_below_1e-5", "density_below_1e-6", "mean_log10_density", "dense_features"]
    logged = m.filter(m["density_below_1e-5"].is_not_null())
    assert logged["step"].to_list() == [20, 40, 60]
    assert m.filter(m["step"] == 15)[cols].null_count().row(0) == (1, 1, 1, 1)  # null, never NaN
    assert not np.isnan(m["density_below_1e-5"].drop_nulls().to_numpy()).any()
    d_sae = SMALL["d_sae"]
    tokens = 20 * SMALL["batch_size"]
    for row in logged.to_dicts():
        freq = np.load(run / "stats" / "feature_density" / f"step_{row['step']:08d}.npy")
        assert freq.shape == (d_sae,) and freq.dtype == np.float64
        counts = freq * tokens
        assert np.allclose(counts, np.round(counts))  # whole numbers of tokens
        assert row["density_below_1e-5"] == pytest.approx(sum(f < 1e-5 for f in freq) / d_sae)
        assert row["density_below_1e-6"] == pytest.approx(sum(f < 1e-6 for f in freq) / d_sae)
        assert row["mean_log10_density"] == pytest.approx(sum(math.log10(f + 1e-10) for f in freq) / d_sae)
        assert row["dense_features"] == sum(f > 0.1 for f in freq)
    # with density_every = dead_window, the last interval is the window stats/feature_freq.npy holds
    np.testing.assert_allclose(np.load(run / "stats" / "feature_density" / "step_00000060.npy"),
                               np.load(run / "stats" / "feature_freq.npy"))
    # the strong penalty kills a few features; at first every feature fires on about half the tokens
    assert logged["density_below_1e-5"][-1] > 0 and logged["mean_log10_density"][-1] == pytest.approx(
        sum(max(math.log10(1e-10), math.log10(f + 1e-10)) for f in np.load(run / "stats" / "feature_freq.npy")) / d_sae)
    assert logged["dense_features"].to_list()[0] == d_sae > logged["dense_features"].to_list()[-1]


def test_density_every_zero_logs_no_density(tmp_path: Path) -> None:
    res = train(TrainConfig(total_steps=5, density_every=0, checkpoint_every=0, **SMALL), tmp_path)
    m = read_run(res.run_dir).metrics
    assert m["mean_log10_density"].null_count() == m.height
    assert not (res.run_dir / "stats" / "feature_density").exists()
    with pytest.raises(ConfigError, match="density_every"):
        TrainConfig(density_every=-1)
    with pytest.raises(ConfigError, match="eval_dataset"):
        TrainConfig(eval_dataset="x.txt")


# ------------------------------------------------------------------------------------------------
# the LM's loss with the SAE spliced in (tiny random GPT-2, built offline)
# ------------------------------------------------------------------------------------------------


def test_ce_loss_score_equals_a_hand_computation_on_a_tiny_gpt2(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from harvest_support import build_tiny_model
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from trainer.texts import pydoc_paragraphs

    model = build_tiny_model("gpt2", tmp_path / "gpt2")
    docs = [" ".join(p.split()) for p in pydoc_paragraphs()[:200]]
    corpus = tmp_path / "text.txt"
    corpus.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    ctx, eval_tokens = 32, 128
    config = TrainConfig(data_source="model", model=str(model), hookpoint="layers.0", dataset=str(corpus),
                         context_size=ctx, model_batch_size=4, shuffle_buffer_tokens=1000, batch_size=64,
                         total_steps=6, eval_every=3, eval_tokens=eval_tokens, d_sae=128, checkpoint_every=0,
                         threads=1, device="cpu")
    res = train(config, tmp_path / "runs")
    run = res.run_dir
    cfg = _cfg(run)
    assert cfg["ce_eval"]["rows"] == eval_tokens // ctx and cfg["ce_eval"]["held_out"] is False
    m = read_run(run).metrics
    evaluated = m.filter(m["ce_loss_score"].is_not_null())
    assert evaluated["step"].to_list() == [3, 6]
    got = evaluated.filter(evaluated["step"] == 6).to_dicts()[0]

    # the same rows by hand: documents packed, each starting with BOS, every row starting with BOS
    tok = AutoTokenizer.from_pretrained(str(model))
    bos = tok.bos_token_id
    rows: list[list[int]] = []
    row: list[int] = []
    for doc in docs:
        seq = [bos, *tok(doc, add_special_tokens=False)["input_ids"]]
        pos = 0
        while pos < len(seq) and len(rows) < eval_tokens // ctx:
            if not row and seq[pos] != bos:
                row.append(bos)
            take = min(ctx - len(row), len(seq) - pos)
            row += seq[pos:pos + take]
            pos += take
            if len(row) == ctx:
                rows.append(row)
                row = []
    ids = torch.tensor(rows)
    lm = GPT2LMHeadModel.from_pretrained(str(model)).eval()
    w = {k: v.double() for k, v in load_file(str(run / "checkpoints" / "final" / "sae.safetensors")).items()}
    scale = cfg["input_scale"]

    def ce(mode: str) -> float:
        def hook(module, args, output):
            h = output if isinstance(output, torch.Tensor) else output[0]
            if mode == "zero":
                new = torch.zeros_like(h)
            else:
                x = h.double() * scale
                f = ((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]).relu()
                x_hat = (f @ w["W_dec"] + w["b_dec"]) / scale
                new = torch.where((ids != bos)[..., None], x_hat.to(h.dtype), h)
            return new if isinstance(output, torch.Tensor) else (new, *output[1:])

        handle = lm.transformer.h[0].register_forward_hook(hook) if mode != "clean" else None
        with torch.no_grad():
            logits = lm(input_ids=ids).logits
        if handle is not None:
            handle.remove()
        return float(torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                       ids[:, 1:].reshape(-1)))

    clean, with_sae, ablated = ce("clean"), ce("sae"), ce("zero")
    assert got["ce_loss_clean"] == pytest.approx(clean, rel=1e-5)
    assert got["ce_loss_with_sae"] == pytest.approx(with_sae, rel=1e-4)
    assert got["ce_loss_ablated"] == pytest.approx(ablated, rel=1e-5)
    assert got["ce_loss_score"] == pytest.approx((ablated - with_sae) / (ablated - clean), rel=1e-3, abs=1e-4)
    assert with_sae != clean


def test_an_encoder_has_no_spliced_in_loss(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from harvest_support import build_tiny_model

    model = build_tiny_model("bert", tmp_path / "bert")
    config = TrainConfig(data_source="model", model=str(model), hookpoint="layers.0", dataset="builtin:pydoc",
                         context_size=32, model_batch_size=4, shuffle_buffer_tokens=1000, batch_size=64,
                         total_steps=3, eval_every=1, d_sae=128, checkpoint_every=0, threads=1, device="cpu")
    res = train(config, tmp_path / "runs")
    assert "encoder" in _cfg(res.run_dir)["ce_eval"]["skipped"]
    assert read_run(res.run_dir).metrics["ce_loss_score"].null_count() == 3
