"""Synthetic SAE-Track series with known ground truth (for tests and demos; numpy only).

``write_series(root)`` writes real run directories (``RunLogWriter`` + ``sae.safetensors``) and a
``track/series.json``: decoders that drift towards their final directions with a chosen angle per
checkpoint (so the drift phases are known), features dead or alive at chosen checkpoints (so the
births and deaths are known), and exponential loss curves (so the tokens to a target are known).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runlog import CHECKPOINTS_DIR, STATS_DIR, RunLogWriter
from ..runlog.track_manifest import MANIFEST_FILE, TRACK_DIR, SeriesEntry, SeriesManifest, write_manifest

#: Angle (radians) between each checkpoint's decoder rows and their final direction: steps of
#: 0.3 (initial drift, checkpoints 0-2), then 0.08 (semantic stabilisation, 2-6), then 0.005
#: (final stabilisation, 6-9).
DEFAULT_ANGLES = (0.935, 0.635, 0.335, 0.255, 0.175, 0.095, 0.015, 0.01, 0.005, 0.0)
#: Ground truth of DEFAULT_ANGLES: phase boundaries at these checkpoints.
DEFAULT_BOUNDARIES = (2, 6)


@dataclass(frozen=True)
class LossCurve:
    """``loss(t) = floor + amplitude * exp(-t / tau)`` over ``tokens`` tokens, logged ``points`` times."""

    floor: float
    amplitude: float
    tau: float
    tokens: int
    points: int = 200

    def tokens_to(self, level: float) -> float:
        """Exact tokens at which the noiseless curve reaches ``level`` (inf if never)."""
        if level <= self.floor:
            return float("inf")
        if level >= self.floor + self.amplitude:
            return 0.0
        return -self.tau * float(np.log((level - self.floor) / self.amplitude))


@dataclass(frozen=True)
class SyntheticSeries:
    """What ``write_series`` wrote, with the truth to check an analysis against."""

    out: Path
    """The output folder (holds ``track/series.json``)."""
    manifest: SeriesManifest
    """The manifest written."""
    alive: np.ndarray
    """``[n_ckpt, d_sae]`` bool: the alive masks written as feature frequencies."""
    boundaries: tuple[int, ...]
    """True phase boundaries (checkpoint indices)."""
    fresh_curve: LossCurve
    """The control's loss curve."""
    recurrent_curve: LossCurve
    """The recurrent run's loss curve at the control checkpoint."""


def write_series(root: Path, *, d_in: int = 16, d_sae: int = 32, angles: tuple[float, ...] = DEFAULT_ANGLES,
                 seed: int = 0, budget: int = 100_000, fraction: float = 0.05, control_at: int | None = None,
                 shuffle_control: bool = True) -> SyntheticSeries:
    """Write a series of ``len(angles)`` SAEs plus one fresh control at ``control_at`` (default last)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    root = Path(root)
    final = _unit(rng.normal(size=(d_sae, d_in)))
    perp = rng.normal(size=(d_sae, d_in))
    perp = _unit(perp - np.sum(perp * final, axis=1, keepdims=True) * final)
    n = len(angles)
    alive = np.ones((n, d_sae), dtype=bool)
    alive[: n // 2, : d_sae // 8] = False           # born at n // 2
    alive[n // 2 + 1:, d_sae // 8: d_sae // 4] = False  # die at n // 2 + 1
    control_at = n - 1 if control_at is None else control_at
    fresh = LossCurve(floor=1.0, amplitude=4.0, tau=budget / 8, tokens=budget)
    recurrent = LossCurve(floor=0.995, amplitude=0.3, tau=budget * fraction / 8, tokens=int(budget * fraction))
    entries = []
    for k, theta in enumerate(angles):
        dec = np.cos(theta) * final + np.sin(theta) * perp
        init = "scratch" if k == 0 else "recurrent"
        curve = fresh if k == 0 else recurrent
        run = root / f"sae_{k:02d}"
        _write_run(run, dec, alive[k], curve, save_file)
        entries.append(SeriesEntry(index=k, label=f"step {100 * (k + 1)}", run_dir=run, init=init,
                                   budget_tokens=curve.tokens))
    ctrl_dec = np.cos(angles[control_at]) * final + np.sin(angles[control_at]) * perp
    ctrl_dec = _unit(ctrl_dec + 0.05 * rng.normal(size=ctrl_dec.shape))
    if shuffle_control:
        ctrl_dec = ctrl_dec[rng.permutation(d_sae)]  # independent training: same features, other order
    ctrl = root / f"fresh_{control_at:02d}"
    _write_run(ctrl, ctrl_dec, np.ones(d_sae, dtype=bool), fresh, save_file)
    manifest = SeriesManifest(checkpoints=entries,
                              controls=[SeriesEntry(index=control_at, label=entries[control_at].label, run_dir=ctrl,
                                                    init="scratch", budget_tokens=budget)],
                              fraction=fraction, threshold=0.9, source={"kind": "synthetic", "seed": seed})
    write_manifest(root / TRACK_DIR / MANIFEST_FILE, manifest)
    return SyntheticSeries(root, manifest, alive, DEFAULT_BOUNDARIES if angles == DEFAULT_ANGLES else (), fresh, recurrent)


def _unit(w: np.ndarray) -> np.ndarray:
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def _write_run(run: Path, dec: np.ndarray, alive: np.ndarray, curve: LossCurve, save_file) -> None:
    tokens = np.linspace(curve.tokens / curve.points, curve.tokens, curve.points)
    loss = curve.floor + curve.amplitude * np.exp(-tokens / curve.tau)
    with RunLogWriter(run) as w:
        w.write_config({"run_id": run.name, "batch_size": int(tokens[0]), "d_sae": dec.shape[0]})
        w.log_metrics({"step": np.arange(1, curve.points + 1), "tokens": tokens, "loss": loss,
                       "l0": np.full(curve.points, 3.0), "dead_frac": np.full(curve.points, 1 - alive.mean())})
    ckpt = run / CHECKPOINTS_DIR / "final"
    ckpt.mkdir(parents=True)
    save_file({"W_enc": np.ascontiguousarray(dec.T.astype(np.float32)), "b_enc": np.zeros(dec.shape[0], np.float32),
               "W_dec": dec.astype(np.float32), "b_dec": np.zeros(dec.shape[1], np.float32)}, str(ckpt / "sae.safetensors"))
    (run / STATS_DIR).mkdir(exist_ok=True)
    np.save(run / STATS_DIR / "feature_freq.npy", np.where(alive, 0.01, 0.0))
