"""Interventions: what was done to the run (resamples, learning-rate and l1_alpha changes, resumes),
from the events file, or inferred from the logged columns when no event says so.

Logs from other tools (SAELens via W&B, TensorBoard, MLflow, CSV) have no events, only columns; but
they log the learning rate and often the sparsity coefficient, so a schedule's milestones can be
read off them: a step change, the end of a warm-up, the start of a decay. Resamples are inferred
from sudden drops of the dead-feature fraction when the config says resampling was on. Every
inferred intervention carries ``inferred=True`` and the column it was read from, and the sentence
that names it says so and shows the two logged values on either side of the change (as claims).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import polars as pl

from ..runlog import INTERVENTION_KINDS, Event
from .claims import Claim, ClaimMaker, event_claim
from .result import Intervention
from .metric_series import Series, logged

#: A jump between two constant stretches smaller than this (relative) is not a change worth naming.
MIN_JUMP = 0.01
#: More inferred milestones than this in one column means it is not a schedule: none are kept.
MAX_INFERRED = 50
#: Longer schedule columns are read on an evenly strided sample first (milestones then dated exactly).
MAX_SCHEDULE_ROWS = 100_000
#: Shortest constant stretch (logged rows) that makes the change after it a milestone.
MIN_CONSTANT_ROWS = 3

#: Schedule columns and the intervention kind a change in each is (``l1_change``: a change of the
#: sparsity coefficient, ``l1_alpha`` or a JumpReLU SAE's ``l0_coefficient``).
COLUMN_KIND = {"lr": "lr_change", "l1_alpha": "l1_change", "l0_coefficient": "l1_change"}


def logged_interventions(events: list[Event]) -> list[Intervention]:
    """The interventions the events file records."""
    return [Intervention(kind=e.kind, step=int(e.step)) for e in events if e.kind in INTERVENTION_KINDS]  # type: ignore[arg-type]


def schedule_milestones(step: np.ndarray, value: np.ndarray, column: str) -> list[Intervention]:
    """Milestones of a schedule column: step changes, the start and end of a ramp (``warm-up done``,
    ``decay starts``, ``decay done`` ...), and a ramp that turns (a warm-up straight into a decay).
    Each is dated at the first step logged with the new value (a ramp's end: the first step of the
    constant stretch after it)."""
    ok = np.isfinite(value)
    if not ok.all():
        step, value = step[ok], value[ok]
    if len(value) < 3:
        return []
    if len(value) > MAX_SCHEDULE_ROWS:
        # Find the milestones on an evenly strided sample, then date each on the full column.
        stride = -(-len(value) // MAX_SCHEDULE_ROWS)
        coarse = _milestones(step[::stride], value[::stride], column)
        return [_refine(iv, step, value, stride) for iv in coarse]
    return _milestones(step, value, column)


def _refine(iv: Intervention, step: np.ndarray, value: np.ndarray, stride: int) -> Intervention:
    """Date a milestone found on a strided sample at the first full-resolution row with the new value
    (for an end: the first row of the stretch the ramp ends in)."""
    j = int(np.searchsorted(step, iv.step))  # a sampled row: the change lies in (j - stride, j]
    lo = max(0, j - stride)
    seg = value[lo:j + 1]
    if "done" in iv.reason and "starts" not in iv.reason:
        k = int(np.argmax(seg == seg[-1]))  # the first row already at the value it settles at
    else:
        k = int(np.argmax(seg != seg[0]))  # the first row that moved away
    return Intervention(iv.kind, int(step[lo + k]), iv.inferred, iv.source, iv.reason)


def _milestones(step: np.ndarray, value: np.ndarray, column: str) -> list[Intervention]:
    kind = COLUMN_KIND[column]
    # A schedule is deterministic: a stretch is constant when its logged values are exactly equal
    # (a cosine decay moves by less than any tolerance from one row to the next).
    code = np.sign(np.diff(value)).astype(np.int8)
    # Stretches: runs of equal direction over the gaps between consecutive rows ([start, end) gaps;
    # a stretch of gaps [a, b) spans rows a..b).
    edges = np.flatnonzero(np.diff(code)) + 1
    starts = np.concatenate([[0], edges]).tolist()
    ends = np.concatenate([edges, [len(code)]]).tolist()
    if len(starts) > 4 * MAX_INFERRED:
        return []
    dirs = [int(code[a]) for a in starts]
    out: list[Intervention] = []

    def add(row: int, reason: str) -> None:
        out.append(Intervention(kind, int(step[row]), True, column, reason))  # type: ignore[arg-type]

    def constant(k: int) -> bool:
        return 0 <= k < len(starts) and dirs[k] == 0 and ends[k] - starts[k] >= MIN_CONSTANT_ROWS - 1

    for k, (a, b) in enumerate(zip(starts, ends)):
        d = dirs[k]
        if d == 0:
            continue
        if b - a == 1 and (constant(k - 1) or constant(k + 1) or a == 0):  # one change: a step change
            rel = abs(value[b] - value[a]) / max(abs(value[a]), abs(value[b]), 1e-300)
            if rel >= MIN_JUMP:
                add(b, "step change")
            continue
        if constant(k - 1):
            add(a + 1, "ramp starts" if d > 0 else "decay starts")
        if constant(k + 1):
            add(b, "warm-up done" if d > 0 and a == 0 else "ramp done" if d > 0 else "decay done")
            continue
        nxt = k + 2 if k + 2 < len(starts) and dirs[k + 1] == 0 else k + 1  # skip a short flat top
        if nxt < len(starts) and dirs[nxt] == -d and ends[nxt] - starts[nxt] >= MIN_CONSTANT_ROWS - 1:
            add(starts[nxt] + 1, "warm-up done, decay starts" if d > 0 else "decay done, ramp starts")
    return out if len(out) <= MAX_INFERRED else []


def inferred_resamples(dead: Series, min_drop: float) -> list[Intervention]:
    """Sudden drops of the dead fraction between two consecutive logged rows (at least
    ``min_drop`` of the dictionary), one per cluster: where resampling revived features."""
    v, st = dead.value, dead.step
    if len(v) < 3:
        return []
    drop = v[:-1] - v[1:]
    noise = float(np.median(np.abs(np.diff(v)))) * 1.4826 if len(v) > 2 else 0.0
    hits = np.flatnonzero(drop >= max(min_drop, 6 * noise))
    out: list[Intervention] = []
    for i in hits.tolist():
        s = int(st[i + 1])
        if out and s - out[-1].step <= max(3 * int(st[min(i + 1, len(st) - 1)] - st[i]), 1):
            continue
        out.append(Intervention("resample", s, True, dead.metric, "sudden drop of the dead fraction"))
    return out if len(out) <= MAX_INFERRED else []


def all_interventions(frame: pl.DataFrame, events: list[Event], config: Mapping[str, Any],
                      dead: Series | None, min_drop: float) -> list[Intervention]:
    """Logged interventions, plus those inferred from the columns for every kind no event records."""
    out = logged_interventions(events)
    kinds = {i.kind for i in out}
    for column, kind in COLUMN_KIND.items():
        if kind not in kinds and column in frame.columns:
            step, value = logged(frame, column)
            out.extend(schedule_milestones(step, value, column))
    interval = config.get("resample_interval")
    on = isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval > 0
    if "resample" not in kinds and on and dead is not None and dead.metric == "dead_frac":
        out.extend(inferred_resamples(dead, min_drop))
    return sorted(out, key=lambda i: (i.step, i.kind))


WORDS = {"resample": "the resample", "lr_change": "the learning-rate change", "l1_change": "the l1_alpha change",
         "resume": "the resume"}


def describe(iv: Intervention, column: ClaimMaker | None, coefficient: str | None = "l1_alpha") -> tuple[str, dict[str, Claim]]:
    """A sentence fragment naming ``iv`` with its claims: the event's step, or for an inferred one
    the logged values on either side of the change and the column they come from. ``coefficient``
    names the sparsity coefficient an ``l1_change`` changed (``l0_coefficient`` for JumpReLU)."""
    what = WORDS.get(iv.kind, iv.kind)
    if iv.kind == "l1_change":
        name = iv.source if iv.inferred and iv.source in ("l1_alpha", "l0_coefficient") else (coefficient or "l1_alpha")
        what = f"the {name} change"
    if not iv.inferred:
        return f"{what} at step {{iv}}", {"iv": event_claim(iv.kind, iv.step)}
    reason = f" ({iv.reason})" if iv.reason and iv.reason != "step change" else ""
    if column is None:
        return f"{what}{reason}", {}
    after = column.at(iv.step)
    i = int(np.searchsorted(column.step, np.int64(iv.step)))
    if i == 0 or after.value is None:
        return f"{what}{reason}", {}
    before = column.at(int(column.step[i - 1]))
    src = "the dead fraction" if iv.source.startswith("dead") else f"the {iv.source} column"
    claims = {"iv_before": before, "iv": after}
    return (f"{what}{reason} at step {{iv.step}}, inferred from {src} ({{iv_before}} at step {{iv_before.step}}, "
            f"{{iv}} at step {{iv.step}})", claims)
