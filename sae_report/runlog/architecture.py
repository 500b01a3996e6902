"""Which SAE architecture a config describes, whichever tool wrote it (``architecture_of``).

- ours: ``sae_variant`` (``standard``, ``april2024``, ``topk``, ``batchtopk``, ``jumprelu``);
- SAELens: ``architecture`` in ``cfg.json`` and in the W&B run config (``standard``, ``gated``,
  ``jumprelu``, ``topk``, ``batchtopk``, ``matryoshka_batchtopk``, ...);
- sparsify: a TopK trainer; its config has ``k`` (top level or under ``sae``) and its own keys
  (``num_latents``, ``expansion_factor``, ``auxk_alpha``, ``dead_feature_threshold``, ...), or
  ``activation: topk``;
- dictionary_learning: the trainer or dictionary class name (``TopKTrainer``/``AutoEncoderTopK``,
  ``BatchTopKTrainer``/``BatchTopKSAE``, ``JumpReluTrainer``/``JumpReluAutoEncoder``,
  ``StandardTrainer``, ``StandardTrainerAprilUpdate``, ``GatedSAETrainer``, ...).

Reading a config belongs to the run format (``canonical_config`` records the name); what follows
from it for the analysis and the advice is ``sae_report.analysis.architecture``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

#: Names other tools give an architecture -> ours.
_NAMES = {
    "standard": "standard", "relu": "standard", "vanilla": "standard", "l1": "standard",
    "april2024": "april2024", "standard_april2024": "april2024", "april_update": "april2024",
    "gated": "gated",
    "topk": "topk", "top_k": "topk", "abstopk": "topk",
    "batchtopk": "batchtopk", "batch_topk": "batchtopk", "matryoshka_batchtopk": "batchtopk",
    "matryoshkabatchtopk": "batchtopk",
    "jumprelu": "jumprelu", "jump_relu": "jumprelu",
}
#: dictionary_learning's trainer and dictionary class names (matched case-insensitively, in order).
_CLASS_NAMES = (
    (re.compile(r"matryoshka.*batch.?topk|batch.?topk"), "batchtopk"),
    (re.compile(r"topk|top_k"), "topk"),
    (re.compile(r"jump.?relu"), "jumprelu"),
    (re.compile(r"gated"), "gated"),
    (re.compile(r"april"), "april2024"),
    (re.compile(r"standard|^autoencoder$|panneal"), "standard"),
)
#: Keys naming a trainer or dictionary class (dictionary_learning writes these into its config).
_CLASS_KEYS = ("trainer_class", "trainer", "dict_class", "dictionary_class", "sae_class", "class_name")
#: Keys only a sparsify config has (with ``k``, they make it a TopK run).
_SPARSIFY_MARKERS = ("num_latents", "auxk_alpha", "dead_feature_threshold", "multi_topk", "k_decay_steps",
                     "hookpoints", "ctx_len", "micro_acc_steps")


def normalise(name: Any) -> str | None:
    """Our name for an architecture name (``"TopK"`` -> ``topk``), None when unknown."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    return _NAMES.get(key) or _NAMES.get(key.replace("_", ""))


def _leaves(raw: Mapping[str, Any], prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """Flattened ``{leaf name: value}`` (the first value of each leaf name wins; W&B ``{value: x}``
    entries unwrapped)."""
    out: dict[str, Any] = {}
    if depth > 8:
        return out
    for k, v in raw.items():
        if isinstance(v, Mapping) and set(v) <= {"value", "desc"} and "value" in v:
            v = v["value"]
        if isinstance(v, Mapping):
            for kk, vv in _leaves(v, f"{prefix}{k}.", depth + 1).items():
                out.setdefault(kk, vv)
        else:
            out.setdefault(str(k).strip().lower(), v)
    return out


def architecture_of(config: Mapping[str, Any] | None) -> str | None:
    """Our name of the architecture ``config`` describes (see the module doc), None when it does not say."""
    if not config:
        return None
    leaves = _leaves(config)
    for key in ("architecture", "sae_variant", "sae_architecture", "arch"):
        name = normalise(leaves.get(key))
        if name:
            return name
    activation = leaves.get("activation")
    if isinstance(activation, str) and activation.strip().lower() in ("topk", "top_k"):
        return "topk"
    for key in _CLASS_KEYS:
        value = leaves.get(key)
        if isinstance(value, str) and value.strip():
            text = value.strip().rsplit(".", 1)[-1].lower()
            for pattern, name in _CLASS_NAMES:
                if pattern.search(text):
                    return name
    k = leaves.get("k")
    if isinstance(k, (int, float)) and not isinstance(k, bool) and k > 0:
        l1_names = ("l1_alpha", "l1_coefficient", "l1_coeff", "l1_penalty", "sparsity_penalty", "lambda_l1")
        if any(m in leaves for m in _SPARSIFY_MARKERS) or not any(n in leaves for n in l1_names):
            return "topk"  # sparsify (or another TopK trainer): k and no L1 coefficient
    return None


__all__ = ["architecture_of", "normalise"]
