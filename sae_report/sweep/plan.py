"""A sweep's plan: the grid (``--grid key=a,b,c``, repeatable: the cartesian product), checked
through ``trainer.TrainConfig`` before anything runs, one readable run name per point, and the
device slot and thread count each child trains with.

Names are built from the swept values as the trainer reads them: ``l1_alpha_0.02``,
``l1_alpha_0.02__learning_rate_0.003`` (floats in their shortest exact form, other characters than
letters, digits, ``.``, ``_``, ``-`` replaced by ``-``), so the same grid always names the same runs.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from .pool import SlotError, Slots, device_slots

#: Keys that may differ between invocations of the same sweep (where and how fast it trains, how
#: often it writes), and are never part of the comparison of two sweeps' configs.
FREE_KEYS = frozenset({"device", "threads", "flush_every", "flush_secs", "checkpoint_every", "keep_checkpoints",
                       "tf32"})


class SweepError(Exception):
    """A sweep that cannot start or go on (one line)."""


@dataclass(frozen=True)
class PlannedRun:
    """One point of the grid: one run directory."""

    name: str
    """Run directory name under the sweep folder (``l1_alpha_0.02``)."""
    values: dict[str, Any]
    """The swept keys' values for this run, as the trainer reads them."""
    sets: tuple[str, ...]
    """``key=value`` overrides that make this run (the swept keys, after the sweep's ``--set``)."""


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep does, decided before the first child starts."""

    config: Path | None
    """The training config YAML (None: the trainer's defaults)."""
    overrides: tuple[str, ...]
    """The sweep's ``--set key=value`` items, applied to every run."""
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    """The swept keys in the order given, each with its values (YAML-parsed, as ``--set`` reads them)."""
    runs: tuple[PlannedRun, ...]
    """One run per point of the cartesian product, in grid order."""
    base_config: dict[str, Any]
    """The resolved config shared by every run (CONFIG plus ``--set``): compared on a restart."""
    out_dir: Path
    """The sweep folder: one run directory per point, ``sweep.json``, the comparison."""
    slots: tuple[str | None, ...]
    """One device per run trained at once (None: the config's own device)."""
    threads: int | None
    """CPU threads given to each child on a CPU slot: cores / parallel (None: the config's
    ``threads`` is kept, when it sets them or when one run at a time has the free cores)."""
    target_l0: float | None = None
    """Target L0 for the comparison (None: the runs' common ``target_l0``)."""

    def grid_dict(self) -> dict[str, list[Any]]:
        """The grid as plain data (``sweep.json``)."""
        return {k: list(v) for k, v in self.grid}

    def child_sets(self, run: PlannedRun, slot: str | None) -> list[str]:
        """The ``--set`` items of ``run``'s child on ``slot``: the sweep's, the run's, device, threads."""
        return [*self.overrides, *run.sets, *Slots(self.slots, self.threads).sets(slot)]


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return raw


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """``["l1_alpha=0.01,0.02"]`` -> ``[("l1_alpha", [("0.01", 0.01), ("0.02", 0.02)])]``."""
    out: list[tuple[str, list[tuple[str, Any]]]] = []
    for item in items:
        key, sep, rest = item.partition("=")
        key = key.strip()
        raws = [r.strip() for r in rest.split(",")]
        if not sep or not key or not rest.strip() or any(not r for r in raws):
            raise SweepError(f"--grid {item}: expected key=value,value,... (e.g. --grid l1_alpha=0.01,0.02,0.04)")
        if key in (k for k, _ in out):
            raise SweepError(f"--grid {key}: given twice; give all its values in one --grid {key}=a,b,c")
        if len(set(raws)) != len(raws):
            raise SweepError(f"--grid {item}: a value is given twice")
        out.append((key, [(r, _parse_value(r)) for r in raws]))
    if not out:
        raise SweepError("give at least one --grid key=value,value,...")
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(value)).strip("-") or "x"


def run_name(values: dict[str, Any]) -> str:
    """The run directory name for a grid point: ``key_value`` pairs joined by ``__``."""
    return "__".join(f"{k}_{_fmt(v)}" for k, v in values.items())


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a checkpoint to resume from."""
    ckpts = Path(run_dir) / "checkpoints"
    return ckpts.is_dir() and any(ckpts.iterdir())


def make_plan(config: str | Path | None, grid: Sequence[str], *, out_dir: str | Path, overrides: Sequence[str] = (),
              devices: Sequence[str] = (), parallel: int | None = None, target_l0: float | None = None) -> SweepPlan:
    """Check the grid against the trainer's config (each value, then every point) and plan
    the runs; raises ``SweepError`` or the trainer's ``ConfigError`` (one line), writing nothing."""
    from trainer.config import TrainConfig, parse_overrides

    parsed = parse_grid(grid)
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in (k for k, _ in parsed):
            raise SweepError(f"--set {item}: {key} is swept by --grid; give it in one place")
    sources = ([(str(config), _read_config(config))] if config is not None else []) + parse_overrides(overrides)
    known = set(TrainConfig.keys())
    first = [(f"--grid {k}={values[0][0]}", {k: values[0][1]}) for k, values in parsed]
    for i, (key, values) in enumerate(parsed):  # each value with the other keys' first: the error names it
        for raw, value in values:
            TrainConfig.from_sources([*sources, *first[:i], *first[i + 1:], (f"--grid {key}={raw}", {key: value})])
    base = TrainConfig.from_sources([*sources, *first])
    base_dict = base.to_dict()
    runs: list[PlannedRun] = []
    varying: set[str] = set()  # the keys the grid sets, by our names (an alias such as lr sets learning_rate)
    for point in itertools.product(*(values for _, values in parsed)):
        keys = [k for k, _ in parsed]
        label = ", ".join(f"{k}={raw}" for k, (raw, _) in zip(keys, point))
        cfg = TrainConfig.from_sources([*sources, *((f"--grid {label}", {k: v}) for k, (_, v) in zip(keys, point))])
        varying |= {k for k, v in cfg.to_dict().items() if v != base_dict[k]}
        values = {k: _read_as(cfg, k, v, known) for k, (_, v) in zip(keys, point)}
        runs.append(PlannedRun(run_name(values), values, tuple(f"{k}={raw}" for k, (raw, _) in zip(keys, point))))
    names = [r.name for r in runs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise SweepError(f"--grid: two points are both named {dup} (their values read the same); drop one")
    swept = varying | {k for k, _ in parsed}
    try:
        slots = device_slots(devices, parallel, base.threads)
    except SlotError as exc:
        raise SweepError(str(exc)) from None
    return SweepPlan(config=Path(config) if config is not None else None, overrides=tuple(overrides),
                     grid=tuple((k, tuple(v for _, v in values)) for k, values in parsed),
                     runs=tuple(runs), base_config={k: v for k, v in base_dict.items()
                                                     if k not in FREE_KEYS and k not in swept},
                     out_dir=Path(out_dir), slots=slots.devices, threads=slots.threads, target_l0=target_l0)


def _read_as(cfg: Any, key: str, value: Any, known: set[str]) -> Any:
    """``key``'s value as the trainer reads it (another tool's name for one of our keys, e.g. lr, too)."""
    from trainer.config import _alias

    target, unit = (key, "same") if key in known else _alias(key, sorted(known))
    return getattr(cfg, target) if target is not None and unit == "same" else value


def _read_config(config: str | Path) -> dict[str, Any]:
    from trainer.config import _read_yaml

    return _read_yaml(Path(config))
