"""Token rows: documents tokenised and cut into the rows a model runs on (the harvest's first stage,
``trainer/harvest.py``; the spliced-in loss's held-out rows, ``trainer/evaluate.py``).

Documents (``trainer.texts``) are tokenised without the tokenizer's special tokens and cut into rows
of ``context_size`` tokens: a causal language model gets *packed* rows (documents concatenated, each
starting with BOS when ``prepend_bos``, else followed by EOS; every row starts with BOS when
``prepend_bos``; no padding), an encoder one document per row with its own special tokens, padded
to the longest row of its model batch. Rows are grouped into model batches of ``model_batch_size``
rows, always the same rows; a ``Cursor`` names a place in that sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch

from .config import ConfigError
from .data import DataError
from .texts import TextDataset

_DOC_CHUNK = 64  # documents tokenised per tokenizer call


@dataclass(frozen=True)
class Cursor:
    """Where a model batch starts: the epoch over the dataset, the document index, and the offset
    in that document (a token offset for packed rows, a piece index for padded ones)."""

    epoch: int
    doc: int
    offset: int

    def to_list(self) -> list[int]:
        return [self.epoch, self.doc, self.offset]


@dataclass
class Batch:
    cursor: Cursor
    ids: torch.Tensor
    """[rows, tokens] int64 (CPU)."""
    mask: torch.Tensor | None
    """[rows, tokens] attention mask; None when there is no padding (packed rows)."""
    keep: torch.Tensor
    """[rows, tokens] bool: the tokens whose activations are kept."""
    n_keep: int
    docs: torch.Tensor | None = None
    """[rows, tokens] the document index of each token (only with ``TokenRows(track_docs=True)``)."""


class TokenRows:
    """The dataset as model batches of token rows (see the module docstring, step 1)."""

    def __init__(self, dataset: TextDataset, tokenizer: Any, *, causal: bool, context_size: int,
                 model_batch_size: int, prepend_bos: bool | None, exclude_special_tokens: bool,
                 track_docs: bool = False) -> None:
        self.dataset, self.tok = dataset, tokenizer
        self.track_docs = track_docs
        self.ctx, self.mbs = context_size, model_batch_size
        self.layout = "packed" if causal else "padded"
        bos = tokenizer.bos_token_id
        if self.layout == "packed":
            if prepend_bos and bos is None:
                raise ConfigError("prepend_bos: the tokenizer has no BOS token; set prepend_bos: false", "prepend_bos")
            self.prepend_bos = bool(bos is not None) if prepend_bos is None else bool(prepend_bos)
            if self.prepend_bos and context_size < 2:
                raise ConfigError("context_size: must be >= 2 with prepend_bos (a BOS and one token)", "context_size")
        else:
            self.prepend_bos = True if prepend_bos is None else bool(prepend_bos)
            n_special = tokenizer.num_special_tokens_to_add() if self.prepend_bos else 0
            if context_size <= n_special:
                raise ConfigError(f"context_size: must be above the {n_special} special tokens of a row", "context_size")
        self.bos = bos
        self.eos = tokenizer.eos_token_id
        self.pad = next((t for t in (tokenizer.pad_token_id, self.eos, bos, 0) if t is not None), 0)
        special = {getattr(tokenizer, a, None) for a in ("bos_token_id", "eos_token_id", "pad_token_id",
                                                         "sep_token_id", "cls_token_id")}
        self.special_ids = sorted(int(t) for t in special if t is not None)
        self.exclude_special = exclude_special_tokens
        self._special = torch.tensor(self.special_ids or [-1], dtype=torch.long)

    def describe(self) -> dict[str, Any]:
        tok = self.tok
        return {"layout": self.layout, "prepend_bos": self.prepend_bos,
                "bos_token": tok.bos_token if self.prepend_bos and self.layout == "packed" else None,
                "separator": ("bos" if self.prepend_bos else ("eos" if self.eos is not None else None))
                if self.layout == "packed" else None,
                "special_token_ids": self.special_ids, "exclude_special_tokens": self.exclude_special,
                "tokenizer": type(tok).__name__}

    # -- documents as token lists -----------------------------------------------------------------
    def _docs(self, start: Cursor) -> Iterator[tuple[int, int, Any]]:
        """``(epoch, doc, tokenised)`` from ``start`` on, forever (epoch after epoch); ``tokenised``
        is a token list (packed) or a list of pieces (padded). Documents without tokens are left out."""
        epoch, doc = start.epoch, start.doc
        while True:
            full_pass, any_tokens = doc == 0, False
            chunk: list[tuple[int, str]] = []
            for item in self.dataset.documents(doc):
                chunk.append(item)
                if len(chunk) == _DOC_CHUNK:
                    for i, toks in self._tokenise(chunk):
                        any_tokens = True
                        yield epoch, i, toks
                    chunk = []
            for i, toks in self._tokenise(chunk):
                any_tokens = True
                yield epoch, i, toks
            if full_pass and not any_tokens:
                raise DataError(f"dataset: {self.dataset.spec}: no text to tokenise")
            epoch, doc = epoch + 1, 0

    def _tokenise(self, chunk: list[tuple[int, str]]) -> list[tuple[int, Any]]:
        if not chunk:
            return []
        texts = [t for _, t in chunk]
        if self.layout == "packed":
            ids = self.tok(texts, add_special_tokens=False)["input_ids"]
            out = []
            for (i, _), seq in zip(chunk, ids):
                if not seq:
                    continue
                if self.prepend_bos:
                    seq = [self.bos, *seq]
                elif self.eos is not None:
                    seq = [*seq, self.eos]
                out.append((i, seq))
            return out
        if getattr(self.tok, "is_fast", False):
            enc = self.tok(texts, add_special_tokens=self.prepend_bos, truncation=True, max_length=self.ctx,
                           return_overflowing_tokens=True)
            pieces: dict[int, list[list[int]]] = {}
            for row, j in zip(enc["input_ids"], enc["overflow_to_sample_mapping"]):
                pieces.setdefault(int(j), []).append(list(row))
        else:  # a slow tokenizer: cut by hand, special tokens around each piece
            ids = self.tok(texts, add_special_tokens=False)["input_ids"]
            head = [t for t in (self.tok.cls_token_id or self.bos,) if t is not None] if self.prepend_bos else []
            tail = [t for t in (self.tok.sep_token_id or self.eos,) if t is not None] if self.prepend_bos else []
            n = self.ctx - len(head) - len(tail)
            pieces = {j: [head + seq[a:a + n] + tail for a in range(0, len(seq), n)] for j, seq in enumerate(ids)}
        out = []
        for j, (i, text) in enumerate(chunk):
            ps = [p for p in pieces.get(j, []) if p]
            real = [p for p in ps if any(t not in self.special_ids for t in p)]
            if real:
                out.append((i, ps))
        return out

    # -- rows and model batches -------------------------------------------------------------------
    def rows(self, start: Cursor) -> Iterator[tuple[Cursor, list[int], list[int] | None]]:
        """``(cursor at the row's start, token ids, document of each token or None)`` from ``start`` on."""
        first = True
        track = self.track_docs
        if self.layout == "padded":
            for epoch, doc, pieces in self._docs(start):
                k0 = start.offset if first else 0
                first = False
                for k in range(k0, len(pieces)):
                    yield Cursor(epoch, doc, k), pieces[k], [doc] * len(pieces[k]) if track else None
            return
        row: list[int] = []
        docs: list[int] = []
        at = start
        for epoch, doc, seq in self._docs(start):
            pos = start.offset if first else 0
            first = False
            while pos < len(seq):
                if not row:
                    at = Cursor(epoch, doc, pos)
                    if self.prepend_bos and seq[pos] != self.bos:
                        row.append(self.bos)
                        docs.append(doc)
                take = min(self.ctx - len(row), len(seq) - pos)
                row.extend(seq[pos:pos + take])
                if track:
                    docs.extend([doc] * take)
                pos += take
                if len(row) == self.ctx:
                    yield at, row, (docs if track else None)
                    row, docs = [], []

    def batches(self, start: Cursor) -> Iterator[Batch]:
        """Model batches of ``model_batch_size`` rows, the first starting at ``start`` (a batch
        start: a cursor this generator gave)."""
        rows: list[list[int]] = []
        docs: list[list[int] | None] = []
        at = start
        for cursor, row, row_docs in self.rows(start):
            if not rows:
                at = cursor
            rows.append(row)
            docs.append(row_docs)
            if len(rows) == self.mbs:
                yield self._batch(at, rows, docs)
                rows, docs = [], []

    def _batch(self, at: Cursor, rows: list[list[int]], docs: list[list[int] | None]) -> Batch:
        width = max(len(r) for r in rows)
        doc_ids = None
        if self.track_docs:
            doc_ids = torch.full((len(rows), width), -1, dtype=torch.long)
            for i, d in enumerate(docs):
                doc_ids[i, :len(d or [])] = torch.tensor(d or [], dtype=torch.long)
        if self.layout == "packed":
            ids = torch.tensor(rows, dtype=torch.long)
            mask = None
            keep = torch.ones_like(ids, dtype=torch.bool)
        else:
            ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
                mask[i, :len(r)] = 1
            keep = mask.bool()
        if self.exclude_special:
            keep &= ~torch.isin(ids, self._special)
        return Batch(at, ids, mask, keep, int(keep.sum()), doc_ids)


# ------------------------------------------------------------------------------------------------
# the activation stream and its shuffle buffers
# ------------------------------------------------------------------------------------------------


__all__ = ["Batch", "Cursor", "TokenRows"]
