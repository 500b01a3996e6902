"""The next run's full config: a base run's config with the recommended changes, validated
against ``trainer.TrainConfig`` (when the trainer is installed) and written atomically as YAML
ready for ``sae-report train PATH``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..analysis.result import Recommendation
from ..runlog import atomic_write_text, to_jsonable
from .fit import L1Recommendation

#: Keys of a recorded config.yaml that describe the finished run, not the next one.
RUN_ONLY_KEYS = frozenset({"run_id", "schema_version", "created", "created_at", "started_at", "provenance",
                           "git", "host", "hostname", "version", "sae_report_version", "torch_version",
                           "scenario", "input_scale", "resolved", "out_dir", "run_dir", "command"})


class NextConfigError(ValueError):
    """The next config would not be valid for the trainer (one line)."""


@dataclass(frozen=True)
class Change:
    """One change from the base config."""

    key: str
    """Config key."""
    old: Any
    """Value in the base run."""
    new: Any
    """Value in the next run."""
    why: str
    """Reason in one line."""


@dataclass(frozen=True)
class NextConfig:
    """The next run's config."""

    config: dict[str, Any]
    """Full config (trainer keys only)."""
    changes: list[Change] = field(default_factory=list)
    """What changed from the base run, and why."""
    base: str = ""
    """Run id the config starts from."""
    dropped: list[str] = field(default_factory=list)
    """Base keys left out (not trainer settings)."""

    def yaml(self, extra: Sequence[str] = ()) -> str:
        """The config as YAML with a header comment listing the changes (``extra``: more comment lines)."""
        head = [f"# Next run, based on {self.base or 'the base config'}; written by sae-report recommend."]
        for c in self.changes:
            head.append(f"# {c.key}: {_show(c.old)} -> {_show(c.new)}  ({c.why})")
        head.extend(f"# {line}" for line in extra)
        body = yaml.safe_dump(to_jsonable(self.config), sort_keys=False, width=1000)
        return "\n".join(head) + "\n" + body


def _short(reason: str, limit: int = 110) -> str:
    """The first clause of a reason, cut at a word boundary."""
    text = reason.split(". ")[0].split("; ")[0].split(": ")[0]
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def _show(v: Any) -> str:
    return yaml.safe_dump(to_jsonable(v), default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _trainer_keys() -> list[str] | None:
    try:
        from trainer.config import TrainConfig
    except Exception:  # trainer not installed: write the keys as they are
        return None
    return TrainConfig.keys()


def _validate(config: Mapping[str, Any], source: str) -> None:
    try:
        from trainer.config import ConfigError, TrainConfig
    except Exception:
        return
    try:
        TrainConfig.from_dict(dict(config), source=source)
    except ConfigError as exc:
        raise NextConfigError(str(exc)) from None


def next_config(base: Mapping[str, Any], *, l1: L1Recommendation | None = None,
                rules: Sequence[Recommendation] = (), base_id: str = "", target_l0: float | None = None
                ) -> NextConfig:
    """Apply the l1 recommendation and the rules' proposals to ``base`` (a recorded config)."""
    keys = _trainer_keys()
    cfg: dict[str, Any] = {}
    dropped = []
    for k, v in base.items():
        if k in RUN_ONLY_KEYS or (keys is not None and k not in keys):
            dropped.append(k)
            continue
        cfg[k] = v
    if "device_requested" in base and "device" in cfg:
        cfg["device"] = base["device_requested"]  # the run recorded the resolved device; keep the request
    changes: list[Change] = []

    def put(key: str, value: Any, why: str) -> None:
        old = cfg.get(key)
        if old == value:
            return
        cfg[key] = value
        changes.append(Change(key, old, value, why))

    if l1 is not None:
        coef = getattr(l1, "coefficient", "l1_alpha")  # l1_alpha, or a JumpReLU SAE's l0_coefficient
        old = cfg.get(coef)
        put(coef, l1.l1_alpha, f"{l1.direction} {coef} toward the {100 * l1.target_l0:.3g}% target "
            f"(range {l1.low:.3g}-{l1.high:.3g})")
        sched = cfg.get("l1_alpha_schedule") if coef == "l1_alpha" else None
        if isinstance(sched, Mapping) and sched and isinstance(old, (int, float)) and old > 0:
            ratio = l1.l1_alpha / float(old)
            put("l1_alpha_schedule", {k: float(f"{float(v) * ratio:.3g}") for k, v in sched.items()},
                f"piecewise schedule scaled by {ratio:.3g} with l1_alpha")
    if target_l0 is not None and "target_l0" in cfg and isinstance(target_l0, float) and 0 < target_l0 < 1:
        put("target_l0", target_l0, "the target used for the recommendation")
    for r in rules:
        if l1 is not None and r.parameter == getattr(l1, "coefficient", "l1_alpha"):
            continue
        value = r.proposed
        if isinstance(value, float) and math.isfinite(value) and value.is_integer() and isinstance(cfg.get(r.parameter), int):
            value = int(value)
        put(r.parameter, value, _short(r.reason))
        if r.parameter == "l1_warmup_steps" and value and cfg.get("l1_schedule") in ("constant", None) \
                and not cfg.get("l1_alpha_schedule"):
            put("l1_schedule", "warmup", "l1_alpha ramps up from 0 over l1_warmup_steps")
    _validate(cfg, f"next config from {base_id or 'base'}")
    return NextConfig(config=cfg, changes=changes, base=base_id, dropped=dropped)


def write_next_config(path: Path, nxt: NextConfig, extra: Sequence[str] = ()) -> Path:
    """Write the YAML atomically (never a half-written file); ``extra``: more header comment lines."""
    path = Path(path)
    atomic_write_text(path, nxt.yaml(extra))
    return path


# ----------------------------------------------------------------------------------------------
# The same changes in the key names of the tool that trained the base run (SAELens, sparsify, ...)
# ----------------------------------------------------------------------------------------------

#: Config keys that say which tool wrote a config (leaf names, any nesting).
TOOL_MARKERS: dict[str, frozenset[str]] = {
    "SAELens": frozenset({"l1_coefficient", "training_tokens", "train_batch_size_tokens", "hook_name", "context_size",
                          "model_name", "l1_warm_up_steps", "dead_feature_window", "feature_sampling_window",
                          "lr_scheduler_name", "store_batch_size_prompts", "lr_warm_up_steps", "n_batches_in_buffer"}),
    "sparsify": frozenset({"dead_feature_threshold", "hookpoints", "auxk_alpha", "micro_acc_steps", "k_decay_steps",
                           "ctx_len", "grad_acc_steps", "multi_topk", "num_latents", "layer_stride"}),
    "dictionary_learning": frozenset({"dict_size", "activation_dim", "trainer_class", "sparsity_penalty",
                                      "warmup_steps", "sparsity_warmup_steps"}),
}
#: Keys of ours that are no training setting of another tool (never written in its names).
_NOT_FOR_SOURCE = frozenset({"target_l0"})


@dataclass(frozen=True)
class SourceChanges:
    """The next run's changes in the key names of the tool that trained the base run."""

    tool: str
    """``SAELens``, ``sparsify``, ``dictionary_learning``, or ``the source trainer``."""
    slug: str
    """For the file name: ``saelens``, ``sparsify``, ``dictionary_learning``, ``source``."""
    changes: list[dict[str, Any]] = field(default_factory=list)
    """``{"key": their key (a dotted path when nested), "old", "new", "ours": our key, "how"}``."""
    unmapped: list[dict[str, Any]] = field(default_factory=list)
    """Our changes with no counterpart in their config: ``{"ours", "new", "why"}``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return to_jsonable({"tool": self.tool, "changes": self.changes, "unmapped": self.unmapped})

    def yaml(self, base_id: str, ours: str | None = None) -> str:
        """The changes as YAML in their key names, with a header saying how to use them."""
        head = [f"# The next run in the key names of {self.tool}, based on run {base_id} (its recorded config);",
                "# written by sae-report recommend. Apply these values to the config that trained it;",
                "# every other setting stays as it was there."]
        if ours:
            head.append(f"# {ours} holds the same run for `sae-report train` (our trainer).")
        for c in self.changes:
            head.append(f"#   {c['key']}: {_show(c['old'])} -> {_show(c['new'])}  ({c['how']})")
        for u in self.unmapped:
            head.append(f"# No {self.tool} counterpart found for {u['ours']}: {_show(u['new'])} ({u['why']})")
        body: dict[str, Any] = {}
        for c in self.changes:
            node = body
            parts = str(c["key"]).split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = c["new"]
        text = yaml.safe_dump(to_jsonable(body), sort_keys=False, width=1000) if body else "{}\n"
        return "\n".join(head) + "\n" + text


def source_tool(config: Mapping[str, Any]) -> str | None:
    """The tool whose key names ``config`` uses (None: ours, or not recognisable)."""
    leaves = {str(k).rsplit(".", 1)[-1].lower() for k in _flat(config)}
    hits = {tool: len(keys & leaves) for tool, keys in TOOL_MARKERS.items()}
    tool, n = max(hits.items(), key=lambda kv: kv[1])
    return tool if n else None


def source_changes(base: Mapping[str, Any], nxt: NextConfig) -> SourceChanges | None:
    """``nxt``'s changes in the key names the base run's own config uses (``l1_coefficient`` for
    SAELens' ``l1_alpha``, ``training_tokens`` = total_steps x tokens per step, sparsify's
    ``dead_feature_threshold`` in tokens, ...). None when the base config is ours (nothing to
    translate)."""
    from ..runlog.aliases import CONFIG_ALIASES, TOKEN_KEYS, tokens_per_step

    raw = {k: v for k, v in base.items() if k != "imported_from"}
    flat = _flat(raw)
    by_leaf: dict[str, str] = {}
    paths_of: dict[str, list[str]] = {}
    for path in flat:
        by_leaf.setdefault(path.rsplit(".", 1)[-1].lower(), path)
        paths_of.setdefault(path.rsplit(".", 1)[-1].lower(), []).append(path)
    tool = source_tool(raw)
    changes: list[dict[str, Any]] = []
    unmapped: list[dict[str, Any]] = []
    foreign = False
    for c in nxt.changes:
        if c.key in _NOT_FOR_SOURCE:
            continue
        found = None
        for alias in CONFIG_ALIASES.get(c.key, ())[1:]:
            if alias in by_leaf:
                found = (by_leaf[alias], "same")
                break
        if found is None:  # a count in tokens (SAELens' training_tokens, sparsify's dead_feature_threshold)
            for tokens_key, steps_key in TOKEN_KEYS.items():
                if steps_key != c.key:
                    continue
                for alias in CONFIG_ALIASES[tokens_key]:
                    path = by_leaf.get(alias)
                    if path is not None and _number(flat[path]) and _number(flat[path]) >= 1:
                        found = (path, "tokens")
                        break
        if found is None and tool and c.key in by_leaf:
            found = (by_leaf[c.key], "same")  # the same name in their config (SAELens' d_sae, adam_beta1, ...)
        if found is None:
            if tool:
                unmapped.append({"ours": c.key, "new": c.new, "why": c.why})
            continue
        first, unit = found
        leaf = first.rsplit(".", 1)[-1]
        foreign = foreign or leaf != c.key
        if unit == "tokens":
            per_step, how = tokens_per_step(raw)
            if not per_step or not isinstance(c.new, (int, float)):
                unmapped.append({"ours": c.key, "new": c.new,
                                 "why": f"{first} counts tokens and {how}; {c.why}"})
                continue
        for path in paths_of.get(leaf.lower(), [first]):  # every place their config holds it (top level, sae.*)
            old = flat[path]
            if unit == "tokens":
                new: Any = int(round(float(c.new) * per_step))
                note = (f"{c.key} {_show(c.old)} -> {_show(c.new)} steps x {per_step:,.0f} tokens per step ({how}); "
                        f"{c.why}")
            else:
                new = c.new
                if isinstance(old, int) and not isinstance(old, bool) and isinstance(new, float) and new.is_integer():
                    new = int(new)
                note = f"{c.key}; {c.why}" if leaf != c.key else c.why
            changes.append({"key": path, "old": old, "new": new, "ours": c.key, "how": note})
    if not (tool or foreign):
        return None
    name = tool or "the source trainer"
    slug = {"SAELens": "saelens", "sparsify": "sparsify", "dictionary_learning": "dictionary_learning"}.get(name, "source")
    return SourceChanges(tool=name, slug=slug, changes=changes, unmapped=unmapped)


def source_config_path(path: Path, src: SourceChanges) -> Path:
    """``next.yaml`` -> ``next.saelens.yaml`` (beside it)."""
    path = Path(path)
    stem = path.name[: -len(path.suffix)] if path.suffix in (".yaml", ".yml") else path.name
    return path.with_name(f"{stem}.{src.slug}.yaml")


def _flat(raw: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and not (set(v) <= {"value", "desc"} and "value" in v):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v["value"] if isinstance(v, Mapping) else v
    return out


def _number(v: Any) -> float | None:
    from ..runlog import finite_float

    return finite_float(v)
