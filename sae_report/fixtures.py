"""Synthetic runs with known phases, written as real run directories (for tests and demos).

Each scenario is a set of curves defined over the fraction of the run ``t`` in [0, 1], so the same
scenario can be written at 1K steps or at 200M steps (``rows`` logged rows, ``log_every`` derived).
Noise is deterministic given ``seed``. Every scenario carries its ground truth: the phases with
their step spans, the finding kinds that MUST be reported (with the metric and the span they must
overlap) and the kinds that must NOT be reported.

    >>> run = write_run(tmp_path, "writeup", steps=100_000, seed=0)
    >>> analysis = analyze(read_run(run.run_dir))
    >>> assert run.truth.problems(analysis) == []

Scenarios (``SCENARIOS``): ``writeup`` (train_e01c6183 of the write-up: l1_alpha 0.065, resample
every 10%, collapse to 0.7% at 20% of the run with 93% dead, recovery, oscillation, a late spike to
4.66% at 90% after a resample, 2.18% final, 89% dead), its siblings ``sibling_low`` (0.005 ->
11.29%) and ``sibling_mid`` (0.05 -> 4.19%), ``dead_000`` (dead features: dormant to 6%, rise,
plateau 50-85%, secondary rise after 85%; 200M steps by default), ``l0_001`` (sparsification then
a slow log-linear decay, not converged; 200M steps), ``clean`` (reaches its target; no alarm),
``diverged`` (loss blows up to inf then NaN at 70%), ``thrash`` (resampled features die again
before the next resample), ``glitch`` (a clean run with lone bad points: no alarm) and
``late_shift`` (a new level late in the run that persists: not a spike).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .analysis.result import Analysis, FindingKind
from .runlog import RunLogWriter, atomic_write_text

K = FindingKind


@dataclass(frozen=True)
class Expect:
    """A finding the analyzer must report."""

    kind: FindingKind
    """Kind that must be present."""
    metric: str | None
    """Canonical metric it must be found in (None: any metric)."""
    lo: int
    """The finding's span ``[step, end_step or step]`` must overlap ``[lo, hi]``."""
    hi: int
    """Upper end of the window."""
    coincides_with: str | None = None
    """Intervention kind the finding must name in ``coincides_with`` (None: not checked)."""


@dataclass(frozen=True)
class TruthPhase:
    """A phase the run was built with."""

    name: str
    """Name as the write-up would say it."""
    start_step: int
    """First step."""
    end_step: int
    """Last step."""


@dataclass(frozen=True)
class Truth:
    """Ground truth of one generated run."""

    phases: tuple[TruthPhase, ...]
    """Phases the curves were built from."""
    must: tuple[Expect, ...]
    """Findings that must be reported."""
    must_not: frozenset[FindingKind]
    """Kinds that must not be reported (in any metric)."""
    no_alarm: bool = False
    """True when no finding of severity ``warn`` or ``fail`` may be reported (a clean run)."""

    def problems(self, analysis: Analysis) -> list[str]:
        """What the analysis got wrong against this truth (empty when it matches)."""
        out: list[str] = []
        for e in self.must:
            hits = [f for f in analysis.findings if f.kind == e.kind and (e.metric is None or f.metric == e.metric)
                    and f.step <= e.hi and (f.end_step if f.end_step is not None else f.step) >= e.lo]
            if not hits:
                seen = [(f.kind.value, f.metric, f.step, f.end_step) for f in analysis.findings if f.kind == e.kind]
                out.append(f"missing {e.kind.value} in {e.metric or 'any metric'} overlapping [{e.lo}, {e.hi}] (saw {seen})")
            elif e.coincides_with and not any(f.coincides_with and f.coincides_with.kind == e.coincides_with for f in hits):
                out.append(f"{e.kind.value} at {hits[0].step} does not name a {e.coincides_with} it coincides with")
        for f in analysis.findings:
            if f.kind in self.must_not:
                out.append(f"unexpected {f.kind.value} in {f.metric} at {f.step}")
            elif self.no_alarm and f.severity != "info":
                out.append(f"alarm on a clean run: {f.kind.value} ({f.severity}) in {f.metric} at {f.step}")
        return out


@dataclass(frozen=True)
class Generated:
    """Curves and events of one generated run, before writing."""

    columns: dict[str, np.ndarray]
    """Canonical metric columns (``step`` int64, others float64)."""
    events: list[dict[str, Any]]
    """Events, each ``{"step", "kind", ...}``."""
    config: dict[str, Any]
    """The run's config."""
    truth: Truth
    """Ground truth."""
    status: str
    """``completed`` or ``diverged``."""


@dataclass(frozen=True)
class FixtureRun:
    """A generated run written to disk."""

    run_dir: Path
    """The run directory."""
    scenario: str
    """Scenario name."""
    steps: int
    """Total steps of the run."""
    config: dict[str, Any]
    """Config written to ``config.yaml``."""
    truth: Truth
    """Ground truth."""


@dataclass(frozen=True)
class Scenario:
    """A named way a run can go."""

    name: str
    """Key in ``SCENARIOS``."""
    description: str
    """One line."""
    default_steps: int
    """Length used when ``steps`` is not given."""
    build: Callable[["_Ctx"], Generated]
    """Builds the curves."""


@dataclass
class _Ctx:
    steps: int
    rows: int
    rng: np.random.Generator
    noise: float
    d_sae: int
    run_id: str
    step: np.ndarray = field(init=False)
    t: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        log_every = max(1, -(-self.steps // max(1, self.rows)))  # ceil: at most ``rows`` + 1 rows
        self.step = np.arange(0, self.steps + 1, log_every, dtype=np.int64)
        if self.step[-1] != self.steps:
            self.step = np.append(self.step, self.steps)
        self.t = self.step / float(self.steps)

    def at(self, frac: float) -> int:
        """Step at a fraction of the run."""
        return int(round(frac * self.steps))

    def loglin(self, anchors: list[tuple[float, float]]) -> np.ndarray:
        """Piecewise log-linear curve through (t, value) anchors."""
        ts, vs = zip(*anchors)
        return np.exp(np.interp(self.t, ts, np.log(vs)))

    def lin(self, anchors: list[tuple[float, float]]) -> np.ndarray:
        ts, vs = zip(*anchors)
        return np.interp(self.t, ts, vs)

    def lognoise(self, x: np.ndarray, sd: float) -> np.ndarray:
        return x * np.exp(self.rng.normal(0.0, sd * self.noise, x.shape))

    def addnoise(self, x: np.ndarray, sd: float) -> np.ndarray:
        return x + self.rng.normal(0.0, sd * self.noise, x.shape)


def _config(ctx: _Ctx, **kw: Any) -> dict[str, Any]:
    cfg = {"run_id": ctx.run_id, "d_in": 512, "d_sae": ctx.d_sae, "batch_size": 4096,
           "total_steps": ctx.steps, "learning_rate": 1e-4, "log_every": int(ctx.step[1] - ctx.step[0]),
           "dead_window": max(1, ctx.at(0.025))}
    cfg.update(kw)
    return cfg


def _loss(ctx: _Ctx, final: float, start: float = 0.5) -> np.ndarray:
    base = final + (start - final) * np.exp(-ctx.t / 0.06)
    return ctx.lognoise(base, 0.03)


def _finish(ctx: _Ctx, l0_frac: np.ndarray, dead_frac: np.ndarray, loss: np.ndarray, cfg: dict[str, Any],
            events: list[dict[str, Any]], truth: Truth, status: str = "completed",
            extra: dict[str, np.ndarray] | None = None) -> Generated:
    l0_frac = np.clip(l0_frac, 1.0 / ctx.d_sae, 1.0)
    dead = np.clip(np.round(dead_frac * ctx.d_sae), 0, ctx.d_sae)
    mse = loss * 0.8
    l1 = np.where(np.isfinite(loss), loss * 0.2 / max(cfg.get("l1_alpha", 0.05), 1e-9), loss)
    cols: dict[str, np.ndarray] = {
        "step": ctx.step, "tokens": ctx.step.astype(np.float64) * cfg["batch_size"],
        "loss": loss, "mse": mse, "l1": l1,
        "l1_alpha": np.full(ctx.step.shape, float(cfg.get("l1_alpha", 0.05))),
        "lr": np.full(ctx.step.shape, float(cfg["learning_rate"])),
        "l0": l0_frac * ctx.d_sae, "l0_frac": l0_frac, "dead": dead, "dead_frac": dead / ctx.d_sae,
        "explained_variance": np.clip(1.0 - mse / 0.6, -1.0, 1.0),
        "elapsed_s": ctx.t * 1044.0,
    }
    cols.update(extra or {})
    return Generated(columns=cols, events=sorted(events, key=lambda e: e["step"]), config=cfg, truth=truth, status=status)


def _resamples(ctx: _Ctx, every: float, revive: list[float], survive: float, ramp: float = 0.01
               ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Resample events every ``every`` of the run; returns events and the dead-fraction offset
    (negative right after each event, back to 0 once the revived features have died)."""
    events: list[dict[str, Any]] = []
    offset = np.zeros_like(ctx.t)
    k = 0
    frac = every
    while frac < 1.0 - 1e-9:
        r = revive[k % len(revive)]
        s = ctx.at(frac)
        events.append({"step": s, "kind": "resample", "n": int(round(r * ctx.d_sae))})
        dt = ctx.t - frac
        kern = np.where(dt < 0, 0.0, np.where(dt < survive, 1.0, np.clip(1.0 - (dt - survive) / ramp, 0.0, 1.0)))
        offset -= r * kern
        k += 1
        frac = round(frac + every, 10)
    return events, offset


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


def _writeup(ctx: _Ctx) -> Generated:
    s = ctx.at
    base = ctx.loglin([(0, 50.4), (0.1, 3.4), (0.2, 0.7), (0.3, 1.1), (0.4, 3.0), (0.5, 2.2), (0.6, 1.8),
                       (0.7, 2.4), (0.8, 2.5), (0.9, 2.3), (1.0, 2.18)]) / 100.0
    osc = np.where(ctx.t > 0.5, 0.25 * np.sin(2 * np.pi * (ctx.t - 0.5) / 0.05), 0.0)
    dt = ctx.t - 0.9
    spike = np.where(dt < 0, 0.0, np.where(dt < 0.004, 1.0, np.exp(-(dt - 0.004) / 0.008)))
    l0 = base * np.exp(osc * (1.0 - spike)) * (1.0 + (4.66 / 2.3 - 1.0) * spike)
    l0 = ctx.lognoise(l0, 0.05)
    events, offset = _resamples(ctx, 0.1, [0.04, 0.06, 0.05, 0.06, 0.05, 0.06, 0.05, 0.08, 0.15], survive=0.03)
    dead = ctx.lin([(0, 0.015), (0.1, 0.22), (0.2, 0.93), (0.3, 0.92), (0.4, 0.85), (0.5, 0.85), (0.6, 0.88),
                    (0.7, 0.89), (0.8, 0.86), (0.9, 0.88), (1.0, 0.89)]) + offset
    dead = np.clip(ctx.addnoise(dead, 0.004), 0, 1)
    loss = _loss(ctx, 0.01137)
    cfg = _config(ctx, l1_alpha=0.065, resample_interval=s(0.1), target_l0=0.05)
    truth = Truth(
        phases=(TruthPhase("Initial collapse", 0, s(0.2)), TruthPhase("Recovery & instability", s(0.2), s(0.5)),
                TruthPhase("Oscillation with late spike", s(0.5), ctx.steps)),
        must=(Expect(K.COLLAPSE, "l0_frac", s(0.15), s(0.25)),
              Expect(K.RECOVERY, "l0_frac", s(0.22), s(0.5)),
              Expect(K.OSCILLATION, "l0_frac", s(0.55), s(0.95)),
              Expect(K.LATE_SPIKE, "l0_frac", s(0.895), s(0.92), coincides_with="resample"),
              Expect(K.RESAMPLE_THRASH, "dead_frac", 0, ctx.steps)),
        must_not=frozenset({K.DIVERGED, K.DORMANCY}),
    )
    return _finish(ctx, l0, dead, loss, cfg, events, truth)


def _sibling(l1: float, final: float, trough: float, settle: float, dead_final: float):
    def build(ctx: _Ctx) -> Generated:
        s = ctx.at
        base = ctx.loglin([(0, 50.4), (0.1, max(settle * 1.6, trough * 1.5)), (0.2, trough), (0.35, settle),
                           (0.9, settle), (1.0, final)]) / 100.0
        l0 = ctx.lognoise(base * np.exp(np.where(ctx.t > 0.4, 0.2 * np.sin(2 * np.pi * ctx.t / 0.07), 0)), 0.05)
        events, offset = _resamples(ctx, 0.15, [0.03], survive=0.2)
        dead = ctx.lin([(0, 0.015), (0.1, 0.3), (0.2, 0.7), (0.5, 0.84), (1.0, dead_final)]) + offset
        dead = np.clip(ctx.addnoise(dead, 0.004), 0, 1)
        cfg = _config(ctx, l1_alpha=l1, resample_interval=s(0.15), target_l0=0.05)
        truth = Truth(phases=(TruthPhase("Sparsification", 0, s(0.2)), TruthPhase("Settled", s(0.35), ctx.steps)),
                      must=(Expect(K.SPARSIFICATION, "l0_frac", 0, s(0.3)),),
                      must_not=frozenset({K.DIVERGED, K.COLLAPSE}))
        return _finish(ctx, l0, dead, _loss(ctx, 0.009 + 0.05 * l1), cfg, events, truth)
    return build


def _dead_000(ctx: _Ctx) -> Generated:
    s = ctx.at
    # The chart, in millions of steps out of 200: 0 until 12M, 250 at 25M, ... 3800 at 202M.
    dead_n = ctx.lin([(0, 0), (0.06, 0), (0.125, 250), (0.25, 1200), (0.375, 2300), (0.5, 2900),
                      (0.625, 3050), (0.75, 3100), (0.85, 3100), (0.875, 3200), (1.0, 3700)])
    jitter = np.where(ctx.t > 0.06, ctx.rng.normal(0, 25 * ctx.noise, ctx.t.shape), 0.0)
    dead = np.clip(dead_n + jitter, 0, None) / ctx.d_sae
    l0 = ctx.lognoise(ctx.loglin([(0, 0.52), (0.05, 0.02), (0.15, 0.006), (1.0, 0.0055)]), 0.04)
    cfg = _config(ctx, l1_alpha=0.04, resample_interval=None, target_l0=None, dead_window=s(0.06))
    truth = Truth(
        phases=(TruthPhase("Dormancy", 0, s(0.06)), TruthPhase("Rapid accumulation", s(0.06), s(0.5)),
                TruthPhase("Plateau", s(0.5), s(0.85)), TruthPhase("Secondary rise", s(0.85), ctx.steps)),
        must=(Expect(K.DORMANCY, "dead_frac", 0, s(0.05)),
              Expect(K.PLATEAU, "dead_frac", s(0.55), s(0.8)),
              Expect(K.SECONDARY_RISE, "dead_frac", s(0.84), s(0.95))),
        must_not=frozenset({K.DIVERGED, K.COLLAPSE, K.RESAMPLE_THRASH}),
    )
    return _finish(ctx, l0, dead, _loss(ctx, 0.012), cfg, [], truth)


def _l0_001(ctx: _Ctx) -> Generated:
    s = ctx.at
    counts = ctx.loglin([(0, 8500), (0.05, 1000), (0.125, 135), (0.25, 85), (0.375, 50), (0.5, 27),
                         (0.625, 15), (0.75, 8.5), (0.875, 5), (1.0, 3)])
    l0 = ctx.lognoise(counts, 0.04) / ctx.d_sae
    dead = np.clip(ctx.lin([(0, 0), (0.03, 0), (0.3, 0.05), (1.0, 0.08)]) + np.where(
        ctx.t > 0.03, ctx.rng.normal(0, 0.002 * ctx.noise, ctx.t.shape), 0), 0, 1)
    cfg = _config(ctx, l1_alpha=0.02, resample_interval=None, target_l0=None)
    truth = Truth(
        phases=(TruthPhase("Sparsification", 0, s(0.125)), TruthPhase("Slow decay", s(0.125), ctx.steps)),
        must=(Expect(K.SPARSIFICATION, "l0_frac", 0, s(0.15)),
              Expect(K.NOT_CONVERGED, "l0_frac", s(0.8), ctx.steps)),
        must_not=frozenset({K.COLLAPSE, K.DIVERGED, K.LATE_SPIKE, K.RECOVERY}),
    )
    return _finish(ctx, l0, dead, _loss(ctx, 0.015), cfg, [], truth)


def _clean(ctx: _Ctx) -> Generated:
    s = ctx.at
    l0 = ctx.lognoise(ctx.loglin([(0, 0.5), (0.08, 0.08), (0.15, 0.052), (1.0, 0.05)]), 0.03)
    dead = ctx.lin([(0, 0.0), (0.025, 0.0), (0.1, 0.03), (0.3, 0.04), (1.0, 0.04)])
    dead = np.clip(dead + np.where(ctx.t > 0.025, ctx.rng.normal(0, 0.002 * ctx.noise, ctx.t.shape), 0), 0, 1)
    cfg = _config(ctx, l1_alpha=0.04, resample_interval=None, target_l0=0.05)
    truth = Truth(phases=(TruthPhase("Sparsification", 0, s(0.15)), TruthPhase("Settled", s(0.15), ctx.steps)),
                  must=(Expect(K.SPARSIFICATION, "l0_frac", 0, s(0.2)),),
                  must_not=frozenset({K.COLLAPSE, K.RECOVERY, K.OSCILLATION, K.LATE_SPIKE, K.DIVERGED,
                                      K.RESAMPLE_THRASH, K.NOT_CONVERGED, K.SECONDARY_RISE}),
                  no_alarm=True)
    return _finish(ctx, l0, dead, _loss(ctx, 0.01), cfg, [], truth)


def _diverged(ctx: _Ctx) -> Generated:
    s = ctx.at
    l0 = ctx.lognoise(ctx.loglin([(0, 0.5), (0.1, 0.06), (1.0, 0.05)]), 0.03)
    dead = np.clip(ctx.lin([(0, 0), (0.03, 0), (0.2, 0.05), (1, 0.06)]), 0, 1)
    loss = _loss(ctx, 0.012)
    blow = ctx.t > 0.6
    loss = np.where(blow, loss * np.exp((ctx.t - 0.6) * 180.0), loss)
    loss = np.where(ctx.t >= 0.68, np.inf, loss)
    loss = np.where(ctx.t >= 0.7, np.nan, loss)
    l0 = np.where(ctx.t >= 0.7, np.nan, l0)
    events = [{"step": s(0.58), "kind": "lr_change", "from": 1e-4, "to": 1e-3},
              {"step": s(0.7), "kind": "nonfinite", "metric": "loss"}]
    cfg = _config(ctx, l1_alpha=0.04, resample_interval=None, target_l0=0.05)
    keep = ctx.t <= 0.72
    truth = Truth(phases=(TruthPhase("Training", 0, s(0.6)), TruthPhase("Divergence", s(0.6), s(0.72))),
                  must=(Expect(K.DIVERGED, "loss", s(0.6), s(0.72), coincides_with="lr_change"),),
                  must_not=frozenset({K.COLLAPSE, K.RESAMPLE_THRASH}))
    gen = _finish(ctx, l0, dead, loss, cfg, events, truth, status="diverged")
    cols = {k: v[keep] for k, v in gen.columns.items()}
    return Generated(columns=cols, events=gen.events, config=cfg, truth=truth, status="diverged")


def _thrash(ctx: _Ctx) -> Generated:
    s = ctx.at
    l0 = ctx.lognoise(ctx.loglin([(0, 0.5), (0.1, 0.05), (1.0, 0.045)]), 0.03)
    events, offset = _resamples(ctx, 0.1, [0.3], survive=0.02)
    dead = np.clip(ctx.addnoise(ctx.lin([(0, 0), (0.02, 0), (0.1, 0.55), (1, 0.6)]) + offset, 0.004), 0, 1)
    cfg = _config(ctx, l1_alpha=0.05, resample_interval=s(0.1), target_l0=0.05)
    truth = Truth(phases=(TruthPhase("Sparsification", 0, s(0.1)), TruthPhase("Resample thrash", s(0.1), ctx.steps)),
                  must=(Expect(K.RESAMPLE_THRASH, "dead_frac", s(0.1), ctx.steps),),
                  must_not=frozenset({K.COLLAPSE, K.DIVERGED}))
    return _finish(ctx, l0, dead, _loss(ctx, 0.011), cfg, events, truth)


def _glitch(ctx: _Ctx) -> Generated:
    """A clean run with lone bad points late in the run (one logged row each): glitches, no alarm."""
    gen = _clean(ctx)
    cols = dict(gen.columns)
    l0, loss = cols["l0_frac"].copy(), cols["loss"].copy()
    for frac, factor in ((0.8, 3.0), (0.9, 0.3), (0.95, 4.0)):
        i = int(np.searchsorted(ctx.step, ctx.at(frac)))
        if i < len(l0):
            l0[i] *= factor
            loss[i] *= factor
    cols.update(l0_frac=l0, l0=l0 * ctx.d_sae, loss=loss)
    return Generated(columns=cols, events=gen.events, config=gen.config, truth=gen.truth, status=gen.status)


def _late_shift(ctx: _Ctx) -> Generated:
    """L0 settles at its target, then moves to a new level at 85% and stays: not a spike."""
    s = ctx.at
    l0 = ctx.loglin([(0, 0.5), (0.08, 0.08), (0.15, 0.052), (1.0, 0.05)])
    l0 = ctx.lognoise(np.where(ctx.t >= 0.85, l0 * 1.8, l0), 0.03)
    dead = np.clip(ctx.lin([(0, 0.0), (0.025, 0.0), (0.1, 0.03), (1.0, 0.04)]), 0, 1)
    cfg = _config(ctx, l1_alpha=0.04, resample_interval=None, target_l0=0.05)
    truth = Truth(phases=(TruthPhase("Sparsification", 0, s(0.15)), TruthPhase("Settled", s(0.15), s(0.85)),
                          TruthPhase("New level", s(0.85), ctx.steps)),
                  must=(Expect(K.SPARSIFICATION, "l0_frac", 0, s(0.2)),),
                  must_not=frozenset({K.LATE_SPIKE, K.COLLAPSE, K.DIVERGED, K.OSCILLATION}))
    return _finish(ctx, l0, dead, _loss(ctx, 0.01), cfg, [], truth)


SCENARIOS: dict[str, Scenario] = {
    sc.name: sc for sc in (
        Scenario("writeup", "train_e01c6183: collapse, recovery, oscillation, late spike at 90%, thrash", 100_000, _writeup),
        Scenario("sibling_low", "train_0314574b: l1_alpha 0.005 -> final L0 11.29%", 100_000,
                 _sibling(0.005, 11.29, 8.0, 11.5, 0.72)),
        Scenario("sibling_mid", "train_05555a4b: l1_alpha 0.05 -> final L0 4.19%", 100_000,
                 _sibling(0.05, 4.19, 2.9, 2.6, 0.77)),
        Scenario("dead_000", "dead features: dormant, rise, plateau, secondary rise (seed 000)", 200_000_000, _dead_000),
        Scenario("l0_001", "L0: sparsification then slow decay, not converged (seed 001)", 200_000_000, _l0_001),
        Scenario("clean", "reaches its target, settles: no alarm", 20_000, _clean),
        Scenario("diverged", "loss blows up to inf then NaN at 70% after an lr change", 20_000, _diverged),
        Scenario("thrash", "resampled features die again before the next resample", 50_000, _thrash),
        Scenario("glitch", "clean run with lone bad logged points late: glitches, no alarm", 20_000, _glitch),
        Scenario("late_shift", "L0 moves to a new level at 85% and stays: not a spike", 20_000, _late_shift),
    )
}

#: Run ids of the write-up's three runs, for ``write_siblings``.
WRITEUP_RUNS: dict[str, str] = {"sibling_low": "train_0314574b", "sibling_mid": "train_05555a4b",
                                "writeup": "train_e01c6183"}


def generate(scenario: str, steps: int | None = None, seed: int = 0, *, rows: int = 2000, noise: float = 1.0,
             d_sae: int | None = None, run_id: str | None = None) -> Generated:
    """Build a scenario's curves without writing them (``rows`` logged rows over ``steps``)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (choose from {', '.join(SCENARIOS)})")
    sc = SCENARIOS[scenario]
    steps = int(steps or sc.default_steps)
    if steps < 10:
        raise ValueError("steps must be at least 10")
    default_d = 16384 if scenario in ("dead_000", "l0_001") else 8192
    ctx = _Ctx(steps=steps, rows=min(rows, steps), rng=np.random.default_rng(seed), noise=noise,
               d_sae=int(d_sae or default_d), run_id=run_id or WRITEUP_RUNS.get(scenario, f"synthetic_{scenario}"))
    return sc.build(ctx)


def write_run(root: Path, scenario: str = "writeup", steps: int | None = None, seed: int = 0, *,
              rows: int = 2000, noise: float = 1.0, d_sae: int | None = None, run_id: str | None = None,
              resume_at: float | None = None, with_stats: bool = False, part_rows: int = 100_000) -> FixtureRun:
    """Write a scenario as a run directory ``root/<run_id>`` and return it with its ground truth.

    ``resume_at`` (a fraction of the run): log up to 5% past that point, then write a ``resume``
    event at it and log again from there in a new part, as a resumed run does (the reader must keep
    the later rows). ``with_stats`` writes ``stats/input_dims.csv`` (two outlier dims) and
    ``stats/feature_freq.npy``.
    """
    gen = generate(scenario, steps, seed, rows=rows, noise=noise, d_sae=d_sae, run_id=run_id)
    run_dir = Path(root) / gen.config["run_id"]
    cols = gen.columns
    step = cols["step"]
    with RunLogWriter(run_dir, part_rows=part_rows) as w:
        w.write_config({**gen.config, "scenario": scenario, "seed": seed})
        w.log_event("start", 0)
        events = list(gen.events)
        if resume_at is not None:
            cut = int(round(resume_at * int(gen.config["total_steps"])))
            first = step <= cut + max(1, int(0.05 * gen.config["total_steps"]))
            redo = np.where(step[first] > cut, 1.5, 1.0)  # the stretch that is re-run differs
            stale = {k: (v[first] * redo if k == "loss" else v[first]) for k, v in cols.items()}
            _log(w, stale, [e for e in events if e["step"] <= int(step[first][-1])])
            w.roll()
            w.log_event("resume", cut, checkpoint=f"checkpoints/step_{cut:09d}")
            keep = step > cut
            cols = {k: v[keep] for k, v in cols.items()}
            events = [e for e in events if e["step"] > cut]
        _log(w, cols, events)
        w.log_event("end", int(step[-1]), status=gen.status)
        w.write_summary({"status": gen.status, "steps": int(step[-1]), "elapsed_s": float(cols["elapsed_s"][-1])
                         if len(cols["elapsed_s"]) else 0.0, "scenario": scenario})
    if with_stats:
        _write_stats(run_dir, gen.config, seed)
    return FixtureRun(run_dir=run_dir, scenario=scenario, steps=int(gen.config["total_steps"]), config=gen.config,
                      truth=gen.truth)


def _log(w: RunLogWriter, cols: dict[str, np.ndarray], events: list[dict[str, Any]], chunk: int = 50_000) -> None:
    """Log rows in chunks, interleaving events at their steps (an event is written after the rows
    up to its step)."""
    step = cols["step"]
    pending = sorted(events, key=lambda e: e["step"])
    i = 0
    n = len(step)
    while i < n:
        j = min(n, i + chunk)
        while pending and pending[0]["step"] <= step[j - 1]:
            ev = pending.pop(0)
            k = int(np.searchsorted(step, ev["step"], side="left"))
            if k > i:
                w.log_metrics({c: v[i:k] for c, v in cols.items()})
                i = k
            w.log_event(ev["kind"], ev["step"], **{a: b for a, b in ev.items() if a not in ("kind", "step")})
        if i < j:
            w.log_metrics({c: v[i:j] for c, v in cols.items()})
        i = j
    for ev in pending:
        w.log_event(ev["kind"], ev["step"], **{a: b for a, b in ev.items() if a not in ("kind", "step")})


def _write_stats(run_dir: Path, cfg: dict[str, Any], seed: int) -> None:
    rng = np.random.default_rng(seed + 1)
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    std = rng.uniform(0.8, 1.2, d_in)
    absmax = std * rng.uniform(3.5, 5.0, d_in)
    for dim, factor in ((17, 60.0), (301, 25.0)):
        absmax[dim] *= factor
        std[dim] *= factor / 4
    med = float(np.median(absmax))
    lines = ["dim,mean,std,absmax,outlier"] + [
        f"{i},{rng.normal(0, 0.05):.6g},{std[i]:.6g},{absmax[i]:.6g},{str(absmax[i] > 10 * med).lower()}"
        for i in range(d_in)]
    (run_dir / "stats").mkdir(exist_ok=True)
    atomic_write_text(run_dir / "stats" / "input_dims.csv", "\n".join(lines) + "\n")
    freq = np.where(rng.random(d_sae) < 0.1, 0.0, rng.lognormal(np.log(0.02), 1.0, d_sae)).clip(0, 1)
    np.save(run_dir / "stats" / "feature_freq.npy", freq.astype(np.float32))


def write_siblings(root: Path, steps: int | None = None, seed: int = 0, rows: int = 1000) -> list[FixtureRun]:
    """Write the write-up's three runs (l1_alpha 0.005, 0.05, 0.065) under ``root``."""
    return [write_run(root, name, steps=steps, seed=seed + i, rows=rows) for i, name in enumerate(WRITEUP_RUNS)]


def scenario_table() -> str:
    """One line per scenario (for ``--help`` texts and docs)."""
    return "\n".join(f"{s.name:12s} {s.default_steps:>11,d} steps  {s.description}" for s in SCENARIOS.values())


def dump_truth(truth: Truth) -> str:
    """The ground truth as JSON (for debugging a failing detector test)."""
    return json.dumps({"phases": [p.__dict__ for p in truth.phases],
                       "must": [{**e.__dict__, "kind": e.kind.value} for e in truth.must],
                       "must_not": sorted(k.value for k in truth.must_not), "no_alarm": truth.no_alarm}, indent=2)
