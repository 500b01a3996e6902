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
  ``details/current_l1_coefficient``, ``details/n_training_tokens``, ``details/n_training_samples``.
- sparsify: ``fvu/<hook>`` (explained_variance = 1 - fvu), ``dead_pct/<hook>`` (a FRACTION despite
  its name: sparsify logs ``mask.mean()``), ``l0/<hook>``, ``lr/<hook>``.
- dictionary_learning: ``l0`` (a count), ``frac_variance_explained``, ``mse_loss``,
  ``sparsity_loss``, ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import polars as pl

from ..runlog import METRIC_COLUMNS, RunLogError
from ..runlog import finite_float as _number
from ..runlog.reader import check_whole_steps

# Canonical name -> (raw alias, unit) pairs. Units: "same", "percent" (divide by 100),
# "one_minus" (canonical = 1 - raw), "auto_frac" (a fraction; kept as is).
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
}

_LOOKUP: dict[str, tuple[str, str]] = {alias: (canon, unit) for canon, pairs in _ALIASES.items()
                                       for alias, unit in pairs}
_PREFIXES = ("train/", "training/", "train_", "metrics/", "sae/")

# Config keys: canonical -> aliases (searched in the flattened config, last path component too).
_CONFIG_ALIASES: dict[str, tuple[str, ...]] = {
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
    "dead_window": ("dead_window", "dead_window_steps", "dead_feature_window", "dead_feature_threshold", "dead_steps"),
    "expansion_factor": ("expansion_factor",),
    "training_tokens": ("training_tokens", "total_training_tokens", "num_tokens"),
}


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


def match_column(name: str) -> tuple[str, str] | None:
    """Canonical column and unit for a raw column name, or None when unknown."""
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
    entries, nested sections). Keys already canonical win; other keys are kept as they were. A
    count outside ``COUNT_RANGES`` becomes null (``notes``, when given, says so)."""
    raw = dict(raw or {})
    flat = _flatten(raw)
    by_leaf: dict[str, Any] = {}
    for key, value in flat.items():
        leaf = _norm(key.rsplit(".", 1)[-1])
        by_leaf.setdefault(leaf, value)
        by_leaf.setdefault(_norm(key), value)
    out: dict[str, Any] = {k: (v["value"] if isinstance(v, Mapping) and "value" in v and set(v) <= {"value", "desc"} else v)
                           for k, v in raw.items()}
    for canon, aliases in _CONFIG_ALIASES.items():
        if _number(out.get(canon)) is not None:
            continue
        for alias in aliases:
            if _number(by_leaf.get(alias)) is not None:
                out[canon] = by_leaf[alias]
                break
    if _number(out.get("d_sae")) is None:
        ef, d_in = _number(out.get("expansion_factor")), _number(out.get("d_in"))
        if ef and d_in:
            out["d_sae"] = int(round(ef * d_in))
    if _number(out.get("total_steps")) is None:
        tokens, batch = _number(out.get("training_tokens")), _number(out.get("batch_size"))
        if tokens and batch:
            out["total_steps"] = int(tokens // batch)
    if _number(out.get("dead_window")) is None:  # a window in tokens (sparsify, OpenAI) -> steps
        tokens, batch = _number(by_leaf.get("dead_window_tokens")), _number(out.get("batch_size"))
        if tokens and batch:
            out["dead_window"] = int(tokens // batch)
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
    for col in frame.columns:
        if col.endswith(("__MIN", "__MAX")):
            ignored.append(col)
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
    if len(chosen) == 1:
        shown = ", ".join(frame.columns[:6]) + (", ..." if len(frame.columns) > 6 else "")
        raise RunLogError(f"no known metric column (found: {shown})")
    cols: dict[str, pl.Series] = {}
    for canon, sources in chosen.items():
        # The exact canonical name first; other aliases fill the steps it left empty.
        sources.sort(key=lambda cu: 0 if _norm(cu[0]) == canon else 1)
        parts = []
        for col, unit in sources:
            s = _to_float(frame.get_column(col))
            if unit == "percent":
                s = s / 100.0
                notes.append(f"{col}: percent -> fraction ({canon})")
            elif unit == "one_minus":
                s = 1.0 - s
                notes.append(f"{col}: explained_variance = 1 - {col}")
            elif canon != _norm(col):
                notes.append(f"{col} -> {canon}")
            mapping[col] = canon
            parts.append(s.alias(canon))
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
    d_sae = _infer_d_sae(out, cfg, notes)
    out = _fill_pairs(out, d_sae, notes)
    order = [c for c in METRIC_COLUMNS if c in out.columns]
    if ignored:
        shown = ", ".join(ignored[:8]) + (f" and {len(ignored) - 8} more" if len(ignored) > 8 else "")
        notes.append(f"columns not used: {shown}")
    return Canonical(frame=out.select(order), notes=notes, d_sae=d_sae, mapping=mapping)


def _infer_d_sae(frame: pl.DataFrame, cfg: Mapping[str, Any], notes: list[str]) -> int | None:
    n = _number(cfg.get("d_sae"))
    if n and n > 0:
        return int(n)
    for count, frac in (("dead", "dead_frac"), ("l0", "l0_frac")):
        if count in frame.columns and frac in frame.columns:
            ratio = (frame.get_column(count) / frame.get_column(frac)).filter(
                frame.get_column(frac) > 0.01)
            ratio = ratio.filter(ratio.is_finite())
            if ratio.len():
                d = int(round(float(ratio.median())))
                if d > 0:
                    notes.append(f"d_sae = {d}, inferred from {count} / {frac}")
                    return d
    return None


def _fill_pairs(frame: pl.DataFrame, d_sae: int | None, notes: list[str]) -> pl.DataFrame:
    if not d_sae:
        return frame
    for count, frac in (("l0", "l0_frac"), ("dead", "dead_frac")):
        if count in frame.columns and frac not in frame.columns:
            frame = frame.with_columns((pl.col(count) / d_sae).alias(frac))
            notes.append(f"{frac} = {count} / d_sae ({d_sae})")
        elif frac in frame.columns and count not in frame.columns:
            frame = frame.with_columns((pl.col(frac) * d_sae).alias(count))
            notes.append(f"{count} = {frac} x d_sae ({d_sae})")
    return frame
