"""SAELens SAE folders: our checkpoints exported to them, theirs read back as ``init_from``.

A SAELens 6 SAE folder (what ``sae_lens.SAE.load_from_disk(folder)`` loads) holds two files::

    cfg.json                 architecture, d_in, d_sae, dtype, device, apply_b_dec_to_input,
                             normalize_activations, reshape_activations, metadata (model_name,
                             hook_name, ...) and per-architecture fields (topk: k)
    sae_weights.safetensors  W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]
                             (+ per architecture: jumprelu's threshold [d_sae])

**Input scale, folded into the weights.** Our trainer multiplies every input by one constant,
``input_scale`` (so that E||x|| = sqrt(d_in)), and its weights see only scaled inputs. The export
folds the constant into the weights the way SAELens folds its own ``expected_average_only_in``
factor at the end of its training (``SAE.fold_activation_norm_scaling_factor``)::

    W_enc' = W_enc * s      b_enc' = b_enc      W_dec' = W_dec / s      b_dec' = b_dec / s

so the folder reads raw activations (``normalize_activations: none``) and gives, on raw ``x``, our
feature activations unchanged (pre-activations, thresholds and the top-k choice too) and our
reconstruction divided by ``s`` (back in raw units). The decoder rows of a standard SAE therefore
have norm ``1 / s``, not 1; ``sae.fold_W_dec_norm()`` in SAELens makes them unit norm (the
activations then scale by the norms, the reconstruction stays the same).

**Decoder norms.** ``april2024`` weights its L1 penalty by the decoder norms and leaves the
decoder free; SAELens' standard SAE has the same forward pass (only the training penalty
differs), so it is exported as ``standard`` with the weights as they are: identical
reconstructions and activations.

**Import** (``init_from: FOLDER``) is the inverse: a folder in raw units (``normalize_activations:
none``) is scaled by the new run's ``input_scale`` (``W_enc / s``, ``W_dec * s``, ``b_dec * s``); a
folder still in SAELens' normalised units (``expected_average_only_in``: E||x|| = sqrt(d_in), our
convention) is taken as it is; ``apply_b_dec_to_input: false`` moves ``b_dec @ W_enc`` into
``b_enc``; the variants that keep unit decoder rows (standard, topk, batchtopk, jumprelu) get the
norms folded into the encoder and a JumpReLU threshold, as ``fold_W_dec_norm`` does. Exact up to
float32 rounding (except a SAELens topk SAE that chose its top k on pre-activations with decoder
rows of unequal norms: the choice may change, as it would after one step of unit-norm training).

**One table, one row per architecture** (``ARCHITECTURES``): our ``sae_variant``, the SAELens
architecture it is written as, the SAELens architectures it can start from, and two functions that
add what is particular to it (fields of cfg.json, tensors such as a threshold). A new variant of
``trainer/sae.py`` is exported and imported by adding its row; nothing else here changes.

No part of this module needs ``sae_lens`` itself.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import load_file, save_file

from sae_report.runlog import CHECKPOINTS_DIR, to_jsonable

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint

#: The SAELens release whose folder format this writes (``metadata.sae_lens_version``; SAELens reads
#: folders of releases before 6.0 differently, so this must be a 6.x version).
SAELENS_FORMAT_VERSION = "6.54.12"
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
#: Where the end of training writes the export: ``RUN/checkpoints/final/saelens/``.
EXPORT_DIR = "saelens"
SHARED = ("W_enc", "b_enc", "W_dec", "b_dec")
_MAX_CFG_BYTES = 16 * 1024 * 1024


class ExportError(ValueError):
    """An export that cannot be written as asked (one line naming the file or folder)."""


# ------------------------------------------------------------------------------------------------
# The table: one row per architecture
# ------------------------------------------------------------------------------------------------

Tensors = dict[str, torch.Tensor]
#: (our weights in our input units, checkpoint meta) -> (extra cfg.json fields, SAELens tensors in our units)
ExportFn = Callable[[Mapping[str, torch.Tensor], Mapping[str, Any]], "tuple[dict[str, Any], Tensors]"]
#: (SAELens tensors in our input units, cfg.json, cfg.json path) -> (our tensors, config keys that must agree)
ImportFn = Callable[[Tensors, Mapping[str, Any], str], "tuple[Tensors, dict[str, Any]]"]


@dataclass(frozen=True)
class Architecture:
    """How one of our variants maps to SAELens' format and back."""

    variant: str
    """Our ``sae_variant``."""
    saelens: str
    """The SAELens 6 ``architecture`` the export writes."""
    reads: tuple[str, ...]
    """SAELens architectures an ``init_from`` folder may have to start a run of this variant."""
    to_saelens: ExportFn
    """Extra cfg.json fields and the SAELens tensors (SHARED plus any of its own), in our units;
    the input scale is folded afterwards, the same way for every row."""
    from_saelens: ImportFn
    """Our tensors (as ``sae.safetensors`` holds them) from a folder's tensors already in our
    units, and the config keys whose values must agree with the run's (e.g. ``{"k": 32}``)."""
    decoder: str
    """The decoder-norm convention, recorded in the export's metadata."""


def _shared_out(w: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> tuple[dict[str, Any], Tensors]:
    return {}, {k: w[k] for k in SHARED}


def _threshold_out(w: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> tuple[dict[str, Any], Tensors]:
    """JumpReLU, and BatchTopK as SAELens saves it: a JumpReLU threshold per latent (pre-activation
    units, which the input-scale fold leaves as they are)."""
    return {}, {**{k: w[k] for k in SHARED}, "threshold": w["threshold"].expand(w["b_enc"].shape)}


def _topk_out(w: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> tuple[dict[str, Any], Tensors]:
    k = meta.get("k")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ExportError(f"a topk checkpoint needs k (a positive integer) in its config.json, got {k!r}")
    return {"k": k, "rescale_acts_by_decoder_norm": False}, {k_: w[k_] for k_ in SHARED}


def _shared_in(t: Tensors, cfg: Mapping[str, Any], where: str) -> tuple[Tensors, dict[str, Any]]:
    return {k: t[k] for k in SHARED}, {}


def _unit_rows(out: Tensors) -> Tensors:
    """Unit decoder rows with the norms folded into the encoder (and a JumpReLU threshold), as
    SAELens' ``fold_W_dec_norm`` does: the reconstruction is unchanged, activations scale by the
    norms. Left as it is when the rows are already unit norm (to float32 rounding)."""
    norms = out["W_dec"].double().norm(dim=1)
    if float((norms - 1.0).abs().max()) <= 1e-6:
        return out
    n = norms.clamp_min(1e-12)
    out = dict(out)
    out["W_dec"] = (out["W_dec"].double() / n[:, None]).float()
    out["W_enc"] = (out["W_enc"].double() * n[None, :]).float()
    out["b_enc"] = (out["b_enc"].double() * n).float()
    if "threshold" in out:
        out["threshold"] = (out["threshold"].double() * n).float()
    return out


def _standard_in(t: Tensors, cfg: Mapping[str, Any], where: str) -> tuple[Tensors, dict[str, Any]]:
    """Our standard variant keeps decoder rows at unit norm: exact for a ReLU SAE."""
    return _unit_rows({k: t[k] for k in SHARED}), {}


def _topk_in(t: Tensors, cfg: Mapping[str, Any], where: str) -> tuple[Tensors, dict[str, Any]]:
    """TopK keeps unit decoder rows too: exact when SAELens chose by ``pre * ||W_dec||``
    (rescale_acts_by_decoder_norm) or the rows share one norm; otherwise the choice of the top k may
    change where the norms differ (the first step renormalises the rows anyway)."""
    k = cfg.get("k")
    if isinstance(k, bool) or not isinstance(k, (int, float)) or k < 1 or int(k) != k:
        raise CheckpointError(f"{where}: k must be a positive whole number, got {k!r}")
    return _unit_rows({k_: t[k_] for k_ in SHARED}), {"k": int(k)}


def _jumprelu_in(t: Tensors, cfg: Mapping[str, Any], where: str) -> tuple[Tensors, dict[str, Any]]:
    if "threshold" not in t or list(t["threshold"].shape) != list(t["b_enc"].shape):
        raise CheckpointError(f"{where}: a jumprelu SAE needs a threshold tensor of shape {list(t['b_enc'].shape)} "
                              f"in {WEIGHTS_FILE}")
    return _unit_rows({**{k: t[k] for k in SHARED}, "threshold": t["threshold"]}), {}


def _batchtopk_in(t: Tensors, cfg: Mapping[str, Any], where: str) -> tuple[Tensors, dict[str, Any]]:
    """A SAELens BatchTopK SAE is saved as JumpReLU with one threshold repeated; a training
    checkpoint holds ``topk_threshold`` and ``k``."""
    if "topk_threshold" in t:
        t = {**t, "threshold": t["topk_threshold"].reshape(()).expand(t["b_enc"].shape).float()}
    out, _ = _jumprelu_in(t, cfg, where)
    th = out["threshold"].double()
    if float((th - th[0]).abs().max()) > 1e-5 * max(1.0, float(th.abs().max())):
        raise CheckpointError(f"{where}: its thresholds differ per latent (a JumpReLU SAE); "
                              "set sae_variant to jumprelu")
    agree = {"k": cfg["k"]} if isinstance(cfg.get("k"), (int, float)) and not isinstance(cfg.get("k"), bool) else {}
    return out, agree


ARCHITECTURES: dict[str, Architecture] = {
    row.variant: row for row in (
        Architecture("standard", "standard", ("standard",), _shared_out, _standard_in,
                     "decoder rows unit norm in the trainer's units (norm 1/input_scale after the fold); "
                     "L1 on the activations"),
        Architecture("april2024", "standard", ("standard",), _shared_out, _shared_in,
                     "decoder rows free; the training L1 weighted each activation by its decoder norm "
                     "(inference is SAELens' standard SAE)"),
        Architecture("topk", "topk", ("topk",), _topk_out, _topk_in,
                     "decoder rows unit norm in the trainer's units; top k chosen on the pre-activations "
                     "(rescale_acts_by_decoder_norm false)"),
        Architecture("jumprelu", "jumprelu", ("jumprelu",), _threshold_out, _jumprelu_in,
                     "decoder rows unit norm in the trainer's units; threshold per latent in "
                     "pre-activation units"),
        Architecture("batchtopk", "jumprelu", ("jumprelu", "batchtopk"), _threshold_out, _batchtopk_in,
                     "decoder rows unit norm in the trainer's units; saved as SAELens saves BatchTopK: "
                     "JumpReLU with the learned inference threshold for every latent"),
    )
}


def trainable_variants() -> tuple[str, ...]:
    """The ``sae_variant`` values ``TrainConfig`` accepts (the rows of the table it can train)."""
    import typing

    from .config import TrainConfig

    hint = typing.get_type_hints(TrainConfig).get("sae_variant")
    return tuple(str(v) for v in typing.get_args(hint)) or ("standard",)


def _readable_architectures() -> dict[str, list[str]]:
    """SAELens architecture -> our variants (that this trainer can train) that can start from it."""
    out: dict[str, list[str]] = {}
    trainable = trainable_variants()
    for row in ARCHITECTURES.values():
        if row.variant not in trainable:
            continue
        for arch in row.reads:
            out.setdefault(arch, []).append(row.variant)
    return out


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------

@dataclass
class Exported:
    """What ``export_saelens`` wrote."""

    path: Path
    architecture: str
    variant: str
    d_in: int
    d_sae: int
    input_scale: float
    hook_name: str | None
    model_name: str | None


def export_saelens(ckpt: Checkpoint, out: str | Path) -> Exported:
    """Write ``ckpt`` (one of our checkpoints) as a SAELens SAE folder at ``out``.

    ``out`` may be absent, an empty folder, or an earlier SAELens folder (then replaced whole, by a
    rename); anything else there is refused (``ExportError``). The folder is written under a
    temporary name beside ``out`` first, so it is never seen half-written. Write failures are
    ``OSError``s naming the file."""
    out = Path(out)
    meta = ckpt.meta
    variant = str(meta.get("sae_variant") or "standard")
    row = ARCHITECTURES.get(variant)
    if row is None:
        raise ExportError(f"{ckpt.path}: sae_variant {variant!r} has no SAELens export "
                          f"(exported: {', '.join(ARCHITECTURES)})")
    scale = meta.get("input_scale", 1.0)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ExportError(f"{ckpt.path / 'config.json'}: input_scale must be a positive number, got {scale!r}")
    scale = float(scale)
    weights = {k: v.detach().float().cpu() for k, v in ckpt.weights.items()}
    d_sae, d_in = (int(n) for n in weights["W_dec"].shape)
    try:
        extra_cfg, tensors = row.to_saelens(weights, meta)
    except (KeyError, ExportError) as exc:
        raise ExportError(f"{ckpt.path}: {exc.args[0] if isinstance(exc, ExportError) else f'missing {exc}'}") from None
    # The input scale, folded as SAELens folds its own normalisation factor (see the module docstring).
    tensors = dict(tensors)
    tensors["W_enc"] = (tensors["W_enc"].double() * scale).float()
    tensors["W_dec"] = (tensors["W_dec"].double() / scale).float()
    tensors["b_dec"] = (tensors["b_dec"].double() / scale).float()
    tensors = {k: v.float().contiguous() for k, v in tensors.items()}

    hookpoint = _text(meta.get("hookpoint"))
    model = _text(meta.get("model"))
    hook_name = tl_hook_name(hookpoint) if hookpoint else None
    metadata: dict[str, Any] = {
        "sae_lens_version": SAELENS_FORMAT_VERSION,
        "sae_lens_training_version": None,  # trained by sae-report, not by SAELens
        "model_name": model,
        "hook_name": hook_name,
        "hf_hook_name": hookpoint,
        "hook_head_index": None,
    }
    for ours, theirs in (("context_size", "context_size"), ("prepend_bos", "prepend_bos"),
                         ("exclude_special_tokens", "exclude_special_tokens"), ("dataset", "dataset_path")):
        if meta.get(ours) is not None and model:
            metadata[theirs] = meta[ours]
    metadata["sae_report"] = {
        "sae_report_version": _version(),
        "run_id": meta.get("run_id"),
        "step": meta.get("step"),
        "tokens": meta.get("tokens"),
        "sae_variant": variant,
        "l1_alpha": meta.get("l1_alpha"),
        "data_source": meta.get("data_source"),
        "hookpoint": hookpoint,
        "model_revision": meta.get("model_revision"),
        "input_scale": scale,
        "input_scale_folded": True,
        "input_normalisation": "inputs multiplied by input_scale (E||x|| = sqrt(d_in)) in training; "
                               "folded into W_enc (x s), W_dec and b_dec (/ s): this SAE reads raw activations",
        "decoder_norm": row.decoder,
    }
    cfg: dict[str, Any] = {
        "architecture": row.saelens,
        "d_in": d_in,
        "d_sae": d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
        **extra_cfg,
        "metadata": metadata,
    }
    _write_folder(out, cfg, tensors)
    return Exported(out, row.saelens, variant, d_in, d_sae, scale, hook_name, model)


def export_run(source: str | Path, out: str | Path | None = None) -> Exported:
    """Export a checkpoint directory, or a run directory's final (else newest) checkpoint; ``out``
    defaults to ``<checkpoint>/saelens``."""
    ckpt = load_checkpoint(Path(source), optimizer=False)
    if "saelens_cfg" in ckpt.meta:
        raise ExportError(f"{source}: already a SAELens SAE folder")
    return export_saelens(ckpt, Path(out) if out is not None else ckpt.path / EXPORT_DIR)


def write_final_export(run_dir: Path, ckpt_path: Path) -> Path | None:
    """The end of training: ``RUN/checkpoints/final/saelens/`` from the final checkpoint ``ckpt_path``
    (None, and nothing written, for a variant without a row in ``ARCHITECTURES``, or when that
    folder holds files other than an earlier export's). A failed write is an ``OSError``."""
    ckpt = load_checkpoint(ckpt_path, optimizer=False)
    if str(ckpt.meta.get("sae_variant") or "standard") not in ARCHITECTURES:
        return None
    try:
        return export_saelens(ckpt, Path(run_dir) / CHECKPOINTS_DIR / "final" / EXPORT_DIR).path
    except ExportError:  # a folder of someone else's files in the way: left alone (`sae-report export` says why)
        return None


#: HF module paths of a decoder LM's blocks -> TransformerLens hook names (what SAELens'
#: ``hook_name`` holds); anything else is recorded as it is (and always as ``hf_hook_name``).
_BLOCK = re.compile(r"^(?:transformer\.h|model\.layers|gpt_neox\.layers|layers|h)\.(\d+)(?:\.(mlp|attn|self_attn))?$")


def tl_hook_name(hookpoint: str) -> str:
    """``transformer.h.8`` -> ``blocks.8.hook_resid_post``; ``model.layers.3.mlp`` ->
    ``blocks.3.hook_mlp_out``; ``...self_attn`` -> ``hook_attn_out``; anything else unchanged."""
    m = _BLOCK.match(hookpoint.strip())
    if not m:
        return hookpoint
    part = {None: "hook_resid_post", "mlp": "hook_mlp_out"}.get(m.group(2), "hook_attn_out")
    return f"blocks.{int(m.group(1))}.{part}"


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _version() -> str:
    from sae_report import __version__

    return __version__


def _write_folder(out: Path, cfg: dict[str, Any], tensors: Tensors) -> None:
    """cfg.json + sae_weights.safetensors into ``out``, atomically (temp folder, then rename)."""
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise ExportError(f"{out}: exists and is not a folder; choose another --out")
        extra = sorted(p.name for p in out.iterdir() if p.name not in (CFG_FILE, WEIGHTS_FILE))
        if extra:
            raise ExportError(f"{out}: holds other files ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}); "
                              "only an empty folder or an earlier SAELens export is replaced")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old: Path | None = None
    try:
        try:
            save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        except OSError:
            raise
        except Exception as exc:  # safetensors reports a full disk as SafetensorError (os error 28)
            m = re.search(r"os error (\d+)", str(exc))
            code = int(m.group(1)) if m else 5
            raise OSError(code, os.strerror(code), str(out / WEIGHTS_FILE)) from None
        (tmp / CFG_FILE).write_text(json.dumps(to_jsonable(cfg), indent=2, allow_nan=False) + "\n")
        os.chmod(tmp, 0o777 & ~_umask())
        if out.exists():
            old = out.parent / f".{out.name}.old.{os.getpid()}.tmp"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            os.replace(old, out)  # the earlier export stays as it was
        if isinstance(exc, OSError) and exc.filename and str(tmp) in str(exc.filename):
            raise OSError(exc.errno, exc.strerror, str(out / Path(exc.filename).name)) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------------------------------------
# Import: a SAELens SAE folder as init_from
# ------------------------------------------------------------------------------------------------

def is_saelens_folder(path: str | Path) -> bool:
    """A folder with SAELens' cfg.json (and none of our sae.safetensors)."""
    path = Path(path)
    return (path / CFG_FILE).is_file() and not (path / "sae.safetensors").is_file()


def read_saelens(path: str | Path) -> Checkpoint:
    """Read a SAELens SAE folder (``cfg.json`` + ``sae_weights.safetensors``) as a ``Checkpoint``
    whose weights are SAELens' tensors in float32, still in the folder's units
    (``prepare_init`` maps them into a run). Anything unusable is one ``CheckpointError`` line
    naming the file: unreadable files, missing keys or tensors, shapes that disagree with cfg.json,
    NaN or inf weights, an architecture or normalisation this trainer cannot start from."""
    folder = Path(path)
    cfg_path, w_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    try:
        if cfg_path.stat().st_size > _MAX_CFG_BYTES:
            raise CheckpointError(f"{cfg_path}: larger than 16 MiB; not a SAELens cfg.json")
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{cfg_path}: unreadable SAELens cfg.json ({_first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{cfg_path}: unreadable SAELens cfg.json (not a JSON object)")
    cfg = _cfg_v6(raw)
    for key in ("d_in", "d_sae"):
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise CheckpointError(f"{cfg_path}: {key} must be a positive integer, got {v!r}")
    arch = cfg.get("architecture")
    readable = _readable_architectures()
    if not isinstance(arch, str) or arch not in readable:
        raise CheckpointError(f"{cfg_path}: architecture {arch!r} cannot be trained here "
                              f"(init_from takes SAELens {', '.join(readable)} SAEs)")
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", "expected_average_only_in"):
        raise CheckpointError(f"{cfg_path}: normalize_activations {norm!r} cannot be trained here "
                              "(init_from takes none or expected_average_only_in)")
    if not w_path.is_file():
        raise CheckpointError(f"{w_path}: missing (a SAELens SAE folder holds {CFG_FILE} and {WEIGHTS_FILE})")
    try:
        tensors = load_file(str(w_path))
    except Exception as exc:  # SafetensorError (corrupt header, truncated data), OSError
        raise CheckpointError(f"{w_path}: unreadable SAE weights file ({_first_line(exc)})") from None
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    want = {"W_enc": [d_in, d_sae], "b_enc": [d_sae], "W_dec": [d_sae, d_in], "b_dec": [d_in]}
    for name, shape in want.items():
        t = tensors.get(name)
        if t is None:
            raise CheckpointError(f"{w_path}: missing tensor {name}")
        if not t.is_floating_point():
            raise CheckpointError(f"{w_path}: {name} must be a float tensor, got {t.dtype}")
        if list(t.shape) != shape:
            raise CheckpointError(f"{w_path}: {name} has shape {list(t.shape)}, {CFG_FILE} says {shape} "
                                  f"(d_in {d_in}, d_sae {d_sae})")
    scaling = tensors.pop("scaling_factor", None)  # written by old SAELens; all ones means unused
    if scaling is not None and not bool((scaling == 1).all()):
        raise CheckpointError(f"{w_path}: a fine-tuned scaling_factor cannot be trained here (SAELens 6 "
                              "does not load it either)")
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{w_path}: {name} holds NaN or inf values")
    t32 = {k: v.float() for k, v in tensors.items()}
    if cfg.get("apply_b_dec_to_input", True) is False:
        # SAELens: pre = x @ W_enc + b_enc; ours subtracts b_dec first: move b_dec @ W_enc into b_enc.
        t32["b_enc"] = (t32["b_enc"].double() + t32["b_dec"].double() @ t32["W_enc"].double()).float()
    md = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    ours = md.get("sae_report") if isinstance(md.get("sae_report"), dict) else {}
    step = ours.get("step")
    meta = {
        "saelens_cfg": cfg, "architecture": arch, "d_in": d_in, "d_sae": d_sae,
        "input_units": "raw" if norm == "none" else "normalised",
        "step": step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else 0, "tokens": 0,
    }
    return Checkpoint(folder, t32, {}, {}, meta)


def prepare_init(init: Checkpoint | None, config: Any, scale: float) -> Checkpoint | None:
    """``init`` as the run will load it: unchanged for our checkpoints; for a SAELens folder, its
    tensors mapped into this run's variant and input units (``scale`` = this run's input_scale),
    with one ``CheckpointError`` line naming the file when it cannot start this run."""
    if init is None or "saelens_cfg" not in init.meta:
        return init
    folder = init.path
    cfg_path, w_path = folder / CFG_FILE, folder / WEIGHTS_FILE
    cfg, arch = init.meta["saelens_cfg"], init.meta["architecture"]
    variant = str(getattr(config, "sae_variant", "standard"))
    row = ARCHITECTURES.get(variant)
    if row is None or arch not in row.reads:
        fits = _readable_architectures().get(arch, [])
        raise CheckpointError(f"{cfg_path}: a SAELens {arch} SAE cannot start an sae_variant {variant} run; "
                              f"set sae_variant to {' or '.join(fits)}")
    if getattr(config, "init_optimizer", False):
        raise CheckpointError(f"{folder}: a SAELens SAE folder holds no optimizer state; "
                              "init_optimizer needs a checkpoint of sae-report")
    d_in, d_sae = getattr(config, "d_in", None), getattr(config, "d_sae", None)
    W_enc = init.weights["W_enc"]
    if d_in is not None and d_sae is not None and list(W_enc.shape) != [d_in, d_sae]:
        raise CheckpointError(f"{w_path}: W_enc has shape {list(W_enc.shape)}, this SAE needs [{d_in}, {d_sae}]")
    f = float(scale) if init.meta["input_units"] == "raw" else 1.0
    t = dict(init.weights)
    t["W_enc"] = (t["W_enc"].double() / f).float()
    t["W_dec"] = (t["W_dec"].double() * f).float()
    t["b_dec"] = (t["b_dec"].double() * f).float()
    weights, agree = row.from_saelens(t, cfg, str(cfg_path))
    for key, value in agree.items():
        mine = getattr(config, key, None)
        if mine != value:
            raise CheckpointError(f"{cfg_path}: {key} is {value} but this run's config has {key} {mine}; "
                                  f"set {key}: {value}")
    return Checkpoint(folder, weights, {}, {}, dict(init.meta))


def _cfg_v6(raw: dict[str, Any]) -> dict[str, Any]:
    """cfg.json in SAELens 6's shape (folders written before 6.0 name some keys differently)."""
    cfg = dict(raw)
    md = cfg.get("metadata")
    version = cfg.get("sae_lens_version") or (md.get("sae_lens_version") if isinstance(md, dict) else None)
    if version and str(version).split(".")[0].isdigit() and int(str(version).split(".")[0]) >= 6:
        return cfg
    for old, new in (("hook_point", "hook_name"), ("hook_point_head_index", "hook_head_index"),
                     ("activation_fn_str", "activation_fn")):
        if old in cfg and new not in cfg:
            cfg[new] = cfg.pop(old)
    if "architecture" not in cfg:
        fn = cfg.get("activation_fn", "relu")
        cfg["architecture"] = "topk" if fn == "topk" else ("standard" if fn in (None, "relu") else f"activation {fn}")
    if cfg.get("architecture") == "topk" and "k" not in cfg:
        kwargs = cfg.get("activation_fn_kwargs")
        if isinstance(kwargs, dict) and "k" in kwargs:
            cfg["k"] = kwargs["k"]
    norm = cfg.get("normalize_activations")
    if isinstance(norm, bool) or norm is None:
        cfg["normalize_activations"] = "expected_average_only_in" if norm else "none"
    return cfg


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__
