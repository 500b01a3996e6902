"""Decoder drift along a series of SAEs whose features keep their identities (recurrent init).

Per feature, the cosine of its decoder direction at each checkpoint to its direction at the last
checkpoint; per checkpoint, the distribution of those cosines over features (median and a
quantile band). The drift phases of SAE-Track (initial drift, semantic stabilisation, final
stabilisation) are cut with :func:`segment_levels`, a small robust change detector: the per-step
drift (one minus the median cosine between consecutive checkpoints) is split into at most three
piecewise-constant segments by least absolute deviation, the optimal cut found exhaustively.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .matching import unit_rows

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
PHASE_NAMES = ("initial drift", "semantic stabilisation", "final stabilisation")
EARLY_NAME = "early low drift"
PEAK_NAME = "main drift"


@dataclass(frozen=True)
class DriftStats:
    """Cosine-to-final statistics at one checkpoint."""

    index: int
    """Checkpoint position in the series (0-based)."""
    quantiles: dict[str, float]
    """``q10``, ``q25``, ``q50``, ``q75``, ``q90`` of the cosine to the final direction."""
    mean: float
    """Mean cosine to the final direction."""
    step_cosine: float | None
    """Median cosine to the previous checkpoint's direction (None at the first checkpoint)."""
    frac_above: float
    """Fraction of tracked features whose cosine to final is >= the stable threshold."""


@dataclass(frozen=True)
class DriftPhase:
    """One drift phase: a span of checkpoints."""

    name: str
    """``initial drift``, ``semantic stabilisation``, ``final stabilisation`` when the drift falls
    phase to phase (the paper's pattern); otherwise ``early low drift`` / ``main drift`` (the
    peak) / ``semantic stabilisation`` / ``final stabilisation`` by place relative to the peak."""
    start: int
    """First checkpoint index of the phase."""
    end: int
    """Last checkpoint index of the phase (shared with the next phase's start)."""
    drift_per_step: float
    """Median of (1 - median step cosine) over the phase's intervals."""


@dataclass(frozen=True)
class Drift:
    """Decoder drift along the series."""

    n_features: int
    """Features tracked (those alive at the last checkpoint when liveness is known)."""
    per_checkpoint: list[DriftStats]
    """Statistics per checkpoint, in order."""
    phases: list[DriftPhase] = field(default_factory=list)
    """Detected phases (empty when the series is too short or shows no change)."""
    phase_note: str = ""
    """Why phases are missing or how to read them."""
    stable_threshold: float = 0.9
    """Cosine to final counted as stable."""


def cosine_to_final(decoders: list[np.ndarray]) -> np.ndarray:
    """``[n_ckpt, d_sae]``: cosine of each feature's decoder row to its row at the last checkpoint."""
    final = unit_rows(decoders[-1])
    return np.stack([np.sum(unit_rows(d) * final, axis=1) for d in decoders])


def step_cosines(decoders: list[np.ndarray]) -> np.ndarray:
    """``[n_ckpt - 1, d_sae]``: cosine of each feature's row to its row at the previous checkpoint."""
    return np.stack([np.sum(unit_rows(a) * unit_rows(b), axis=1) for a, b in zip(decoders[:-1], decoders[1:])])


def segment_levels(values: np.ndarray, max_segments: int = 3, min_gain: float = 0.25) -> list[int]:
    """Robust change points of a short series: starts of up to ``max_segments`` constant segments.

    Minimises the summed absolute deviation from each segment's median, exhaustively over all cuts
    (the series are checkpoint counts: tens of points). A further segment is kept only when it
    removes at least ``min_gain`` of the remaining deviation, so a flat series gives ``[0]``.
    Returns segment start indices, beginning with 0.
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    cost = np.zeros((n + 1, n + 1))
    for i in range(n):
        for j in range(i + 1, n + 1):
            seg = x[i:j]
            cost[i, j] = np.abs(seg - np.median(seg)).sum()
    best = [0]
    best_cost = cost[0, n]
    for k in range(2, max_segments + 1):
        if n < k:
            break
        cand, cand_cost = None, np.inf
        for cuts in _cut_sets(n, k - 1):
            bounds = [0, *cuts, n]
            c = sum(cost[a, b] for a, b in zip(bounds[:-1], bounds[1:]))
            if c < cand_cost - 1e-15:
                cand, cand_cost = [0, *cuts], c
        if cand is None or best_cost <= 0 or (best_cost - cand_cost) < min_gain * best_cost:
            break
        best, best_cost = cand, cand_cost
    return best


def _cut_sets(n: int, k: int):
    if k == 1:
        for a in range(1, n):
            yield (a,)
    elif k == 2:
        for a in range(1, n - 1):
            for b in range(a + 1, n):
                yield (a, b)
    else:  # pragma: no cover - max_segments is 3
        raise ValueError("at most 3 segments")


def drift_phases(step_cos_median: np.ndarray) -> tuple[list[DriftPhase], str]:
    """Cut the series into drift phases from the median step cosine per interval."""
    rate = 1.0 - np.asarray(step_cos_median, dtype=np.float64)
    n_int = len(rate)
    if n_int < 4:
        return [], (f"too few checkpoints to cut drift phases ({n_int + 1}; need at least 5, and 7 for all three)")
    # Each phase should span about two intervals or more: two phases from 4 intervals, three from 6.
    starts = segment_levels(rate, max_segments=min(3, n_int // 2))
    if len(starts) == 1:
        return [], "the drift per checkpoint is flat: no phase boundary stands out"
    bounds = [*starts, n_int]
    levels = [float(np.median(rate[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
    note = ""
    if all(later < earlier for earlier, later in zip(levels[:-1], levels[1:])):
        names = list(PHASE_NAMES) if len(levels) == 3 else [PHASE_NAMES[0], PHASE_NAMES[2]]
    else:
        # Not the paper's falling pattern: name each phase by where it sits relative to the peak.
        peak = int(np.argmax(levels))
        names = [EARLY_NAME if i < peak else PEAK_NAME if i == peak else PHASE_NAMES[2] if i == len(levels) - 1
                 else PHASE_NAMES[1] for i in range(len(levels))]
        note = ("drift does not fall from phase to phase here (drift per checkpoint "
                + ", ".join(f"{v:.3g}" for v in levels) + "): the phases are named by their place relative to "
                "the peak rather than as the paper's initial drift, semantic and final stabilisation")
    phases = [DriftPhase(name=nm, start=a, end=b, drift_per_step=lv)
              for nm, a, b, lv in zip(names, bounds[:-1], bounds[1:], levels)]
    return phases, note


def compute_drift(decoders: list[np.ndarray], alive: list[np.ndarray] | None = None,
                  stable_threshold: float = 0.9) -> Drift:
    """Drift statistics and phases for decoders ``[d_sae, d_in]`` in checkpoint order.

    With ``alive`` (one mask per checkpoint) only live features count: those alive at the last
    checkpoint, and at each checkpoint those alive there (for the step cosine: alive at both
    ends of the interval). A dead feature's decoder gets no gradient, so it would look falsely
    stable; a feature born late would look like drift it never did while alive.
    """
    if len(decoders) < 2:
        raise ValueError("drift needs at least two checkpoints")
    n_feat = decoders[0].shape[0]
    masks = [np.ones(n_feat, dtype=bool)] * len(decoders) if alive is None else [np.asarray(m, bool) for m in alive]
    keep = masks[-1] if masks[-1].any() else np.ones(n_feat, dtype=bool)
    to_final = cosine_to_final(decoders)
    steps = step_cosines(decoders)

    def pick(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        chosen = values[keep & mask]
        return chosen if chosen.size else values[keep]

    step_median = np.array([np.median(pick(steps[k - 1], masks[k - 1] & masks[k])) for k in range(1, len(decoders))])
    stats = []
    for k in range(len(decoders)):
        vals = pick(to_final[k], masks[k])
        qs = np.quantile(vals, QUANTILES)
        stats.append(DriftStats(index=k, quantiles={f"q{int(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)},
                                mean=float(vals.mean()),
                                step_cosine=None if k == 0 else float(step_median[k - 1]),
                                frac_above=float(np.mean(vals >= stable_threshold))))
    phases, note = drift_phases(step_median)
    return Drift(n_features=int(keep.sum()), per_checkpoint=stats, phases=phases, phase_note=note,
                 stable_threshold=stable_threshold)


@dataclass(frozen=True)
class Lifecycle:
    """Feature births and deaths along the series (by feature index)."""

    alive: list[int]
    """Features alive at each checkpoint."""
    births: list[int]
    """Features alive at checkpoint k that were dead at k-1 (0 at the first checkpoint)."""
    deaths: list[int]
    """Features dead at checkpoint k that were alive at k-1 (0 at the first checkpoint)."""
    born_late: int
    """Features dead at the first checkpoint and alive at the last."""
    died_late: int
    """Features alive at the first checkpoint and dead at the last."""


def lifecycle(alive_masks: list[np.ndarray]) -> Lifecycle:
    """Births and deaths from per-checkpoint alive masks ``[d_sae]`` (same feature indices)."""
    masks = [np.asarray(m, dtype=bool) for m in alive_masks]
    births, deaths = [0], [0]
    for prev, cur in zip(masks[:-1], masks[1:]):
        births.append(int(np.sum(~prev & cur)))
        deaths.append(int(np.sum(prev & ~cur)))
    return Lifecycle(alive=[int(m.sum()) for m in masks], births=births, deaths=deaths,
                     born_late=int(np.sum(~masks[0] & masks[-1])), died_late=int(np.sum(masks[0] & ~masks[-1])))
