"""The built-in corpus: Python's own documentation text (``pydoc_data.topics``), as bytes.

It ships with every CPython, so the built-in SAE-Track study needs no download. The text is
joined in sorted topic order (stable across runs) and encoded as UTF-8 bytes: the model is
byte-level, vocabulary 256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

VOCAB_SIZE = 256


@dataclass(frozen=True)
class Corpus:
    """The corpus as byte ids, split into a training part and a held-out part."""

    train: np.ndarray
    """Byte ids (uint8) the language model trains on."""
    heldout: np.ndarray
    """Byte ids (uint8) held out for the evaluation loss."""
    digest: str
    """SHA-256 of the full text (first 16 hex digits): part of the cache key."""


def load_corpus(heldout_frac: float = 0.05, max_bytes: int | None = None) -> Corpus:
    """Read ``pydoc_data.topics`` and split off the last ``heldout_frac`` as held-out text.

    ``max_bytes`` keeps only the first bytes (tests use a small slice).
    """
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:  # some stripped-down Pythons omit pydoc_data
        raise RuntimeError("pydoc_data.topics is missing from this Python: the built-in corpus needs it") from exc
    text = "\n\n".join(topics[key] for key in sorted(topics))
    data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    if max_bytes is not None:
        data = data[: int(max_bytes)]
    digest = hashlib.sha256(data.tobytes()).hexdigest()[:16]
    n_held = max(1, int(len(data) * heldout_frac))
    return Corpus(train=data[:-n_held].copy(), heldout=data[-n_held:].copy(), digest=digest)


def sample_windows(data: np.ndarray, n: int, ctx: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random windows of ``ctx + 1`` bytes (inputs plus next-byte targets), int64 ``[n, ctx+1]``."""
    starts = rng.integers(0, len(data) - ctx - 1, size=n)
    idx = starts[:, None] + np.arange(ctx + 1)[None, :]
    return data[idx].astype(np.int64)


def fixed_windows(data: np.ndarray, n: int, ctx: int) -> np.ndarray:
    """``n`` evenly spaced windows of ``ctx`` bytes, int64 ``[n, ctx]``: the same tokens at every
    checkpoint (activation continuity), spread over the whole text."""
    span = len(data) - ctx
    if span <= 0:
        raise ValueError(f"corpus of {len(data)} bytes is shorter than the context {ctx}")
    starts = np.linspace(0, span, num=n, dtype=np.int64)
    idx = starts[:, None] + np.arange(ctx)[None, :]
    return data[idx].astype(np.int64)
