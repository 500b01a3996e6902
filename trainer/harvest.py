"""Harvesting: activations of a transformers model on a text dataset, streamed into the trainer.

The pipeline, each stage a pure function of the config (so a resumed run sees the same data):

1. **Token rows** (``TokenRows``). Documents (``trainer.texts``) are tokenised without the
   tokenizer's special tokens and cut into rows of ``context_size`` tokens:
   - a causal language model (GPT-2, Llama, Pythia, ...) gets *packed* rows, as SAELens and
     sparsify make them: the documents are concatenated, each starting with the BOS token when
     ``prepend_bos`` (SAELens' way; the default when the tokenizer has one), else each followed by
     the EOS token (sparsify's way), and every row starts with BOS when ``prepend_bos``. No padding.
   - an encoder (BERT, MiniLM) gets one document per row (a longer one is cut into several), with
     the tokenizer's own special tokens (``[CLS] ... [SEP]``; none with ``prepend_bos: false``),
     padded to the longest row of its model batch.
   Rows are grouped into model batches of ``model_batch_size`` rows, always the same rows.
2. **Forward to the hookpoint** (``trainer.models.HookedForward``): the model runs only up to the
   hooked module. The activations of special tokens (BOS, EOS, PAD, CLS, SEP) and of padding are
   left out (``exclude_special_tokens: false`` keeps the special tokens, never padding). What is
   left, in row order, is the activation stream.
3. **Shuffle buffer**: the stream is cut into buffers of ``shuffle_buffer_tokens`` tokens; buffer
   ``k`` holds stream tokens ``[k N, (k+1) N)`` in a random order seeded by (data seed, k). So a
   training batch mixes tokens of many documents and positions, like SAELens' ActivationsStore,
   and any buffer can be rebuilt alone: it starts at a known model batch (``Cursor``) after a known
   number of tokens. A checkpoint records that start for the next step (``data_state``), so a
   resume runs the model from there, on exactly the rows it ran before.
4. **Prefetch** (``ModelData``): while the trainer reads buffer ``k``, a background thread harvests
   buffer ``k + 1`` (on a CUDA device on a stream of its own). When the model forward costs less
   than the SAE steps of a buffer, training runs at the speed of training from memory.

``sae-report harvest`` (``write_shards``) writes the same stream to safetensors shards for
``data_source: files``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .config import ConfigError, TrainConfig
from .data import DataError, _seed
from .models import HookedForward, LoadedModel, ModelSource, load_model, locate_model, resolve_hookpoint, versions
from .texts import TextDataset

#: Keys of the model source a resume cannot change (the model itself may move: ``check_resume``).
FIXED_MODEL_KEYS: dict[str, str] = {
    "model_revision": "it fixes the model's weights",
    "hookpoint": "it fixes which activations are read",
    "text_column": "it fixes the text", "context_size": "it fixes the token rows",
    "model_batch_size": "it fixes the model batches the data position is counted in",
    "model_dtype": "it fixes the activations' precision", "prepend_bos": "it fixes the token rows",
    "exclude_special_tokens": "it fixes which tokens are kept",
}

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


class _Cancelled(Exception):
    pass


class _Ahead:
    """An iterator over ``source`` that a daemon thread keeps ``depth`` items ahead of the consumer:
    tokenising (the tokenizer releases the GIL) overlaps the model's forward pass."""

    def __init__(self, source: Iterator[Batch], depth: int, stop: threading.Event) -> None:
        self.q: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop = stop
        self.thread = threading.Thread(target=self._fill, args=(source,), name="sae-report-tokenise", daemon=True)
        self.thread.start()

    def _fill(self, source: Iterator[Batch]) -> None:
        try:
            for item in source:
                while not self._put(("item", item)):
                    if self.stop.is_set():
                        return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            while not self._put(("error", exc)):
                if self.stop.is_set():
                    return

    def _put(self, item: tuple[str, Any]) -> bool:
        try:
            self.q.put(item, timeout=0.2)
            return True
        except queue.Full:
            return False

    def __iter__(self) -> "_Ahead":
        return self

    def __next__(self) -> Batch:
        kind, value = self.q.get()
        if kind == "error":
            raise value
        return value


class Harvester:
    """Builds buffer ``k`` of the activation stream: stream tokens ``[k N, (k+1) N)``, shuffled.

    ``starts[k] = (cursor, skip)``: buffer k begins ``skip`` kept tokens into the model batch at
    ``cursor``. Known for buffer 0, recorded for ``k + 1`` when ``k`` is built, restored from a
    checkpoint, or found by tokenising (no forward pass) from the nearest known start."""

    def __init__(self, rows: TokenRows, forward: HookedForward, *, buffer_tokens: int, seed: int,
                 out_device: torch.device) -> None:
        self.rows, self.forward = rows, forward
        self.N, self.seed, self.out_device = buffer_tokens, seed, out_device
        self.starts: dict[int, tuple[Cursor, int]] = {0: (Cursor(0, 0, 0), 0)}
        self._live: tuple[int, Iterator[Batch], torch.Tensor | None, tuple[Cursor, int]] | None = None
        self.stop = threading.Event()
        self._ahead: threading.Event | None = None
        self.tokens_harvested = 0
        self.forward_s = 0.0

    def acts(self, batch: Batch) -> torch.Tensor:
        """The kept activations of one model batch, ``[n_keep, d]`` float32 on the output device."""
        dev = self.forward.loaded.device
        ids = batch.ids.to(dev)
        mask = batch.mask.to(dev) if batch.mask is not None else None
        t = time.perf_counter()
        out = self.forward.run(ids, mask)
        sel = out.reshape(-1, out.shape[-1]) if batch.n_keep == batch.keep.numel() else out[batch.keep.to(dev)]
        sel = sel.to(self.out_device, dtype=torch.float32)
        self.forward_s += time.perf_counter() - t
        self.tokens_harvested += batch.n_keep
        return sel

    def stream(self, k: int, inv: torch.Tensor | None = None) -> torch.Tensor:
        """Stream tokens ``[k N, (k+1) N)``, float32 ``[N, d]``: in stream order, or stream token
        ``p`` at row ``inv[p]`` (each kept activation is copied once, into its place)."""
        if self._live is not None and self._live[0] == k:
            _, batches, part, origin = self._live
        else:
            cursor, skip = self.starts[k] if k in self.starts else self._fast_forward(k)
            if self._ahead is not None:
                self._ahead.set()  # the thread tokenising for the previous position stops
            self._ahead = threading.Event()
            batches = _Ahead(self.rows.batches(cursor), 4, self._ahead)
            first = next(batches)
            part = self.acts(first)[skip:] if first.n_keep > skip else None
            origin = (cursor, skip)
        self._live = None
        dst: torch.Tensor | None = None
        have = 0
        while True:
            # `part` holds the kept tokens of the batch at origin[0] after the first origin[1] of them
            if part is not None and len(part):
                if dst is None:
                    dst = torch.empty((self.N, part.shape[1]), dtype=torch.float32, device=self.out_device)
                take = min(len(part), self.N - have)
                if inv is None:
                    dst[have:have + take] = part[:take]
                else:
                    dst.index_copy_(0, inv[have:have + take], part[:take])
                have += take
                if have == self.N:
                    rest = part[take:] if take < len(part) else None
                    nxt = (origin[0], origin[1] + take)  # buffer k+1 starts after the tokens used here
                    break
            if self.stop.is_set():
                raise _Cancelled
            b = next(batches)
            part, origin = (self.acts(b), (b.cursor, 0)) if b.n_keep else (None, (b.cursor, 0))
        self.starts[k + 1] = nxt
        self._live = (k + 1, batches, rest, nxt)
        assert dst is not None
        return dst

    def _fast_forward(self, k: int) -> tuple[Cursor, int]:
        """The start of buffer ``k`` by tokenising (no forward pass) from the nearest known start;
        the starts of the buffers passed on the way are recorded too."""
        k0 = max(j for j in self.starts if j < k)
        cursor, skip = self.starts[k0]
        passed = -skip  # kept tokens from the start of buffer k0 to the start of the current batch
        j = k0 + 1
        for b in self.rows.batches(cursor):
            if self.stop.is_set():
                raise _Cancelled
            while passed + b.n_keep > (j - k0) * self.N:
                self.starts[j] = (b.cursor, (j - k0) * self.N - passed)
                if j == k:
                    return self.starts[k]
                j += 1
            passed += b.n_keep
        raise AssertionError("unreachable: the row stream is endless")  # pragma: no cover

    def buffer(self, k: int) -> torch.Tensor:
        """Buffer ``k``, shuffled (row ``i`` is stream token ``perm[i]``), float32 ``[N, d]`` on the
        output device."""
        perm = np.random.default_rng(_seed(self.seed, 7, k)).permutation(self.N)
        inv = np.empty_like(perm)
        inv[perm] = np.arange(self.N)
        return self.stream(k, torch.from_numpy(inv).to(self.out_device))


class _Worker:
    """One daemon thread that runs ``fn(k)`` for submitted ``k`` in order; results as futures."""

    def __init__(self, fn: Callable[[int], torch.Tensor], threads: int | None, cuda_device: torch.device | None) -> None:
        self.fn, self.threads, self.cuda_device = fn, threads, cuda_device
        self.q: queue.Queue[Any] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="sae-report-harvest", daemon=True)
        self.thread.start()

    def submit(self, k: int) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self.q.put((k, fut))
        return fut

    def _loop(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)  # this thread's own team (OpenMP: per thread)
        stream = torch.cuda.Stream(self.cuda_device) if self.cuda_device is not None else None
        while True:
            item = self.q.get()
            if item is None:
                return
            k, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                if stream is not None:
                    with torch.cuda.stream(stream):
                        out = self.fn(k)
                    stream.synchronize()
                else:
                    out = self.fn(k)
                fut.set_result(out)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                fut.set_exception(exc)

    def close(self) -> None:
        self.q.put(None)


def _stop_worker(harvester: Harvester, worker: _Worker | None) -> None:
    harvester.stop.set()
    if harvester._ahead is not None:
        harvester._ahead.set()
    if worker is not None:
        worker.close()


class ModelData:
    """``data_source: model``: the trainer's data source (the interface of ``FileData``)."""

    kind = "model"

    def __init__(self, config: TrainConfig, *, seed: int, batch_size: int, device: torch.device,
                 total_tokens: int | None = None, prefetch: bool = True, harvest_threads: int | None = None,
                 model_device: torch.device | None = None) -> None:
        assert config.model and config.hookpoint and config.dataset
        self.config, self.seed, self.batch_size, self.device = config, seed, batch_size, device
        self.source: ModelSource = locate_model(config.model, config.model_revision)
        self.dataset = TextDataset(config.dataset, config.text_column)
        if model_device is None:
            model_device = device if config.model_device == "auto" else torch.device(config.model_device)
        if model_device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"model_device: {config.model_device} requested but torch.cuda.is_available() is False",
                              "model_device")
        self.loaded: LoadedModel = load_model(self.source, config.model_dtype, model_device)
        self.hookpoint = resolve_hookpoint(self.loaded.model, config.hookpoint)
        self.forward = HookedForward(self.loaded, self.hookpoint)
        self.d_in = self.forward.width()
        self.rows_spec = TokenRows(self.dataset, self.loaded.tokenizer, causal=self.loaded.causal,
                                   context_size=config.context_size, model_batch_size=config.model_batch_size,
                                   prepend_bos=config.prepend_bos, exclude_special_tokens=config.exclude_special_tokens)
        self.N = config.shuffle_buffer_tokens
        self.harvester = Harvester(self.rows_spec, self.forward, buffer_tokens=self.N, seed=seed, out_device=device)
        self.total_tokens = total_tokens
        self.scale = 1.0
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._head: torch.Tensor | None = None
        self._futures: dict[int, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        cuda = model_device if model_device.type == "cuda" else None
        if harvest_threads is None and model_device.type == "cpu":
            harvest_threads = 1  # one core for the model while the trainer steps on the others
        self._worker = _Worker(self.harvester.buffer, harvest_threads, cuda) if prefetch else None
        self._finalizer = weakref.finalize(self, _stop_worker, self.harvester, self._worker)

    # -- buffers ----------------------------------------------------------------------------------
    def _get(self, k: int) -> torch.Tensor:
        with self._lock:
            if k in self._cache:
                self._cache.move_to_end(k)
                buf = self._cache[k]
            else:
                if self._worker is None:
                    buf = self.harvester.buffer(k)
                else:
                    fut = self._futures.pop(k, None) or self._worker.submit(k)
                    buf = fut.result()
                    if buf.is_cuda:
                        buf.record_stream(torch.cuda.current_stream(buf.device))
                self._cache[k] = buf
                while len(self._cache) > 3:
                    self._cache.popitem(last=False)
            nxt = k + 1
            if (self._worker is not None and nxt not in self._cache and nxt not in self._futures
                    and (self.total_tokens is None or nxt * self.N < self.total_tokens)):
                self._futures[nxt] = self._worker.submit(nxt)
        return buf

    def rows(self, start: int, n: int) -> torch.Tensor:
        """``n`` consecutive tokens of the shuffled stream from token ``start`` (unscaled, on the device)."""
        out: list[torch.Tensor] = []
        while n > 0:
            k, off = divmod(start, self.N)
            buf = self._get(k)
            take = min(n, self.N - off)
            out.append(buf[off:off + take])
            start, n = start + take, n - take
        return torch.cat(out) if len(out) > 1 else out[0]

    def batch(self, step: int) -> torch.Tensor:
        """The batch of training step ``step`` (1-based), normalised, on the device."""
        x = self.rows((step - 1) * self.batch_size, self.batch_size)
        return x * self.scale if self.scale != 1.0 else x

    def sample(self, n: int, stream: int = 0) -> torch.Tensor:
        """``n`` tokens: streams 0 and 1 (normalisation, ``b_dec``, stats) the first tokens of the
        shuffled stream (kept, so the stats at the end need no second harvest); stream ``1000 + s``
        (resampling at step s) the tokens after step s's batch."""
        if stream >= 1000:
            x = self.rows((stream - 1000) * self.batch_size, n)
        else:
            if self._head is None or len(self._head) < n:
                self._head = self.rows(0, n)
            x = self._head[:n]
        return x * self.scale if self.scale != 1.0 else x

    # -- resume -----------------------------------------------------------------------------------
    def resume_state(self, step: int) -> dict[str, Any]:
        """What a checkpoint at ``step`` records so a resume harvests from the right model batch."""
        p = step * self.batch_size
        k = p // self.N
        start = self.harvester.starts.get(k)
        if start is None:
            return {}
        return {"buffer": k, "buffer_tokens": self.N, "cursor": start[0].to_list(), "skip": start[1]}

    def restore(self, state: Any, step: int) -> None:
        """Take a checkpoint's ``data_state`` (ignored when it does not fit: the start of the buffer
        is then found by tokenising from the beginning, slower but the same data)."""
        if not isinstance(state, dict):
            return
        try:
            k, n = int(state["buffer"]), int(state["buffer_tokens"])
            cursor = Cursor(*(int(v) for v in state["cursor"]))
            skip = int(state["skip"])
        except (KeyError, TypeError, ValueError):
            return
        if n == self.N and k == (step * self.batch_size) // self.N and skip >= 0:
            self.harvester.starts[k] = (cursor, skip)

    def check_resume(self, recorded: Any, changes: dict[str, Any]) -> None:
        """Refuse a resume on another model or other text than the run was trained on (the folder
        or the files may have moved: ``model`` and ``dataset`` may change, their content may not)."""
        if not isinstance(recorded, dict) or recorded.get("kind") != "model":
            return
        now = self.describe()
        for key, what in (("model_config_sha256", "model"), ("model_weights", "model")):
            if recorded.get(key) is not None and recorded.get(key) != now.get(key):
                raise _resume_error(what, f"the model at {self.source.path} is not the one the run was trained on "
                                          f"({key} differs from config.yaml: data); a resume needs the same model")
        rec_ds, now_ds = recorded.get("dataset_fingerprint"), now.get("dataset_fingerprint")
        if rec_ds is not None and rec_ds != now_ds:
            raise _resume_error("dataset", f"{self.config.dataset} is not the text the run was trained on (files or "
                                           "sizes differ from config.yaml: data); a resume needs the same dataset")

    # -- description ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        fp = self.source.fingerprint()
        ds = self.dataset.describe()
        return {
            "kind": "model", "model": self.source.name, "model_path": str(self.source.path),
            "model_origin": self.source.origin, "model_revision": self.source.revision,
            "model_config_sha256": fp["config_sha256"], "model_weights": fp["weights"],
            "model_class": type(self.loaded.model).__name__, "model_dtype": self.config.model_dtype,
            "model_device": str(self.loaded.device),
            "hookpoint": self.config.hookpoint, "hookpoint_module": self.hookpoint.module_name,
            "hookpoint_output": self.hookpoint.describe(), "d_in": self.d_in,
            "context_size": self.config.context_size, "model_batch_size": self.config.model_batch_size,
            **self.rows_spec.describe(),
            "dataset": ds.get("dataset"), "dataset_files": ds.get("files"), "dataset_n_files": ds.get("n_files"),
            "dataset_bytes": ds.get("bytes"), "dataset_documents": ds.get("documents"),
            "dataset_fingerprint": ds.get("fingerprint"), "text_column": self.config.text_column,
            "shuffle_buffer_tokens": self.N, "seed": self.seed,
            "normalisation": {"normalize_input": self.config.normalize_input, "input_scale": self.scale,
                              "rule": "one constant so that E||x|| = sqrt(d_in) on the first 16,384 tokens "
                                      "of the shuffled stream"},
            **{f"{k}_version": v for k, v in versions().items()},
        }

    def close(self) -> None:
        self._finalizer()


def check_model_keys(changes: dict[str, Any], run: str) -> None:
    """Refuse a resume that changes a key in ``FIXED_MODEL_KEYS`` (one line, as ``trainer.resume``)."""
    for key, why in FIXED_MODEL_KEYS.items():
        if key in changes:
            old, new = changes[key]
            raise _resume_error(key, f"cannot change when resuming {run} ({_show(old)} in its checkpoint, "
                                     f"{_show(new)} asked; {why}); train a new run instead")


def _show(value: Any) -> str:
    return "null" if value is None else (repr(value) if isinstance(value, str) else str(value))


def _resume_error(key: str, text: str) -> ConfigError:
    from .resume import ResumeChangeError

    return ResumeChangeError(f"{key}: {text}", key)


# ------------------------------------------------------------------------------------------------
# sae-report harvest: the stream written to shards for data_source: files
# ------------------------------------------------------------------------------------------------

MANIFEST = "harvest.json"
SHARD_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: What must match for a second ``harvest`` into the same folder to continue the first.
_SAME_HARVEST = ("model_config_sha256", "model_weights", "hookpoint_module", "d_in", "model_dtype", "context_size",
                 "model_batch_size", "layout", "prepend_bos", "exclude_special_tokens", "dataset_fingerprint",
                 "text_column", "shuffle_buffer_tokens", "seed")


@dataclass
class HarvestResult:
    out: Path
    tokens: int
    """Tokens in the folder's shards."""
    shards: int
    written: int
    """Shards written by this call (the others were there from an earlier call)."""
    d_in: int
    seconds: float
    tokens_per_s: float
    """Harvest throughput of this call."""


def shard_name(i: int) -> str:
    return f"acts_{i:06d}.safetensors"


def write_shards(config: TrainConfig, out: str | Path, *, tokens: int, shard_tokens: int = 262_144,
                 dtype: str = "float32", on_shard: Callable[[int, int, int, float], None] | None = None) -> HarvestResult:
    """Harvest ``tokens`` activations of ``config``'s model source into ``out/acts_NNNNNN.safetensors``
    (tensor ``activations`` [n, d_in], shuffled as the trainer would read them, not normalised) and
    ``out/harvest.json``. A folder already holding shards of the same settings is continued (its
    complete shards are kept). ``on_shard(i, n_shards, tokens_done, tokens_per_s)`` after each shard."""
    from safetensors.torch import save_file

    from sae_report.runlog import atomic_write_text

    if config.data_source != "model":
        raise ConfigError("data_source: must be model to harvest (with model, hookpoint and dataset)", "data_source")
    if tokens <= 0 or shard_tokens <= 0:
        raise ConfigError("tokens: must be > 0")
    out = Path(out)
    manifest_path = out / MANIFEST
    previous: dict[str, Any] | None = None
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise DataError(f"{manifest_path}: unreadable; remove the folder or choose another --out") from None
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: holds other files; choose an empty or new folder")
    from .loop import resolve_device

    data_seed = config.data_seed if config.data_seed is not None else config.seed
    model_device = resolve_device(config.device if config.model_device == "auto" else config.model_device)
    data = ModelData(config, seed=data_seed, batch_size=shard_tokens, device=torch.device("cpu"),
                     total_tokens=tokens, model_device=model_device,
                     harvest_threads=torch.get_num_threads() if model_device.type == "cpu" else None)
    try:
        desc = {k: v for k, v in data.describe().items() if k != "normalisation"}
        settings = {k: desc.get(k) for k in _SAME_HARVEST}
        settings.update(shard_tokens=shard_tokens, dtype=dtype)
        done: list[str] = []
        if previous is not None:
            before = previous.get("settings") or {}
            diff = [k for k in settings if json.dumps(before.get(k)) != json.dumps(settings[k])]
            if diff:
                k = diff[0]
                raise DataError(f"{out}: holds a harvest with other settings ({k}: {before.get(k)!r} there, "
                                f"{settings[k]!r} now); choose another --out")
            done = [n for n in previous.get("shards", []) if (out / n).is_file()]
        out.mkdir(parents=True, exist_ok=True)
        n_shards = -(-tokens // shard_tokens)
        start_i = len(done)
        t0 = time.perf_counter()
        written = 0

        def manifest(shards: list[str], complete: bool) -> None:
            total = min(tokens, len(shards) * shard_tokens) if complete else len(shards) * shard_tokens
            body = {"format": "sae-report harvest", "version": 1, "tokens": total, "shards": shards,
                    "shard_tokens": shard_tokens, "dtype": dtype, "d_in": data.d_in, "complete": complete,
                    "settings": settings, "data": desc, "tensor": "activations",
                    "train_with": {"data_source": "files", "data_path": str(out)}}
            atomic_write_text(manifest_path, json.dumps(body, indent=2) + "\n")

        shards = list(done[:n_shards])
        for i in range(start_i, n_shards):
            n = min(shard_tokens, tokens - i * shard_tokens)
            x = data.rows(i * shard_tokens, n).to(SHARD_DTYPES[dtype]).contiguous()
            name = shard_name(i)
            tmp = out / f".{name}.tmp"
            save_file({"activations": x}, str(tmp), metadata={"model": str(desc["model"]),
                                                             "hookpoint": str(desc["hookpoint"]),
                                                             "first_token": str(i * shard_tokens)})
            os.replace(tmp, out / name)
            shards.append(name)
            written += 1
            manifest(shards, complete=i == n_shards - 1)
            if on_shard is not None:
                el = time.perf_counter() - t0
                on_shard(i, n_shards, min(tokens, (i + 1) * shard_tokens), (written * shard_tokens) / el if el else 0.0)
        if not written:
            manifest(shards, complete=True)
        el = time.perf_counter() - t0
        n_written = sum(min(shard_tokens, tokens - i * shard_tokens) for i in range(start_i, n_shards))
        return HarvestResult(out, min(tokens, len(shards) * shard_tokens), len(shards), written, data.d_in, el,
                             n_written / el if el > 0 else 0.0)
    finally:
        data.close()


def model_width(config: TrainConfig) -> int:
    """``d_in`` of ``config``'s hookpoint (loads the model; runs two tokens)."""
    source = locate_model(config.model or "", config.model_revision)
    TextDataset(config.dataset or "", config.text_column)
    loaded = load_model(source, config.model_dtype, "cpu" if config.model_device == "auto" else config.model_device)
    forward = HookedForward(loaded, resolve_hookpoint(loaded.model, config.hookpoint or ""))
    try:
        return forward.width()
    finally:
        forward.close()


__all__ = ["Cursor", "TokenRows", "Harvester", "ModelData", "FIXED_MODEL_KEYS", "check_model_keys", "model_width",
           "write_shards", "HarvestResult", "MANIFEST"]
