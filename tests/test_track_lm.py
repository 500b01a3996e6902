"""The built-in language model of SAE-Track: real training, checkpoints, activations, cache."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trainer.lm import LMConfig, build_lm_series  # noqa: E402
from trainer.lm.corpus import load_corpus  # noqa: E402

TINY = dict(d_model=16, n_layer=2, n_head=2, ctx=16, batch_size=8, steps=30, warmup_steps=3, n_checkpoints=3,
            layer=0, n_act_tokens=300, max_corpus_bytes=20000, threads=1)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    return build_lm_series(LMConfig(**TINY), tmp_path_factory.mktemp("cache"))


def test_corpus_is_pythons_own_documentation():
    c = load_corpus()
    text = bytes(c.train[:200000]).decode("utf-8", "replace")
    assert len(c.train) + len(c.heldout) > 300_000
    assert "for" in text and "def" in text


def test_series_has_checkpoints_with_activation_files(series):
    assert [c.step for c in series.checkpoints] == [10, 20, 30]
    for c in series.checkpoints:
        a = np.load(c.acts_path, mmap_mode="r")
        assert a.shape == (300, 16) and a.dtype == np.float32
        assert np.isfinite(a).all()
        assert c.model_path.exists()
    first, last = (np.load(c.acts_path) for c in (series.checkpoints[0], series.checkpoints[-1]))
    assert not np.allclose(first, last)  # the model trained between the checkpoints
    # real training: held-out loss falls from ln(256) = 5.55 at initialisation
    assert series.checkpoints[-1].eval_loss < series.checkpoints[0].eval_loss < np.log(256)


def test_second_call_reuses_the_cache_and_is_deterministic(series, tmp_path):
    again = build_lm_series(LMConfig(**TINY), series.root.parent.parent)
    assert again.reused and again.root == series.root
    fresh = build_lm_series(LMConfig(**TINY), tmp_path)  # same seed, other cache: same numbers
    assert not fresh.reused
    np.testing.assert_allclose(np.load(fresh.acts_paths[-1]), np.load(series.acts_paths[-1]), rtol=1e-5, atol=1e-5)
    other = build_lm_series(LMConfig(**{**TINY, "seed": 1}), tmp_path)
    assert other.root != fresh.root
    assert not list(tmp_path.glob("lm/*.tmp-*"))


def test_checkpoint_spacing_and_config_checks():
    assert LMConfig(steps=1000, n_checkpoints=4).checkpoint_steps() == [250, 500, 750, 1000]
    log = LMConfig(steps=1000, n_checkpoints=4, spacing="log").checkpoint_steps()
    assert log == [125, 250, 500, 1000]
    with pytest.raises(ValueError, match="layer 3 is outside 0..2"):
        LMConfig(layer=3)
    with pytest.raises(ValueError, match="n_checkpoints must be at least 2"):
        LMConfig(n_checkpoints=1)


def test_a_killed_build_leaves_no_series_and_is_cleaned_up(tmp_path):
    import subprocess

    cfg = LMConfig(**TINY)
    key = cfg.cache_key(load_corpus(max_bytes=cfg.max_corpus_bytes).digest)
    proc = subprocess.Popen(["true"])  # a process that has exited: its pid names a dead build
    proc.wait()
    stale = tmp_path / "lm" / f"{key}.tmp-{proc.pid}"
    stale.mkdir(parents=True)
    (stale / "step_000000010").mkdir()
    series = build_lm_series(cfg, tmp_path)
    assert not stale.exists() and not series.reused and (series.root / "manifest.json").exists()
