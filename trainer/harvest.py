"""Harvesting: activations of a transformers model on a text dataset, streamed into the trainer.

The pipeline, each stage a pure function of the config (so a resumed run sees the same data):

1. **Token rows** (``trainer/tokens.py``). Documents (``trainer.texts``) are tokenised without the
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

``sae-report harvest`` (``trainer/shards.py``) writes the same stream to safetensors shards for
``data_source: files``.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
import time
import weakref
from collections import OrderedDict
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .config import ConfigError, TrainConfig
from .data import _seed
from .models import HookedForward, LoadedModel, ModelSource, load_model, locate_model, resolve_hookpoint, versions
from .texts import TextDataset
from .tokens import Batch, Cursor, TokenRows

#: Keys of the model source a resume cannot change (the model itself may move: ``check_resume``).
FIXED_MODEL_KEYS: dict[str, str] = {
    "model_revision": "it fixes the model's weights",
    "hookpoint": "it fixes which activations are read",
    "text_column": "it fixes the text", "context_size": "it fixes the token rows",
    "model_batch_size": "it fixes the model batches the data position is counted in",
    "model_dtype": "it fixes the activations' precision", "prepend_bos": "it fixes the token rows",
    "exclude_special_tokens": "it fixes which tokens are kept",
}

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


__all__ = ["Batch", "Cursor", "TokenRows", "Harvester", "ModelData", "FIXED_MODEL_KEYS", "check_model_keys",
           "model_width"]
