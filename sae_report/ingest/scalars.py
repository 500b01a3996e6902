"""Scalar points read from another logger (W&B, TensorBoard, MLflow) -> one ``RunData``.

Each reader collects long-format points ``(key, step, value)`` in a ``ScalarLog``; ``to_wide``
joins them on step (one row per step, one column per key; a key not logged at a step is null,
never forward-filled, so metrics logged every 10, 1000 and 2000 steps keep their own cadence) and
``build_run`` maps the names onto our columns with ``aliases.canonicalize`` and writes the notes
the report shows: where the data came from, how many rows, whether it is a sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import polars as pl

from ..runlog import RunData, RunLogError
from ..runlog.aliases import MAP_HINT, canonical_config, canonicalize, match_column

T = TypeVar("T")


@dataclass
class ScalarLog:
    """Long-format scalar points gathered by a reader, in the order they were written."""

    keys: list[str] = field(default_factory=list)
    """Metric name of each point, as the logger spelled it."""
    steps: list[int] = field(default_factory=list)
    """Training step of each point."""
    values: list[float] = field(default_factory=list)
    """Value of each point (``nan``/``inf`` kept: they are signals)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Non-scalar keys (histograms, images, tables, text) -> how many points were not read."""

    def add(self, key: str, step: int, value: float) -> None:
        """Append one point."""
        self.keys.append(key)
        self.steps.append(step)
        self.values.append(value)

    def skip(self, key: str) -> None:
        """Count a point that is not a number."""
        self.skipped[key] = self.skipped.get(key, 0) + 1

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class Wide:
    """Points joined on step."""

    frame: pl.DataFrame
    """``step`` (Int64) then one Float64 column per key, sorted by step, one row per step."""
    notes: list[str]
    """Repeated points, dropped step-named keys, cadences."""


def to_wide(log: ScalarLog) -> Wide:
    """Join the points on step: the later write of a (step, key) wins; missing cells stay null."""
    notes: list[str] = []
    step_keys = sorted({k for k in set(log.keys) if k == "step" or (match_column(k) or ("",))[0] == "step"})
    frame = pl.DataFrame(
        {"key": log.keys, "step": log.steps, "value": log.values},
        schema={"key": pl.String, "step": pl.Int64, "value": pl.Float64},
    )
    if step_keys:
        # A metric named like a step column (global_step, ...) is the step itself: the index wins.
        frame = frame.filter(~pl.col("key").is_in(step_keys))
        notes.append(f"key(s) {', '.join(step_keys)} read as the step itself, not as a metric")
    n = frame.height
    frame = frame.group_by(["step", "key"], maintain_order=True).agg(pl.col("value").last())
    if frame.height < n:
        notes.append(f"{n - frame.height} repeated (step, metric) point(s): the later write kept")
    if frame.height == 0:
        return Wide(frame=pl.DataFrame(schema={"step": pl.Int64}), notes=notes)
    wide = frame.pivot(on="key", index="step", values="value", maintain_order=True).sort("step")
    notes.extend(cadence_notes(wide))
    return Wide(frame=wide, notes=notes)


def cadence_notes(wide: pl.DataFrame) -> list[str]:
    """A note when the columns of a wide frame (``step`` + metrics) were logged at different
    cadences (median step gap between a column's non-null rows)."""
    if "step" not in wide.columns:
        return []
    steps = wide.get_column("step").cast(pl.Float64, strict=False)
    gaps: set[float] = set()
    for col in wide.columns:
        if col == "step":
            continue
        at = steps.filter(wide.get_column(col).is_not_null()).drop_nulls().sort()
        gap = at.diff().drop_nulls().median()
        if gap is not None and math.isfinite(gap) and gap > 0:
            gaps.add(float(gap))
    if len(gaps) <= 1:
        return []
    shown = ", ".join(f"every {g:g}" for g in sorted(gaps)[:6])
    return [f"metrics logged at different cadences ({shown} steps), joined on step; "
            "a metric is null on the steps it was not logged at (never forward-filled)"]


def build_run(
    path: Path,
    wide: Wide,
    raw_config: Mapping[str, Any],
    *,
    source: str,
    run_id: str,
    origin: str,
    sampled: bool = False,
    notes: Sequence[str] = (),
    skipped: Mapping[str, int] | None = None,
) -> RunData:
    """Map ``wide`` onto canonical columns and assemble the ``RunData``.

    ``origin`` says in words what was read (``W&B offline run q3m5we07``); the first note becomes
    ``source: <origin>; N rows, steps A-B; sampled|full history``. Raises ``RunLogError`` naming
    ``path`` when no step or no known metric is found (unknown keys only).
    """
    if wide.frame.height == 0:
        raise RunLogError(f"{path}: no scalar metrics found ({origin})")
    system = ("step", "_runtime")
    logged = [c for c in wide.frame.columns if c not in system]
    if not any(match_column(c) for c in logged):
        shown = ", ".join(logged[:6]) + (", ..." if len(logged) > 6 else "")
        raise RunLogError(f"{path}: no known metric (found: {shown or 'only step and time columns'}); {MAP_HINT}")
    try:
        can = canonicalize(wide.frame, dict(raw_config))
    except RunLogError as exc:
        raise RunLogError(f"{path}: {exc}") from None
    count_notes: list[str] = []
    config = canonical_config(dict(raw_config), count_notes)
    if can.d_sae and not config.get("d_sae"):
        config["d_sae"] = can.d_sae
    frame = can.frame
    steps = frame.get_column("step")
    kind = ("SAMPLED: a bucketed or down-sampled export, not every logged step; spikes between "
            "samples can be missing" if sampled else "full history, not sampled")
    used = sum(1 for col in can.mapping if col not in system)
    head = (f"source: {origin}; {frame.height} rows, steps {steps.min()}-{steps.max()}, "
            f"{used} of {len(logged)} logged metric(s) used; {kind}")
    all_notes = [head, *notes, *wide.notes, *can.notes, *count_notes]
    if skipped:
        shown = ", ".join(sorted(skipped)[:6]) + (f" and {len(skipped) - 6} more" if len(skipped) > 6 else "")
        all_notes.append(f"non-scalar values not read (histograms, media, tables, text): {shown}")
    return RunData(path=Path(path), run_id=run_id, config=config, metrics=frame, source=source,
                   sampled=sampled, notes=all_notes)


def pick_run(path: Path, runs: Mapping[str, T], run: str | None, *, what: str = "run") -> tuple[str, T]:
    """The run ``run`` names (an exact id, or a unique prefix / suffix), or the only one.

    Several runs and no ``run`` -> ``RunLogError`` listing their ids, so the user can add ``--run``.
    """
    ids = list(runs)
    if not ids:
        raise RunLogError(f"{path}: no {what} found")
    if run is None:
        if len(ids) == 1:
            return ids[0], runs[ids[0]]
        raise RunLogError(f"{path}: holds {len(ids)} {what}s; pick one with --run ({_listing(ids)})")
    if run in runs:
        return run, runs[run]
    hits = [i for i in ids if i.startswith(run) or i.endswith(run)]
    if len(hits) == 1:
        return hits[0], runs[hits[0]]
    if hits:
        raise RunLogError(f"{path}: --run {run} matches {len(hits)} {what}s ({_listing(hits)})")
    raise RunLogError(f"{path}: no {what} {run!r} here ({_listing(ids)})")


def _listing(ids: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")
