"""The language model's loss with the SAE spliced in at the hookpoint (``data_source: model``).

Every ``eval_every`` steps and at the last step, on the same ``eval_tokens`` tokens of text each
time (whole rows of ``context_size``: the first rows of ``eval_dataset``, else of ``dataset``,
built as training builds them: ``trainer.tokens.TokenRows``), the whole causal LM runs three ways:

- ``ce_loss_clean``: unchanged;
- ``ce_loss_with_sae``: the hooked module's output replaced by the SAE's reconstruction, in the
  model's units (``decode(encode(h * input_scale)) / input_scale``), at every token whose
  activations the SAE trains on; special tokens left out of training (BOS, EOS, ... with
  ``exclude_special_tokens``) keep their clean activations;
- ``ce_loss_ablated``: the hooked module's output set to zero at every token (SAELens' zero
  ablation).

Each loss is the mean next-token cross-entropy (nats) over every position of every row (position t
predicts token t + 1; the last position of a row predicts nothing). ``ce_loss_score`` =
(ablated - with_sae) / (ablated - clean), SAELens' definition: 1 when the SAE recovers all of the
loss that zero-ablation loses, 0 when it is no better than zeros (absent when ablated == clean).
The clean and ablated losses do not depend on the SAE: computed once, repeated on each row.

The LM (``AutoModelForCausalLM``, with its head) is a second copy of the model, beside the one the
harvest runs to the hookpoint. Encoders (BERT, MiniLM) have no LM loss: no evaluation (config.yaml
says so in ``ce_eval``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .config import ConfigError, TrainConfig
from .tokens import Cursor, TokenRows
from .models import DTYPES, _first_line, _transformers
from .texts import TextDataset


def skipped_note(data: Any) -> dict[str, Any]:
    """config.yaml's ``ce_eval`` for a model without an LM loss."""
    return {"skipped": f"{type(data.loaded.model).__name__} is an encoder: it has no language-model loss to "
                       "splice the SAE into (no ce_loss_* columns)"}


class SpliceEval:
    """``losses(sae, input_scale, k)`` -> the ``ce_loss_*`` columns of one evaluation."""

    def __init__(self, config: TrainConfig, data: Any) -> None:
        tf = _transformers()
        self.config = config
        base = data.loaded
        self.device = base.device
        kwargs: dict[str, Any] = {"local_files_only": True}
        major = int(str(tf.__version__).split(".")[0])
        kwargs["dtype" if major >= 5 else "torch_dtype"] = DTYPES[config.model_dtype]
        try:
            lm = tf.AutoModelForCausalLM.from_pretrained(str(data.source.path), **kwargs)
        except Exception as exc:
            raise ConfigError(f"eval_every: {data.source.path}: no causal-LM head to measure the spliced-in loss "
                              f"with ({_first_line(exc)}); set eval_every: 0", "eval_every") from None
        lm.eval()
        lm.requires_grad_(False)
        self.lm = lm.to(self.device)
        name = data.hookpoint.module_name  # its path in the base model
        try:
            self.module = self.lm.base_model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"eval_every: hookpoint {name} is not in {type(lm).__name__}'s base model; "
                              "set eval_every: 0", "eval_every") from None
        spec = config.eval_dataset or config.dataset or ""
        rows = TokenRows(TextDataset(spec, config.text_column), base.tokenizer, causal=True,
                         context_size=config.context_size, model_batch_size=config.model_batch_size,
                         prepend_bos=config.prepend_bos, exclude_special_tokens=config.exclude_special_tokens)
        n_rows = max(1, math.ceil(config.eval_tokens / config.context_size))
        ids, keep = [], []
        have = 0
        for b in rows.batches(Cursor(0, 0, 0)):
            ids.append(b.ids)
            keep.append(b.keep)
            have += len(b.ids)
            if have >= n_rows:
                break
        self.ids = torch.cat(ids)[:n_rows]
        self.keep = torch.cat(keep)[:n_rows]
        self.spec = spec
        self.clean: float | None = None
        self.ablated: float | None = None

    def describe(self) -> dict[str, Any]:
        """config.yaml's ``ce_eval``."""
        return {"text": self.spec, "held_out": bool(self.config.eval_dataset), "rows": int(self.ids.shape[0]),
                "tokens": int(self.ids.numel()), "context_size": int(self.ids.shape[1]),
                "spliced_tokens": int(self.keep.sum()),
                "splice": "hook output replaced by decode(encode(h * input_scale)) / input_scale at the tokens the "
                          "SAE trains on; special tokens left out of training keep their clean activations",
                "ablation": "hook output set to zero at every token",
                "loss": "mean next-token cross-entropy (nats) over every position of every row",
                "score": "(ce_loss_ablated - ce_loss_with_sae) / (ce_loss_ablated - ce_loss_clean)"}

    @torch.inference_mode()
    def _ce(self, mode: str, sae: Any = None, scale: float = 1.0, k: int | None = None) -> float:
        total, count = 0.0, 0
        mbs = self.config.model_batch_size
        for a in range(0, len(self.ids), mbs):
            ids = self.ids[a:a + mbs].to(self.device)
            keep = self.keep[a:a + mbs].to(self.device)

            def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
                h = output if isinstance(output, torch.Tensor) else output[0]
                if mode == "zero":
                    new = torch.zeros_like(h)
                else:
                    dev = sae.W_dec.device
                    x = h.reshape(-1, h.shape[-1]).to(dev, torch.float32) * scale
                    x_hat = sae.decode(sae.encode(x, k=k)) / scale
                    new = torch.where(keep[..., None], x_hat.reshape(h.shape).to(h.device, h.dtype), h)
                return new if isinstance(output, torch.Tensor) else (new, *output[1:])

            handle = self.module.register_forward_hook(hook) if mode != "clean" else None
            try:
                logits = self.lm(input_ids=ids, use_cache=False).logits
            finally:
                if handle is not None:
                    handle.remove()
            pred = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
            total += float(torch.nn.functional.cross_entropy(pred, ids[:, 1:].reshape(-1), reduction="sum"))
            count += pred.shape[0]
        return total / max(count, 1)

    def losses(self, sae: Any, scale: float, k: int | None = None) -> dict[str, float]:
        if self.clean is None or self.ablated is None:
            self.clean = self._ce("clean")
            self.ablated = self._ce("zero")
        with_sae = self._ce("sae", sae, scale, k)
        out = {"ce_loss_clean": self.clean, "ce_loss_with_sae": with_sae, "ce_loss_ablated": self.ablated}
        gap = self.ablated - self.clean
        if gap != 0 and math.isfinite(gap):
            out["ce_loss_score"] = (self.ablated - with_sae) / gap
        return out


__all__ = ["SpliceEval", "skipped_note"]
