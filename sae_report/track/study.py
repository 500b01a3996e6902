"""The SAE-Track analysis of a series: speed-up, matching, drift, births and deaths -> ``track.json``.

Numpy only. Each SAE is read from its run directory's last checkpoint; per-checkpoint L0, dead
fraction and explained variance are measured on the same sample of that checkpoint's activations
(when the activation files are at hand) so every SAE is judged on equal terms.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runlog import RunLogError, atomic_write_text, read_run, to_jsonable
from .activations import load_sample
from .drift import Drift, Lifecycle, compute_drift, lifecycle
from .matching import match_by_assignment, match_by_index
from ..runlog.track_manifest import SeriesEntry, SeriesManifest
from .speedup import SpeedUp, measure_speedup
from .weights import SAEWeights, load_weights

TRACK_SCHEMA = 1
TRACK_JSON = "track.json"


@dataclass(frozen=True)
class CheckpointSummary:
    """One SAE of the series, measured on its checkpoint's activations."""

    index: int
    """Checkpoint position."""
    label: str
    """Checkpoint name."""
    run_dir: str
    """Its run directory."""
    init: str
    """``scratch`` or ``recurrent``."""
    tokens: int | None
    """Training tokens the SAE saw (from its log)."""
    final_loss: float | None
    """Last logged training loss."""
    start_loss: float | None
    """First logged training loss: for a recurrent SAE, how well the previous SAE fits the new
    checkpoint's activations (activation continuity)."""
    l0: float | None
    """Mean active features per token (sample; else the log's last value)."""
    l0_frac: float | None
    """``l0 / d_sae``."""
    dead_frac: float | None
    """Fraction of features that never fire on the sample (else the log's last value)."""
    explained_variance: float | None
    """1 - SSE / total variance on the sample (else the log's last value)."""
    alive: int
    """Features alive (firing on the sample, or per the log's feature frequencies)."""
    measured_on: str
    """``sample of N tokens`` or ``training log``."""


@dataclass(frozen=True)
class PairMatch:
    """Feature matching between two SAEs."""

    a: int
    """Index of the earlier SAE (or the control's checkpoint)."""
    b: int
    """Index of the later SAE."""
    kind: str
    """``consecutive`` (series k-1 -> k) or ``fresh_vs_recurrent`` (a control against the series)."""
    by_index: float | None
    """Fraction matched by index at the threshold (None when d_sae differ)."""
    by_index_median: float | None
    """Median decoder cosine by index."""
    by_assignment: float
    """Fraction matched by optimal assignment at the threshold."""
    by_assignment_median: float
    """Median decoder cosine of the optimal assignment."""
    identity_kept: float | None
    """Fraction of features whose optimal partner is the same index (recurrent identities)."""


@dataclass(frozen=True)
class TrackAnalysis:
    """Everything ``track.json`` and the report section hold."""

    checkpoints: list[CheckpointSummary]
    """Per SAE of the series."""
    matches: list[PairMatch]
    """Consecutive and fresh-vs-recurrent matchings."""
    speedups: list[SpeedUp]
    """Recurrent vs fresh tokens to the same level, per control and metric."""
    drift: Drift
    """Decoder drift and its phases."""
    lifecycle: Lifecycle
    """Births and deaths by index."""
    threshold: float
    """Decoder cosine counted as a match."""
    fraction: float
    """Budget fraction of the recurrent SAEs."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where the activations came from."""
    tolerance: float = 0.01
    """Speed-up target: the fresh SAE's final loss x (1 + tolerance); explained variance minus it."""
    headline: list[str] = field(default_factory=list)
    """Key results as sentences."""
    notes: list[str] = field(default_factory=list)
    """Caveats."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``track.json``)."""
        d = asdict(self)
        d["speedups"] = [{**asdict(s), "ratio": s.ratio, "ratio_upper_bound": s.ratio_upper_bound} for s in self.speedups]
        return {"schema_version": TRACK_SCHEMA, **to_jsonable(d)}


def analyze_series(manifest: SeriesManifest, *, n_eval: int = 65536, seed: int = 0, tolerance: float = 0.01) -> TrackAnalysis:
    """Run the whole analysis on a series manifest."""
    if len(manifest.checkpoints) < 2:
        raise RunLogError("a track series needs at least two checkpoints")
    notes: list[str] = []
    weights = [load_weights(e.run_dir) for e in manifest.checkpoints]
    samples = {e.index: _sample(e, n_eval, seed, notes) for e in manifest.checkpoints}
    summaries, alive = [], []
    for e, w in zip(manifest.checkpoints, weights):
        s, mask = _summarise(e, w, samples.get(e.index))
        summaries.append(s)
        if mask is None:
            notes.append(f"checkpoint {e.index}: no activations and no stats/feature_freq.npy: births and deaths "
                         "cannot be told apart there (all features counted alive)")
            mask = np.ones(w.d_sae, dtype=bool)
        alive.append(mask)
    th = manifest.threshold
    matches = []
    for k in range(1, len(weights)):
        matches.append(_pair(weights[k - 1], weights[k], k - 1, k, "consecutive", th))
    speedups: list[SpeedUp] = []
    by_index = {e.index: (e, w) for e, w in zip(manifest.checkpoints, weights)}
    for c in manifest.controls:
        if c.index not in by_index:
            notes.append(f"control {c.run_dir.name}: no series SAE at checkpoint {c.index}")
            continue
        entry, w_rec = by_index[c.index]
        matches.append(_pair(load_weights(c.run_dir), w_rec, c.index, c.index, "fresh_vs_recurrent", th))
        probe = next((p for p in manifest.probes if p.index == c.index), None)
        fresh, rec = read_run(c.run_dir), read_run((probe or entry).run_dir)
        for metric in ("loss", "explained_variance"):
            sp = measure_speedup(fresh, rec, c.index, metric=metric, tolerance=tolerance,
                                 recurrent_run="probe" if probe else "series")
            if sp is not None:
                speedups.append(sp)
    drift = compute_drift([w.W_dec for w in weights], alive=alive, stable_threshold=th)
    analysis = TrackAnalysis(checkpoints=summaries, matches=matches, speedups=speedups, drift=drift,
                             lifecycle=lifecycle(alive), threshold=th, fraction=manifest.fraction,
                             source=manifest.source, tolerance=tolerance, notes=notes)
    return TrackAnalysis(**{**analysis.__dict__, "headline": headline(analysis)})


def _sample(e: SeriesEntry, n: int, seed: int, notes: list[str]) -> np.ndarray | None:
    if e.acts is None:
        return None
    try:
        return load_sample(e.acts, n, seed)
    except RunLogError as exc:
        notes.append(f"checkpoint {e.index}: activations not read ({exc}); figures from the training log")
        return None


def _summarise(e: SeriesEntry, w: SAEWeights, x: np.ndarray | None) -> tuple[CheckpointSummary, np.ndarray | None]:
    data = read_run(e.run_dir)
    m = data.metrics

    def last(col: str) -> float | None:
        if col not in m.columns:
            return None
        vals = m[col].drop_nulls().to_numpy()
        vals = vals[np.isfinite(vals)]
        return float(vals[-1]) if vals.size else None

    tokens = last("tokens")
    first_loss = None
    if "loss" in m.columns:
        vals = m["loss"].drop_nulls().to_numpy()
        vals = vals[np.isfinite(vals)]
        first_loss = float(vals[0]) if vals.size else None
    if x is not None:
        x = x * np.float32(w.input_scale)  # the SAE saw inputs scaled by this factor
        mask = np.zeros(w.d_sae, dtype=bool)
        active, sse = 0, 0.0
        for i in range(0, x.shape[0], 4096):  # chunks keep the [n, d_sae] codes small
            chunk = x[i:i + 4096]
            f = w.encode(chunk)
            fired = f > 0
            mask |= fired.any(axis=0)
            active += int(fired.sum())
            sse += float(np.sum((chunk - w.decode(f)) ** 2, dtype=np.float64))
        var = float(np.sum((x - x.mean(axis=0)) ** 2, dtype=np.float64))
        l0 = active / x.shape[0]
        err2 = sse
        return CheckpointSummary(e.index, e.label, str(e.run_dir), e.init, None if tokens is None else int(tokens),
                                 last("loss"), first_loss, l0, l0 / w.d_sae, float(1 - mask.mean()),
                                 1 - err2 / var if var > 0 else None, int(mask.sum()),
                                 f"sample of {x.shape[0]:,} tokens"), mask
    if data.feature_freq is not None and data.feature_freq.shape == (w.d_sae,):
        mask = data.feature_freq > 0
    else:  # no per-feature record: liveness unknown, every feature counted alive (noted by the caller)
        mask = None
    l0 = last("l0")
    return CheckpointSummary(e.index, e.label, str(e.run_dir), e.init, None if tokens is None else int(tokens),
                             last("loss"), first_loss, l0, last("l0_frac") if last("l0_frac") is not None else (l0 / w.d_sae if l0 is not None else None),
                             last("dead_frac"), last("explained_variance"),
                             int(mask.sum()) if mask is not None else w.d_sae, "training log"), mask


def _pair(a: SAEWeights, b: SAEWeights, ia: int, ib: int, kind: str, th: float) -> PairMatch:
    asg = match_by_assignment(a.W_dec, b.W_dec, th)
    if a.W_dec.shape == b.W_dec.shape:
        idx = match_by_index(a.W_dec, b.W_dec, th)
        return PairMatch(ia, ib, kind, idx.matched_fraction, idx.median_cosine, asg.matched_fraction, asg.median_cosine,
                         float(np.mean(asg.partner == np.arange(a.d_sae))))
    return PairMatch(ia, ib, kind, None, None, asg.matched_fraction, asg.median_cosine, None)


def headline(t: TrackAnalysis) -> list[str]:
    """The key results, one sentence each, figures included."""
    out = []
    labels = {c.index: c.label for c in t.checkpoints}
    for s in t.speedups:
        what = "loss" if s.metric == "loss" else "explained variance"
        at = labels.get(s.checkpoint, f"checkpoint {s.checkpoint}")
        budget = round(t.fraction * s.fresh_budget)
        within = ("" if s.recurrent_tokens is None else
                  " (within the series' budget)" if s.recurrent_tokens <= budget else
                  f" (more than the series' {budget:,}-token budget: measured on the continued probe run)")
        if s.ratio is not None:
            out.append(f"At {at}: the recurrently initialised SAE reached the fresh SAE's final {what} "
                       f"({s.target:.4g}) after {s.recurrent_tokens:,} tokens{within}, the fresh SAE after {s.fresh_tokens:,}: "
                       f"{s.ratio:.3f} of the tokens ({1 / s.ratio:.0f}x fewer)." if s.ratio > 0 else
                       f"At {at}: the recurrently initialised SAE was already at the fresh SAE's final "
                       f"{what} ({s.target:.4g}) at its first logged point; the fresh SAE needed {s.fresh_tokens:,} tokens.")
        elif s.fresh_tokens is None:
            out.append(f"At {at}: the fresh SAE's smoothed {what} never reached its own final level: no speed-up measured.")
        else:
            out.append(f"At {at}: the recurrent SAE did not reach the fresh SAE's final {what} ({s.target:.4g}) within "
                       f"its {s.recurrent_budget:,} tokens (it ended at {s.recurrent_final:.4g}).")
    cons = [m for m in t.matches if m.kind == "consecutive"]
    if cons and cons[0].by_index is not None:
        fr = [m.by_index for m in cons]
        out.append(f"Consecutive SAEs keep feature identities: {min(fr):.0%} to {max(fr):.0%} of features match by index "
                   f"at decoder cosine >= {t.threshold:g}.")
    for m in t.matches:
        if m.kind == "fresh_vs_recurrent":
            out.append(f"At {labels.get(m.a, m.a)}: an independently trained SAE shares {m.by_assignment:.0%} of its features with the "
                       f"series' SAE (optimal assignment, cosine >= {t.threshold:g}).")
    if t.drift.phases:
        labels = [c.label for c in t.checkpoints]
        out.append("Decoder drift phases: " + "; ".join(f"{p.name} {labels[p.start]} to {labels[p.end]}" for p in t.drift.phases) + ".")
    lc = t.lifecycle
    out.append(f"Features alive went from {lc.alive[0]:,} to {lc.alive[-1]:,}; {sum(lc.births):,} births and "
               f"{sum(lc.deaths):,} deaths along the series.")
    return out


def write_track_json(path: Path, analysis: TrackAnalysis) -> Path:
    """Write ``track.json`` atomically."""
    atomic_write_text(Path(path), json.dumps(analysis.to_dict(), indent=2, allow_nan=False) + "\n")
    return Path(path)
