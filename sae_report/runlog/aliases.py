"""Map the metric and config names other trainers log onto our canonical columns.

Every reader (tables, W&B, TensorBoard, MLflow) builds a wide frame with the names it found and
hands it to ``canonicalize``; the result has ``step`` (Int64) and canonical Float64 columns only
(``runlog.METRIC_COLUMNS``), sorted by step, one row per step (the later write wins).

Units: canonical ``l0`` is the mean number of active features per token (a count), ``l0_frac`` the
same divided by ``d_sae``; ``dead`` a count of features, ``dead_frac`` a fraction. Percent columns
(``l0_pct``, ``dead_pct``) become fractions. With ``d_sae`` known (from the config, or from a count
and a fraction logged side by side) both forms are filled in.

Names covered (case-insensitive; ``<hook>`` is any hookpoint suffix):

- generic: ``l0_pct``, ``l0_percent``, ``l0_frac``, ``dead_features``, ``dead_pct``, ``n_dead``,
  ``learning_rate``, ``total_loss``, ``mse_loss``, ``l1_loss``, ``global_step``, ``_step``, ...
- SAELens: ``losses/overall_loss``, ``losses/mse_loss``, ``losses/l1_loss``,
  ``metrics/explained_variance``, ``metrics/l0`` (a count), ``sparsity/dead_features`` (a count),
  ``details/current_learning_rate``, ``details/l1_coefficient``,
  ``details/current_l1_coefficient``, ``details/n_training_tokens``, ``details/n_training_samples``;
  shrinkage, density and the spliced-in loss: ``metrics/l2_ratio``, ``sparsity/below_1e-5`` and
  ``sparsity/below_1e-6`` (COUNTS of features: divided by d_sae), ``metrics/mean_log10_feature_sparsity``,
  ``metrics/ce_loss_score``, ``metrics/ce_loss_with_sae``, ``metrics/ce_loss_without_sae`` (clean),
  ``metrics/ce_loss_with_ablation``, and SAELens 6's nested eval keys (``shrinkage/l2_ratio``,
  ``model_performance_preservation/ce_loss_score``, ... with ``/`` or ``.``). SAELens logs no
  dense-latent count; ``dense_latents`` / ``sparsity/dense_latents`` are read when a tool logs one.
- sparsify: ``fvu/<hook>`` (explained_variance = 1 - fvu), ``dead_pct/<hook>`` (a FRACTION despite
  its name: sparsify logs ``mask.mean()``), ``l0/<hook>``, ``lr/<hook>``; it logs no feature-density
  summary, shrinkage or spliced-in loss to map.
- dictionary_learning: ``l0`` (a count), ``frac_variance_explained``, ``mse_loss``,
  ``sparsity_loss``, ``loss``.

Names no alias knows are mapped by the user (``--map loss/total=loss``): ``mapped_columns`` puts a
map in force for every read inside it, and ``match_column`` / ``canonicalize`` consult it first.

Config keys: ``CONFIG_ALIASES`` (canonical key -> other tools' names; ``trainer.config`` accepts the
same names) and ``canonical_config``; counts in tokens (``training_tokens``, sparsify's
``dead_feature_threshold``) become steps through ``tokens_per_step``, with a note.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import polars as pl

from .reader import check_whole_steps
from .schema import METRIC_COLUMNS, RunLogError
from .schema import finite_float as _number

# Canonical name -> (raw alias, unit) pairs. Units: "same", "percent" (divide by 100),
# "one_minus" (canonical = 1 - raw), "auto_frac" (a fraction; kept as is), "per_d_sae" (a count of
# features: divided by d_sae; not used when d_sae is unknown).
_ALIASES: dict[str, tuple[tuple[str, str], ...]] = {
    "step": (("step", "same"), ("_step", "same"), ("global_step", "same"), ("steps", "same"),
             ("iteration", "same"), ("iter", "same"), ("trainer/global_step", "same"),
             ("train/step", "same"), ("training_step", "same")),
    "tokens": (("tokens", "same"), ("n_tokens", "same"), ("num_tokens", "same"), ("tokens_seen", "same"),
               ("n_training_tokens", "same"), ("details/n_training_tokens", "same"),
               ("details/n_training_samples", "same"), ("n_training_samples", "same")),
    "loss": (("loss", "same"), ("total_loss", "same"), ("overall_loss", "same"),
             ("losses/overall_loss", "same"), ("train/loss", "same"), ("losses/loss", "same")),
    "mse": (("mse", "same"), ("mse_loss", "same"), ("losses/mse_loss", "same"),
            ("reconstruction_loss", "same"), ("recon_loss", "same"), ("l2_loss", "same")),
    "l1": (("l1", "same"), ("l1_loss", "same"), ("losses/l1_loss", "same"), ("sparsity_loss", "same"),
           ("losses/sparsity_loss", "same")),
    "l1_alpha": (("l1_alpha", "same"), ("l1_coefficient", "same"), ("l1_coeff", "same"),
                 ("details/l1_coefficient", "same"), ("details/current_l1_coefficient", "same"),
                 ("current_l1_coefficient", "same"), ("sparsity_coefficient", "same"),
                 ("sparsity_penalty", "same")),
    "lr": (("lr", "same"), ("learning_rate", "same"), ("details/current_learning_rate", "same"),
           ("current_learning_rate", "same"), ("train/lr", "same")),
    "l0": (("l0", "same"), ("metrics/l0", "same"), ("l0_count", "same"), ("l0_norm", "same"),
           ("mean_l0", "same")),
    "l0_frac": (("l0_frac", "same"), ("l0_fraction", "same"), ("l0_pct", "percent"),
                ("l0_percent", "percent"), ("l0_%", "percent"), ("activation_rate", "same")),
    "dead": (("dead", "same"), ("dead_features", "same"), ("sparsity/dead_features", "same"),
             ("n_dead", "same"), ("num_dead", "same"), ("dead_count", "same"), ("dead_neurons", "same")),
    "dead_frac": (("dead_frac", "same"), ("dead_fraction", "same"), ("frac_dead", "same"),
                  ("dead_pct", "percent"), ("dead_percent", "percent"), ("dead_%", "percent")),
    "explained_variance": (("explained_variance", "same"), ("metrics/explained_variance", "same"),
                           ("frac_variance_explained", "same"), ("fve", "same"),
                           ("variance_explained", "same"), ("fvu", "one_minus")),
    "aux_loss": (("aux_loss", "same"), ("auxk_loss", "same"), ("auxk", "same"), ("aux_k_loss", "same"),
                 ("auxiliary_reconstruction_loss", "same"), ("losses/auxiliary_reconstruction_loss", "same"),
                 ("losses/auxk_loss", "same")),
    "l0_coefficient": (("l0_coefficient", "same"), ("details/l0_coefficient", "same"),
                       ("details/current_l0_coefficient", "same"), ("current_l0_coefficient", "same")),
    "k": (("k", "same"), ("current_k", "same"), ("details/k", "same")),
    # shrinkage, feature density and the spliced-in LM loss (SAELens: ``metrics/l2_ratio`` and the
    # ``metrics/ce_loss_*`` keys of its older evals; SAELens 6 nests its eval dict, which W&B
    # flattens as ``shrinkage/l2_ratio`` or ``model_performance_preservation.ce_loss_score``)
    "l2_ratio": (("l2_ratio", "same"), ("shrinkage/l2_ratio", "same"), ("shrinkage.l2_ratio", "same"),
                 ("l2_norm_ratio", "same")),
    "density_below_1e-5": (("density_below_1e-5", "same"), ("frac_below_1e-5", "same"),
                           ("sparsity/below_1e-5", "per_d_sae")),
    "density_below_1e-6": (("density_below_1e-6", "same"), ("frac_below_1e-6", "same"),
                           ("sparsity/below_1e-6", "per_d_sae")),
    "mean_log10_density": (("mean_log10_density", "same"), ("mean_log10_feature_sparsity", "same"),
                           ("sparsity/mean_log10_feature_sparsity", "same"), ("mean_log_density", "same")),
    "dense_features": (("dense_features", "same"), ("dense_latents", "same"), ("sparsity/dense_latents", "same"),
                       ("sparsity/dense_features", "same"), ("n_dense", "same"), ("num_dense", "same")),
    "ce_loss_clean": (("ce_loss_clean", "same"), ("ce_loss_without_sae", "same"),
                      ("model_performance_preservation/ce_loss_without_sae", "same"),
                      ("model_performance_preservation.ce_loss_without_sae", "same")),
    "ce_loss_with_sae": (("ce_loss_with_sae", "same"), ("model_performance_preservation/ce_loss_with_sae", "same"),
                         ("model_performance_preservation.ce_loss_with_sae", "same")),
    "ce_loss_ablated": (("ce_loss_ablated", "same"), ("ce_loss_with_ablation", "same"),
                        ("model_performance_preservation/ce_loss_with_ablation", "same"),
                        ("model_performance_preservation.ce_loss_with_ablation", "same")),
    "ce_loss_score": (("ce_loss_score", "same"), ("model_performance_preservation/ce_loss_score", "same"),
                      ("model_performance_preservation.ce_loss_score", "same")),
    "grad_norm": (("grad_norm", "same"), ("gradient_norm", "same"), ("details/grad_norm", "same"),
                  ("train/grad_norm", "same")),
    "elapsed_s": (("elapsed_s", "same"), ("elapsed", "same"), ("_runtime", "same"), ("runtime", "same"),
                  ("wall_time_s", "same")),
}

# Hookpoint-suffixed names (sparsify): prefix -> (canonical, unit).
_HOOKED: dict[str, tuple[str, str]] = {
    "fvu/": ("explained_variance", "one_minus"),
    "dead_pct/": ("dead_frac", "auto_frac"),
    "l0/": ("l0", "same"),
    "lr/": ("lr", "same"),
    "explained_variance/": ("explained_variance", "same"),
    "auxk/": ("aux_loss", "same"),
}

_LOOKUP: dict[str, tuple[str, str]] = {alias: (canon, unit) for canon, pairs in _ALIASES.items()
                                       for alias, unit in pairs}
_PREFIXES = ("train/", "training/", "train_", "metrics/", "sae/")

# Config keys: canonical -> aliases (searched in the flattened config, last path component too).
# ``trainer.config`` accepts the same names in a training config (one table for reading logs and
# for ``sae-report train``), and ``compare`` takes its training settings from here and TrainConfig.
CONFIG_ALIASES: dict[str, tuple[str, ...]] = {
    "l1_alpha": ("l1_alpha", "l1_coefficient", "l1_coeff", "l1_penalty", "sparsity_coefficient",
                 "sparsity_penalty", "lambda_l1"),
    "learning_rate": ("learning_rate", "lr"),
    "resample_interval": ("resample_interval", "resample_every", "resampling_interval",
                          "feature_sampling_window", "resample_steps"),
    "target_l0": ("target_l0",),
    "total_steps": ("total_steps", "steps", "num_steps", "max_steps", "n_steps", "training_steps"),
    "d_sae": ("d_sae", "dict_size", "num_latents", "n_features", "n_latents", "dictionary_size",
              "hidden_dim", "d_hidden"),
    "d_in": ("d_in", "activation_dim", "d_model", "input_dim"),
    "batch_size": ("batch_size", "train_batch_size_tokens", "train_batch_size", "batch_size_tokens"),
    # in steps (SAELens' dead_feature_window); windows in tokens are dead_window_tokens below
    "dead_window": ("dead_window", "dead_window_steps", "dead_feature_window", "dead_steps"),
    "expansion_factor": ("expansion_factor",),
    "l1_warmup_steps": ("l1_warmup_steps", "l1_warm_up_steps"),
    "lr_warmup_steps": ("lr_warmup_steps", "lr_warm_up_steps"),
    "training_tokens": ("training_tokens", "total_training_tokens", "num_tokens"),
    # sparsify's dead_feature_threshold counts TOKENS (10M by default), not steps (SAELens' own
    # dead_feature_threshold is a firing frequency below 1, never a window: not a count, ignored)
    "dead_window_tokens": ("dead_window_tokens", "dead_feature_threshold"),
    # the architecture (SAELens' cfg.json / W&B ``architecture``; read by ``architecture_of``)
    "sae_variant": ("sae_variant", "architecture"),
    # TopK / BatchTopK: SAELens 6 and sparsify name k alike; sparsify's and dictionary_learning's
    # auxk_alpha is SAELens' aux_loss_coefficient
    "k": ("k", "top_k", "topk_k"),
    "k_decay_steps": ("k_decay_steps",),
    "aux_loss_coefficient": ("aux_loss_coefficient", "auxk_alpha", "auxk_coefficient", "aux_coefficient"),
    "aux_k": ("aux_k", "k_aux", "auxk_k"),
    # JumpReLU (SAELens 6)
    "l0_coefficient": ("l0_coefficient", "l0_coeff", "l0_lambda"),
    "l0_warmup_steps": ("l0_warmup_steps", "l0_warm_up_steps"),
}
_CONFIG_ALIASES = CONFIG_ALIASES  # the name earlier versions used
#: Keys counted in tokens -> the key in steps they give (divided by the tokens per step).
TOKEN_KEYS: dict[str, str] = {"training_tokens": "total_steps", "dead_window_tokens": "dead_window"}
#: Keys of a sparsify config: its ``batch_size`` counts sequences of ``ctx_len`` tokens.
SPARSIFY_KEYS = frozenset({"dead_feature_threshold", "hookpoints", "auxk_alpha", "micro_acc_steps", "k_decay_steps",
                           "ctx_len", "grad_acc_steps", "multi_topk"})


def config_alias(key: str) -> str | None:
    """The canonical key an alias names (``lr`` -> ``learning_rate``), None for unknown keys."""
    k = _norm(str(key))
    return next((canon for canon, names in CONFIG_ALIASES.items() if k in names), None)


def tokens_per_step(config: Mapping[str, Any]) -> tuple[float | None, str]:
    """Activation vectors (tokens) one step of the run consumed, and how that was worked out; None
    with the reason when the config does not say. sparsify counts ``batch_size`` in sequences of
    ``ctx_len`` tokens (times ``grad_acc_steps`` per optimizer step); SAELens' and our batch sizes
    are tokens already."""
    by_leaf: dict[str, Any] = {}
    for key, value in _flatten(dict(config)).items():
        by_leaf.setdefault(_norm(key.rsplit(".", 1)[-1]), value)
    threshold = _number(by_leaf.get("dead_feature_threshold"))
    markers = (SPARSIFY_KEYS - {"dead_feature_threshold"}) & set(by_leaf)
    sparsify = bool(markers or (threshold is not None and threshold >= 1)) and "train_batch_size_tokens" not in by_leaf
    batch = _number(by_leaf.get("batch_size"))
    if sparsify:
        ctx, acc = _number(by_leaf.get("ctx_len")), _number(by_leaf.get("grad_acc_steps")) or 1
        if batch and ctx and batch > 0 and ctx > 0 and acc > 0:
            return batch * ctx * acc, (f"sparsify: batch_size {batch:g} sequences x ctx_len {ctx:g} tokens"
                                       + (f" x grad_acc_steps {acc:g}" if acc != 1 else "") + " per step")
        return None, "sparsify's batch_size counts sequences and the config records no ctx_len"
    for name in ("train_batch_size_tokens", "batch_size_tokens", "batch_size", "train_batch_size"):
        n = _number(by_leaf.get(name))
        if n and n > 0:
            return n, f"{name} {n:g} tokens per step"
    return None, "the config records no batch size"


@dataclass(frozen=True)
class Canonical:
    """A frame mapped onto canonical columns."""

    frame: pl.DataFrame
    """``step`` (Int64) and canonical Float64 columns, sorted by step, one row per step."""
    notes: list[str] = field(default_factory=list)
    """What was mapped, converted, derived or ignored, in plain words."""
    d_sae: int | None = None
    """Dictionary size, from the config or inferred from a count logged beside its fraction."""
    mapping: dict[str, str] = field(default_factory=dict)
    """Raw column name -> canonical column it became."""


def _norm(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


#: The user's own names (``--map NAME=COLUMN``) in force: normalised name -> (canonical, unit).
_USER_MAP: contextvars.ContextVar[dict[str, tuple[str, str]] | None] = contextvars.ContextVar(
    "sae_report_column_map", default=None)
#: What ``--map`` points a name at: a canonical column, or any name the aliases know (``l0_pct``,
#: ``fvu``, ``metrics/l0``: then its unit applies).
MAP_HINT = "map a name with --map NAME=COLUMN (e.g. --map loss/total=loss)"


class ColumnMapError(ValueError):
    """A ``--map`` entry that cannot be used (one line)."""


def parse_column_map(spec: Mapping[str, str] | Sequence[str] | str | None) -> dict[str, str]:
    """``{"loss/total": "loss"}``, or ``["loss/total=loss", "my_l0=l0,my_ev=explained_variance"]``
    (``--map`` values; commas separate pairs) -> ``{name: column}``. Raises ``ColumnMapError`` for
    a malformed pair or a column nothing knows."""
    if not spec:
        return {}
    if isinstance(spec, str):
        spec = [spec]
    pairs: list[tuple[str, str]] = []
    if isinstance(spec, Mapping):
        pairs = [(str(k), str(v)) for k, v in spec.items()]
    else:
        for item in spec:
            for part in str(item).split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise ColumnMapError(f"--map {part.strip()}: expected NAME=COLUMN (e.g. loss/total=loss)")
                name, column = part.rsplit("=", 1)
                pairs.append((name.strip(), column.strip()))
    out: dict[str, str] = {}
    for name, column in pairs:
        if not name or not column:
            raise ColumnMapError(f"--map {name}={column}: expected NAME=COLUMN (e.g. loss/total=loss)")
        if _builtin_match(column) is None:
            raise ColumnMapError(f"--map {name}={column}: {column!r} is not a metric column; use one of "
                                 f"{', '.join(METRIC_COLUMNS)} (or a name the aliases know, such as l0_pct or fvu)")
        out[name] = column
    return out


@contextlib.contextmanager
def mapped_columns(spec: Mapping[str, str] | Sequence[str] | str | None) -> Iterator[dict[str, str]]:
    """While open, every reader maps the named columns as told (``--map``); yields the parsed map."""
    parsed = parse_column_map(spec)
    token = _USER_MAP.set({_norm(k): _builtin_match(v) for k, v in parsed.items()} if parsed else _USER_MAP.get())
    try:
        yield parsed
    finally:
        _USER_MAP.reset(token)


def active_column_map() -> dict[str, tuple[str, str]]:
    """The ``--map`` entries in force (normalised name -> (canonical, unit))."""
    return dict(_USER_MAP.get() or {})


def match_column(name: str) -> tuple[str, str] | None:
    """Canonical column and unit for a raw column name (the user's ``--map`` first), or None when
    unknown."""
    user = _USER_MAP.get()
    if user:
        hit = user.get(_norm(name))
        if hit is not None:
            return hit
    return _builtin_match(name)


def _builtin_match(name: str) -> tuple[str, str] | None:
    key = _norm(name)
    if key in _LOOKUP:
        return _LOOKUP[key]
    for prefix, target in _HOOKED.items():
        if key.startswith(prefix) and len(key) > len(prefix):
            return target
    for prefix in _PREFIXES:
        if key.startswith(prefix) and key[len(prefix):] in _LOOKUP:
            return _LOOKUP[key[len(prefix):]]
    return None


def _to_float(series: pl.Series) -> pl.Series:
    """Any column -> Float64; strings like ``nan``, ``Infinity`` become numbers, junk becomes null."""
    if series.dtype == pl.Float64:
        return series
    if series.dtype == pl.String:
        s = series.str.strip_chars()
        return s.cast(pl.Float64, strict=False)
    if series.dtype == pl.Boolean:
        return series.cast(pl.Float64)
    try:
        return series.cast(pl.Float64, strict=False)
    except Exception:  # nested or object types: nothing usable
        return pl.Series(series.name, [None] * len(series), dtype=pl.Float64)


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            if set(v) <= {"value", "desc"} and "value" in v:  # W&B config.yaml entries
                out[key] = v["value"]
            else:
                out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out




#: The counts the analyzer uses and the values a count may take: a number outside (``d_sae: 1e300``,
#: ``batch_size: -4``) is no count, and the canonical key is null (with a note where notes are kept).
COUNT_RANGES: dict[str, tuple[int, int]] = {
    "d_sae": (1, 2**31), "d_in": (1, 2**31), "total_steps": (1, 2**53), "resample_interval": (0, 2**53),
    "batch_size": (1, 2**53), "dead_window": (1, 2**53)}


def canonical_config(raw: Mapping[str, Any] | None, notes: list[str] | None = None) -> dict[str, Any]:
    """The config with canonical keys (``l1_alpha``, ``learning_rate``, ``resample_interval``,
    ``target_l0``, ``total_steps``, ``d_sae``, ``d_in``, ``batch_size``, ``dead_window``) filled in
    from known aliases (SAELens ``l1_coefficient``/``lr``/``d_sae``, sparsify ``num_latents`` /
    ``expansion_factor``, dictionary_learning ``dict_size``/``activation_dim``, W&B ``{value: x}``
    entries, nested sections). Keys already canonical win; other keys are kept as they were. Counts
    in tokens (``training_tokens``, ``dead_window_tokens``, sparsify's ``dead_feature_threshold``)
    become steps through ``tokens_per_step`` (``notes`` says so). A count outside ``COUNT_RANGES``
    becomes null (``notes``, when given, says so).

    ``architecture`` is filled in (``sae_report.analysis.architecture.architecture_of``: our
    ``sae_variant``, SAELens' ``architecture``, sparsify's ``k``, dictionary_learning's trainer
    names), with ``k`` and ``l0_coefficient``. A TopK / BatchTopK / JumpReLU run has no
    ``l1_alpha``: a JumpReLU config that names its L0 coefficient as an L1 one (older SAELens'
    ``l1_coefficient``, dictionary_learning's ``sparsity_penalty``) gives ``l0_coefficient``."""
    raw = dict(raw or {})
    flat = _flatten(raw)
    by_leaf: dict[str, Any] = {}
    where: dict[str, str] = {}
    for key, value in flat.items():
        leaf = _norm(key.rsplit(".", 1)[-1])
        by_leaf.setdefault(leaf, value)
        where.setdefault(leaf, key)
        by_leaf.setdefault(_norm(key), value)
    out: dict[str, Any] = {k: (v["value"] if isinstance(v, Mapping) and "value" in v and set(v) <= {"value", "desc"} else v)
                           for k, v in raw.items()}
    for canon, aliases in CONFIG_ALIASES.items():
        if _number(out.get(canon)) is not None:
            continue
        for alias in aliases:
            n = _number(by_leaf.get(alias))
            if n is None or (canon == "d_sae" and n == 0):  # sparsify's num_latents 0: "use expansion_factor"
                continue
            if canon == "dead_window_tokens" and n < 1:  # SAELens' dead_feature_threshold: a frequency (1e-8)
                continue
            out[canon] = by_leaf[alias]
            break
    if _number(out.get("d_sae")) is None:
        ef, d_in = _number(out.get("expansion_factor")), _number(out.get("d_in"))
        if ef and d_in:
            out["d_sae"] = int(round(ef * d_in))
    for tokens_key, steps_key in TOKEN_KEYS.items():
        tokens = _number(out.get(tokens_key))
        if _number(out.get(steps_key)) is not None or not tokens or tokens <= 0:
            continue
        per_step, how = tokens_per_step(raw)
        source = where.get(next((a for a in CONFIG_ALIASES[tokens_key] if a in by_leaf), tokens_key), tokens_key)
        what = "the dead-feature window" if steps_key == "dead_window" else "the run's length"
        if per_step:
            out[steps_key] = max(1, int(tokens // per_step))
            if notes is not None:
                notes.append(f"config: {source} {tokens:,.0f} counts tokens, not steps ({what}): {steps_key} = "
                             f"{tokens:,.0f} / {per_step:,.0f} tokens per step ({how}) = {out[steps_key]:,} steps")
        elif notes is not None:
            notes.append(f"config: {source} {tokens:,.0f} counts tokens, not steps ({what}); {how}, so "
                         f"{steps_key} in steps is unknown (not read as steps)")
    for key in ("d_sae", "d_in", "total_steps", "resample_interval", "batch_size", "dead_window"):
        n = _number(out.get(key))
        if n is None:
            continue
        lo, hi = COUNT_RANGES[key]
        if not lo <= n <= hi:
            if notes is not None:
                notes.append(f"config: {key} {out[key]!r} is not a usable count (from {lo:,} to {hi:,}): ignored")
            out[key] = None
        elif float(n).is_integer():
            out[key] = int(n)
    target = _number(out.get("target_l0"))
    if target is not None and target > 1 and _number(out.get("d_sae")):
        out["target_l0"] = target / float(out["d_sae"])  # a count target -> fraction
    from .architecture import architecture_of

    arch = architecture_of(raw)
    if arch is not None:
        out["architecture"] = arch
        if arch in ("topk", "batchtopk", "jumprelu"):
            l1 = out.pop("l1_alpha", None)
            if arch == "jumprelu" and _number(out.get("l0_coefficient")) is None and _number(l1) is not None:
                out["l0_coefficient"] = l1
                if notes is not None:
                    notes.append(f"config: a JumpReLU SAE's sparsity coefficient {l1!r} (named as an L1 one) read "
                                 "as l0_coefficient")
    return out


def _dedup_steps(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """One row per step, sorted. Among rows with the same step the later write wins, column by
    column: a later row that does not mention a metric (null) does not erase it, so metrics logged
    in separate calls at one step are joined, never forward-filled from other steps."""
    n = frame.height
    step = frame.get_column("step")
    if n < 2 or (step.null_count() == 0 and bool((step.diff().slice(1) > 0).all())):
        # the usual log: already one row per step, in order; no sort, no copy of any column
        return frame.with_columns(pl.col("step").set_sorted()), 0
    frame = frame.with_row_index("_row").sort(["step", "_row"])
    if frame.get_column("step").n_unique() == n:
        return frame.drop("_row"), 0
    others = [c for c in frame.columns if c not in ("step", "_row")]
    frame = frame.group_by("step", maintain_order=True).agg([pl.col(c).drop_nulls().last() for c in others])
    return frame, n - frame.height


def canonicalize(frame: pl.DataFrame, config: Mapping[str, Any] | None = None) -> Canonical:
    """Map ``frame``'s columns onto canonical ones (see the module doc); ``config`` gives ``d_sae``.

    Raises ``RunLogError`` (message without the file name: the caller prefixes it) when no step
    column or no known metric is found.
    """
    notes: list[str] = []
    cfg = canonical_config(config or {})
    mapping: dict[str, str] = {}
    chosen: dict[str, list[tuple[str, str]]] = {}
    ignored: list[str] = []
    hooked_seen: dict[str, str] = {}
    user = active_column_map()
    for col in frame.columns:
        if col.endswith(("__MIN", "__MAX")):
            ignored.append(col)
            continue
        if _norm(col) in user:
            chosen.setdefault(user[_norm(col)][0], []).append((col, user[_norm(col)][1]))
            continue
        hit = match_column(col)
        if hit is None:
            ignored.append(col)
            continue
        canon, unit = hit
        prefix = next((p for p in _HOOKED if _norm(col).startswith(p)), None)
        if prefix is not None and _norm(col) not in _LOOKUP:
            # sparsify logs one column per hookpoint: follow the first hookpoint only
            if prefix in hooked_seen and hooked_seen[prefix] != col:
                ignored.append(col)
                continue
            hooked_seen[prefix] = col
        chosen.setdefault(canon, []).append((col, unit))
    if "step" not in chosen:
        raise RunLogError(f"no step column (looked for step, _step, global_step, ...) among {len(frame.columns)} column(s)")
    missing = sorted(k for k in user if k not in {_norm(c) for c in frame.columns})
    if missing:
        notes.append(f"--map: {', '.join(missing)} not in this log")
    if len(chosen) == 1:
        shown = ", ".join(frame.columns[:6]) + (", ..." if len(frame.columns) > 6 else "")
        raise RunLogError(f"no known metric column (found: {shown}); {MAP_HINT}")
    cols: dict[str, pl.Series] = {}
    per_d_sae: dict[str, list[pl.Series]] = {}
    for canon, sources in chosen.items():
        # The user's --map first, then the exact canonical name; other aliases fill the steps left empty.
        sources.sort(key=lambda cu: 0 if _norm(cu[0]) in user else (1 if _norm(cu[0]) == canon else 2))
        parts = []
        for col, unit in sources:
            s = _to_float(frame.get_column(col))
            if unit == "per_d_sae":  # a count of features: a fraction once d_sae is known
                mapping[col] = canon
                per_d_sae.setdefault(canon, []).append(s.alias(canon))
                continue
            if _norm(col) in user:
                notes.append(f"{col} -> {canon} (--map)" + (" as a percent" if unit == "percent" else
                                                             (" as 1 - value" if unit == "one_minus" else "")))
                if unit == "percent":
                    s = s / 100.0
                elif unit == "one_minus":
                    s = 1.0 - s
            elif unit == "percent":
                s = s / 100.0
                notes.append(f"{col}: percent -> fraction ({canon})")
            elif unit == "one_minus":
                s = 1.0 - s
                notes.append(f"{col}: explained_variance = 1 - {col}")
            elif canon != _norm(col):
                notes.append(f"{col} -> {canon}")
            mapping[col] = canon
            parts.append(s.alias(canon))
        if not parts:
            continue
        if len(parts) == 1:
            cols[canon] = parts[0]
        else:
            cols[canon] = pl.select(pl.coalesce(parts)).to_series().alias(canon)
    step = cols.pop("step")
    # Whole numbers only (3.0 is step 3): 2.5 is refused, never rounded into a neighbour's row.
    check_whole_steps(None, step)
    steps_int = step.cast(pl.Int64, strict=False)  # NaN, inf and nulls: rows without a usable step
    out = pl.DataFrame({"step": steps_int, **cols})
    bad = steps_int.null_count()
    if bad:
        out = out.filter(pl.col("step").is_not_null())
        notes.append(f"{bad} row(s) without a usable step dropped")
    if out.height == 0:
        raise RunLogError("no rows with a usable step")
    negative = int((out.get_column("step") < 0).sum())
    if negative:
        notes.append(f"{negative} row(s) with a negative step (from {out.get_column('step').min()}): kept, in step order")
    out, dups = _dedup_steps(out)
    if dups:
        notes.append(f"{dups} repeated step(s): the later write kept")
    # l0 given as a fraction under a count name (a whole series <= 1 cannot be a count from init).
    # (Only for the ambiguous bare names; SAELens' metrics/l0 is documented as a count.)
    l0_raw = _norm(chosen["l0"][0][0]) if "l0" in chosen else ""
    if "l0" in out.columns and "l0_frac" not in out.columns and l0_raw in ("l0", "l0_norm", "mean_l0"):
        mx = out.get_column("l0").filter(out.get_column("l0").is_finite()).max()
        if mx is not None and mx <= 1.0:
            out = out.rename({"l0": "l0_frac"})
            mapping = {k: ("l0_frac" if v == "l0" else v) for k, v in mapping.items()}
            notes.append("l0 values are all <= 1: read as a fraction of the dictionary (l0_frac)")
    d_sae = infer_d_sae(out, cfg, notes)
    out = fill_pairs(out, d_sae, notes)
    out = _counts_to_fractions(out, steps_int, per_d_sae, mapping, d_sae, notes)
    order = [c for c in METRIC_COLUMNS if c in out.columns]
    if ignored:
        shown = ", ".join(ignored[:8]) + (f" and {len(ignored) - 8} more" if len(ignored) > 8 else "")
        notes.append(f"columns not used: {shown}")
    return Canonical(frame=out.select(order), notes=notes, d_sae=d_sae, mapping=mapping)


def _counts_to_fractions(out: pl.DataFrame, steps_int: pl.Series, per_d_sae: dict[str, list[pl.Series]],
                         mapping: dict[str, str], d_sae: int | None, notes: list[str]) -> pl.DataFrame:
    """Feature counts logged where a share of the dictionary is canonical (SAELens'
    ``sparsity/below_1e-5``): divided by ``d_sae`` and joined on step (the later write wins, as for
    every column); left out with a note when d_sae is unknown."""
    if not per_d_sae:
        return out
    raws = {canon: [c for c, v in mapping.items() if v == canon] for canon in per_d_sae}
    if not d_sae:
        for canon in per_d_sae:
            notes.append(f"{', '.join(raws[canon])} count(s) features: without d_sae (--d-sae) no share of the "
                         f"dictionary ({canon}); not used")
            for c in raws[canon]:
                mapping.pop(c, None)
        return out
    for canon, parts in per_d_sae.items():
        s = parts[0] if len(parts) == 1 else pl.select(pl.coalesce(parts)).to_series().alias(canon)
        extra = pl.DataFrame({"step": steps_int, "_v": s / float(d_sae)}).filter(
            pl.col("step").is_not_null() & pl.col("_v").is_not_null())
        extra = extra.group_by("step", maintain_order=True).agg(pl.col("_v").last())
        notes.append(f"{', '.join(raws[canon])}: a count of features -> {canon} = count / d_sae ({d_sae})")
        if canon in out.columns:
            joined = out.join(extra, on="step", how="left")
            out = joined.with_columns(pl.coalesce([pl.col(canon), pl.col("_v")]).alias(canon)).drop("_v")
        else:
            out = out.join(extra.rename({"_v": canon}), on="step", how="left")
    return out.with_columns(pl.col("step").set_sorted())


def infer_d_sae(frame: pl.DataFrame, cfg: Mapping[str, Any], notes: list[str] | None = None) -> int | None:
    """The dictionary size: the config's ``d_sae``, else the median of ``count / fraction`` over the
    rows where a pair (``dead``/``dead_frac``, ``l0``/``l0_frac``) is logged, from the rows whose
    fraction is above 1% when there are any (a rounded tiny fraction makes a poor ratio), else from
    every row with both positive. The one rule of the reader and the analyzer."""
    n = _number(cfg.get("d_sae"))
    if n and n > 0:
        return int(n)
    for count, frac in (("dead", "dead_frac"), ("l0", "l0_frac")):
        if count in frame.columns and frac in frame.columns:
            c, f = frame.get_column(count).cast(pl.Float64), frame.get_column(frac).cast(pl.Float64)
            ok = c.is_finite() & f.is_finite() & (c > 0) & (f > 0)
            for keep in (ok & (f > 0.01), ok):
                ratio = (c / f).filter(keep)
                ratio = ratio.filter(ratio.is_finite() & (ratio < 2**40))  # 1e308 / 0.5 is no dictionary
                if ratio.len():
                    d = int(round(float(ratio.median())))
                    if d > 0:
                        if notes is not None:
                            notes.append(f"d_sae = {d}, inferred from {count} / {frac}")
                        return d
    return None


def fill_pairs(frame: pl.DataFrame, d_sae: int | None, notes: list[str] | None = None) -> pl.DataFrame:
    """``l0_frac`` from ``l0`` (and back), ``dead_frac`` from ``dead`` (and back), given d_sae."""
    if not d_sae:
        return frame
    for count, frac in (("l0", "l0_frac"), ("dead", "dead_frac")):
        if count in frame.columns and frac not in frame.columns:
            frame = frame.with_columns((pl.col(count) / d_sae).alias(frac))
            if notes is not None:
                notes.append(f"{frac} = {count} / d_sae ({d_sae})")
        elif frac in frame.columns and count not in frame.columns:
            frame = frame.with_columns((pl.col(frac) * d_sae).alias(count))
            if notes is not None:
                notes.append(f"{count} = {frac} x d_sae ({d_sae})")
    return frame
