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

    def yaml(self) -> str:
        """The config as YAML with a header comment listing the changes."""
        head = [f"# Next run, based on {self.base or 'the base config'}; written by sae-report recommend."]
        for c in self.changes:
            head.append(f"# {c.key}: {_show(c.old)} -> {_show(c.new)}  ({c.why})")
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
        old = cfg.get("l1_alpha")
        put("l1_alpha", l1.l1_alpha, f"{l1.direction} l1_alpha toward the {100 * l1.target_l0:.3g}% target "
            f"(range {l1.low:.3g}-{l1.high:.3g})")
        sched = cfg.get("l1_alpha_schedule")
        if isinstance(sched, Mapping) and sched and isinstance(old, (int, float)) and old > 0:
            ratio = l1.l1_alpha / float(old)
            put("l1_alpha_schedule", {k: float(f"{float(v) * ratio:.3g}") for k, v in sched.items()},
                f"piecewise schedule scaled by {ratio:.3g} with l1_alpha")
    if target_l0 is not None and "target_l0" in cfg and isinstance(target_l0, float) and 0 < target_l0 < 1:
        put("target_l0", target_l0, "the target used for the recommendation")
    for r in rules:
        if r.parameter == "l1_alpha":
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


def write_next_config(path: Path, nxt: NextConfig) -> Path:
    """Write the YAML atomically (never a half-written file)."""
    path = Path(path)
    atomic_write_text(path, nxt.yaml())
    return path
