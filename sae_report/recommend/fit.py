"""Fit settled L0 against l1_alpha across runs and recommend the next l1_alpha (pure numpy).

Model: L0 falls as l1_alpha rises (a stronger sparsity penalty leaves fewer active features).
The fit is monotone (non-increasing) in ``log L0`` against ``log l1_alpha``: an isotonic
regression (pool adjacent violators) of the runs, weighted by how well each run's settled L0 is
known; the runs that contradict it are pooled and warned about. Measured responses bend (flat at
low l1_alpha, steep near typical targets), so the estimates below allow for curvature.

- Target bracketed (one run above it, one below): the answer lies between those two runs. The
  log-log estimate is the secant between them (two runs) or the root of a monotone cubic (PCHIP)
  through all runs (three or more, following the curvature the neighbours show); the log-linear
  estimate interpolates log L0 against l1_alpha itself. The recommendation is their geometric mean.
  The interval spans these, the secant and the local slope of the segment beyond the run nearest
  the target (each kept inside the bracket), plus that run's noise, clipped to the bracketing runs.
- Not bracketed: extrapolate from the run nearest the target with the local/global slopes (or the
  default elasticity when they are flat or missing; when raising l1_alpha, no flatter than the
  default, since the response steepens; when lowering it, no steeper, since it flattens); the interval is wider and the step is capped at
  ``MAX_STEP_FACTOR``; a warning says so.
- One run: the default elasticity ``DEFAULT_ELASTICITY`` with the range ``ELASTICITY_RANGE``.
- The coefficient: ``l1_alpha`` for an L1 SAE; a JumpReLU SAE's ``l0_coefficient`` is fitted the
  same way (raising it lowers L0 too), and the recommendation names it (``coefficient``).
- Saturation: L0 that barely moves across a span of l1_alpha (elasticity below
  ``SATURATION_ELASTICITY``) is stated as such (cf. SAELens #719).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from ..runlog import to_jsonable
from .curve import Grouped, RunPoint, group, pchip_root, round_inside, round_sig, weighted_slope

#: -d log L0 / d log l1_alpha assumed with one run: L0 inversely proportional to l1_alpha.
#: Measured: the write-up's runs span 0.43 (0.005-0.05) to 2.5 (0.05-0.065); the trainer's default
#: synthetic data 2.2 (0.03-0.06); a 300-step tiny model 0.2 (l1 0.01) to 3.8 (l1 0.12). In
#: simulated campaigns on the measured curves 1.0 needed fewer runs than 0.5 or 1.5 (docs/recommend.md).
DEFAULT_ELASTICITY = 1.0
#: Elasticities that bound the single-run and extrapolation intervals.
ELASTICITY_RANGE = (0.4, 3.0)
#: Below this elasticity (over at least a 1.5x span of l1_alpha) the response counts as saturated.
SATURATION_ELASTICITY = 0.1
#: The most one recommendation moves l1_alpha away from the nearest run (factor either way).
MAX_STEP_FACTOR = 10.0
Direction = Literal["raise", "lower"]
Method = Literal["interpolate", "extrapolate", "single_run"]


@dataclass(frozen=True)
class L1Recommendation:
    """The next l1_alpha with its interval and the reasoning behind it."""

    l1_alpha: float
    """Recommended l1_alpha."""
    low: float
    """Lower end of the interval."""
    high: float
    """Upper end of the interval."""
    predicted_l0: float
    """L0 fraction the fit predicts at ``l1_alpha``."""
    basis: list[str]
    """Run ids the estimate rests on."""
    direction: Direction
    """``lower`` (weaker penalty, more active features, higher L0) or ``raise`` (the opposite),
    relative to the reference run."""
    explanation: str
    """The recommendation in plain words, direction stated unambiguously."""
    warnings: list[str] = field(default_factory=list)
    """Caveats: extrapolation, single run, saturation, non-monotone runs, capped step."""
    method: Method = "interpolate"
    """How it was estimated."""
    target_l0: float = 0.0
    """The target L0 fraction."""
    reference: str = ""
    """Run id of the run nearest the target (the direction is relative to it)."""
    reference_l1_alpha: float = 0.0
    """That run's l1_alpha."""
    reference_l0: float = 0.0
    """That run's settled L0."""
    bracket: list[str] | None = None
    """Ids of the two runs on either side of the target, when they exist."""
    elasticity: float | None = None
    """Fitted -d log L0 / d log l1_alpha near the target (None with one run)."""
    saturated: bool = False
    """True when L0 barely responds to l1_alpha in the range that matters."""
    candidates: dict[str, float] = field(default_factory=dict)
    """Estimates the recommendation combines (name -> l1_alpha)."""
    curve: list[dict[str, float]] = field(default_factory=list)
    """The fitted monotone curve: ``{"l1_alpha", "l0"}`` at each distinct run l1_alpha."""
    coefficient: str = "l1_alpha"
    """The coefficient fitted: ``l1_alpha``, or ``l0_coefficient`` (JumpReLU); ``l1_alpha`` and the
    other fields above then hold its values, and the sentences name it."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; the first seven keys are the documented recommendation JSON."""
        return to_jsonable(asdict(self))


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------



def _fmt_l1(v: float) -> str:
    return f"{v:.3g}"


def _fmt_pct(v: float) -> str:
    return f"{100 * v:.3g}%" if v >= 0.001 else f"{100 * v:.2g}%"


def _words(direction: Direction) -> str:
    if direction == "lower":
        return "lower l1_alpha -> weaker sparsity penalty -> more active features -> higher L0"
    return "raise l1_alpha -> stronger sparsity penalty -> fewer active features -> lower L0"



def _validate(runs: Sequence[RunPoint], target_l0: float) -> None:
    if not (isinstance(target_l0, (int, float)) and 0 < target_l0 <= 1 and math.isfinite(target_l0)):
        raise ValueError(f"target L0 must be a fraction in (0, 1], got {target_l0!r}")
    if not runs:
        raise ValueError("no runs to fit")
    for r in runs:
        if not (math.isfinite(r.l1_alpha) and r.l1_alpha > 0):
            raise ValueError(f"{r.run_id}: l1_alpha must be a positive number, got {r.l1_alpha!r}")
        if not (math.isfinite(r.l0) and r.l0 > 0):
            raise ValueError(f"{r.run_id}: settled L0 must be a positive number, got {r.l0!r}")


# --------------------------------------------------------------------------------------------
# The recommendation
# --------------------------------------------------------------------------------------------


def recommend_l1(runs: Sequence[RunPoint], target_l0: float, coefficient: str = "l1_alpha") -> L1Recommendation:
    """Recommend the l1_alpha whose settled L0 should hit ``target_l0`` (a fraction); with
    ``coefficient="l0_coefficient"`` the runs' points are a JumpReLU SAE's L0 coefficient, fitted and
    named as such (the same direction rule: raise it -> lower L0).

    Raises ``ValueError`` for an empty list, a non-positive l1_alpha or L0, or a target outside
    (0, 1]; callers exclude such runs with a reason first.
    """
    rec = _recommend(runs, target_l0)
    if coefficient == "l1_alpha":
        return rec
    from dataclasses import replace

    return replace(rec, coefficient=coefficient, explanation=rec.explanation.replace("l1_alpha", coefficient),
                   warnings=[w.replace("l1_alpha", coefficient) for w in rec.warnings])


def _recommend(runs: Sequence[RunPoint], target_l0: float) -> L1Recommendation:
    _validate(runs, target_l0)
    g = group(runs)
    lt = math.log(target_l0)
    warnings: list[str] = []
    warnings.extend(_monotonicity_warnings(g))
    n = len(g.x)
    above = [i for i in range(n) if g.fit[i] > lt]  # L0 above target: l1_alpha too low
    below = [i for i in range(n) if g.fit[i] < lt]  # L0 below target: l1_alpha too high
    on = [i for i in range(n) if g.fit[i] == lt]
    ref = int(np.argmin(np.abs(g.fit - lt) + 1e-12 * np.arange(n)))
    if on:
        ref = on[0]
    elif not (above and below):
        # not bracketed: the nearest run is the extreme one (ties from pooling go to the extreme)
        ref = above[-1] if above else below[0]
    global_k = weighted_slope(g.x, g.fit, g.w) if n >= 2 else None
    saturated, sat_text = _saturation(g, ref)
    if saturated:
        warnings.append(sat_text)

    candidates: dict[str, float] = {}
    basis_idx: set[int] = {ref}
    bracket: list[str] | None = None
    elasticity: float | None = None

    if on:
        method: Method = "interpolate"
        x_star, lo_x, hi_x = g.x[ref], g.x[ref], g.x[ref]
        if 0 < ref:
            lo_x = g.x[ref - 1]
        if ref < n - 1:
            hi_x = g.x[ref + 1]
        lo_x = max(lo_x, g.x[ref] - 0.5 * (g.x[ref] - lo_x))
        hi_x = min(hi_x, g.x[ref] + 0.5 * (hi_x - g.x[ref]))
        candidates["run at target"] = math.exp(x_star)
        elasticity = -global_k if global_k is not None else None
        pred_y = lt
    elif above and below:
        method = "interpolate"
        a, b = above[-1], below[0]
        bracket = [g.ids[a][0], g.ids[b][0]]
        basis_idx |= {a, b}
        xa, xb, ya, yb = g.x[a], g.x[b], g.fit[a], g.fit[b]
        k_sec = (yb - ya) / (xb - xa)
        elasticity = -k_sec
        margin = 0.02 * (xb - xa)
        lines: list[tuple[str, float, float, float]] = [("log-log interpolation", xa, ya, k_sec)]
        curvature: list[float] = []
        anchor = a if abs(ya - lt) < abs(yb - lt) else b
        # local slope of the segment beyond the anchor (away from the bracket): bounds the interval
        nb = anchor - 1 if anchor == a else anchor + 1
        if 0 <= nb < n:
            k_loc = (g.fit[nb] - g.fit[anchor]) / (g.x[nb] - g.x[anchor])
            if k_loc < 0:
                lines.append((f"local slope at {_fmt_l1(g.l1[anchor])}", g.x[anchor], g.fit[anchor], k_loc))
                basis_idx.add(nb)
        if n == 2:
            # two runs only: the curvature is unknown, so allow the slope near the anchor to be
            # half to twice the secant slope (this widens the interval, not the estimate)
            for f in (0.5, 2.0):
                r = g.x[anchor] + (lt - g.fit[anchor]) / (k_sec * f)
                curvature.append(float(np.clip(r, xa, xb)))
        roots = []
        for name, x0, y0, k in lines:
            r = float(np.clip(x0 + (lt - y0) / k, xa + margin, xb - margin))
            roots.append(r)
            candidates[name] = math.exp(r)
        # log L0 against l1_alpha itself (not its log) lands higher in the bracket, where a log-log
        # curve that steepens with l1_alpha (as SAE sweeps do) has its root
        la, lb = g.l1[a], g.l1[b]
        semi = float(np.clip(math.log(la + (lt - ya) * (lb - la) / (yb - ya)), xa + margin, xb - margin))
        candidates["log-linear interpolation"] = math.exp(semi)
        roots.append(semi)
        loglog = roots[0]
        if n >= 3:
            # a monotone cubic (PCHIP) through every run follows the curvature the neighbouring
            # runs show; it stays inside the bracket by construction
            cubic = float(np.clip(pchip_root(g.x, g.fit, a, b, lt), xa + margin, xb - margin))
            candidates["monotone cubic through all runs"] = math.exp(cubic)
            basis_idx |= set(range(n))
            roots.append(cubic)
            loglog = cubic
        # the estimate: the geometric mean of the log-log estimate and the log-linear one, which
        # err on opposite sides when the log-log curve bends (simulated campaigns on measured
        # curves needed fewer runs with it than with either alone; docs/recommend.md)
        x_star = float(np.clip((loglog + semi) / 2, xa + margin, xb - margin))
        pred_y = lt
        spread = g.noise[anchor] / max(abs(k_sec), 1e-6)
        lo_x = max(xa, min(roots + curvature) - spread)
        hi_x = min(xb, max(roots + curvature) + spread)
    else:
        # Not bracketed (or one run): extrapolate from the run nearest the target.
        raise_l1 = bool(above)  # every run above target: need fewer active features
        anchor = ref
        x0, y0 = g.x[anchor], g.fit[anchor]
        slopes: dict[str, float] = {}
        if n >= 2:
            nb = anchor - 1 if raise_l1 else anchor + 1
            if 0 <= nb < n:
                slopes["local slope"] = (g.fit[anchor] - g.fit[nb]) / (g.x[anchor] - g.x[nb])
                basis_idx.add(nb)
            if n >= 3 and global_k is not None:
                slopes["global slope"] = global_k
                basis_idx |= set(range(n))
        usable = {k: v for k, v in slopes.items() if v <= -SATURATION_ELASTICITY}
        if raise_l1:
            # L0 falls faster the higher l1_alpha goes (log-log concave), so beyond the highest run
            # the response is at least as steep as the default: a flatter fitted slope would overshoot
            usable = {k: min(v, -DEFAULT_ELASTICITY) for k, v in usable.items()}
        else:
            # and below the lowest run it is no steeper than the default: a steeper fitted slope
            # (often set by a run far above, on the L0 floor) would under-step and cost extra runs
            usable = {k: max(v, -DEFAULT_ELASTICITY) for k, v in usable.items()}
        if n == 1:
            method = "single_run"
            usable = {"default elasticity": -DEFAULT_ELASTICITY}
            warnings.append(
                f"Only one run: the step assumes the default elasticity {DEFAULT_ELASTICITY} "
                f"(L0 ~ l1_alpha^-{DEFAULT_ELASTICITY}); the interval spans elasticities "
                f"{ELASTICITY_RANGE[0]}-{ELASTICITY_RANGE[1]}. A second run will pin the slope down.")
        else:
            method = "extrapolate"
            if not usable:
                usable = {"default elasticity": -DEFAULT_ELASTICITY}
                warnings.append(
                    f"The runs show no usable slope (L0 barely moves with l1_alpha); the step uses the "
                    f"default elasticity {DEFAULT_ELASTICITY}.")
            side = "above" if raise_l1 else "below"
            best = g.ids[anchor][0]
            warnings.append(
                f"No run brackets the target: every run's settled L0 is {side} {_fmt_pct(target_l0)} "
                f"(nearest: {best} at {_fmt_pct(math.exp(y0))}, l1_alpha {_fmt_l1(math.exp(x0))}). "
                "This extrapolates beyond the tested range, so the interval is wide; the next run "
                "should bracket the target.")
        ks = np.array(list(usable.values()))
        elasticity = float(-np.mean(ks)) if method != "single_run" else None
        roots = [x0 + (lt - y0) / k for k in ks]
        for name, r in zip(usable, roots):
            candidates[name] = math.exp(r)
        x_star = float(np.mean(roots))
        pred_y = float(np.mean([y0 + k * (x_star - x0) for k in ks]))
        k_abs = np.abs(ks)
        k_lo = min(float(k_abs.min()) / 2, ELASTICITY_RANGE[0])
        k_hi = max(float(k_abs.max()) * 2, ELASTICITY_RANGE[1])
        step = lt - y0
        noise = g.noise[anchor]
        ends = [x0 - (step - noise) / k_hi, x0 - (step + noise) / k_hi,
                x0 - (step - noise) / k_lo, x0 - (step + noise) / k_lo]
        lo_x, hi_x = min(ends), max(ends)
        cap = math.log(MAX_STEP_FACTOR)
        if abs(x_star - x0) > cap:
            x_star = x0 + math.copysign(cap, x_star - x0)
            pred_y = float(np.mean([y0 + k * (x_star - x0) for k in ks]))
            warnings.append(
                f"The step is capped at {MAX_STEP_FACTOR:g}x the nearest run's l1_alpha; the fit "
                "would go further. Expect to need another run.")
        lo_x = max(lo_x, x0 - cap)
        hi_x = min(hi_x, x0 + cap)
        # the interval must stay on the right side of the anchor
        if raise_l1:
            lo_x = max(lo_x, x0)
        else:
            hi_x = min(hi_x, x0)
        lo_x, hi_x = min(lo_x, x_star), max(hi_x, x_star)

    if on:
        l1 = g.l1[ref]
    elif bracket:
        l1 = round_inside(math.exp(x_star), g.l1[above[-1]], g.l1[below[0]])
    elif above:  # raise beyond the largest tested value
        l1 = round_inside(math.exp(x_star), g.l1[ref], math.inf)
    else:
        l1 = round_inside(math.exp(x_star), 0.0, g.l1[ref])
    lo, hi = round_sig(min(math.exp(lo_x), l1)), round_sig(max(math.exp(hi_x), l1))
    # rounding must not carry the interval past a run known to be on the other side of the target
    if above:
        lo = max(lo, g.l1[above[-1]])
    if below:
        hi = min(hi, g.l1[below[0]])
    ref_l1, ref_l0 = g.l1[ref], math.exp(g.y[ref])
    ref_fit = g.fit[ref]
    direction: Direction = "raise" if ref_fit > lt else "lower"
    if on:
        direction = "raise" if g.y[ref] > lt else "lower"
    basis = [rid for i in sorted(basis_idx) for rid in g.ids[i]]
    rec = L1Recommendation(
        l1_alpha=l1, low=min(lo, l1), high=max(hi, l1), predicted_l0=round_sig(math.exp(pred_y), 4),
        basis=basis, direction=direction, explanation="", warnings=warnings, method=method,
        target_l0=float(target_l0), reference=g.ids[ref][0], reference_l1_alpha=ref_l1,
        reference_l0=ref_l0, bracket=bracket, elasticity=elasticity, saturated=saturated,
        candidates=candidates,
        curve=[{"l1_alpha": v, "l0": math.exp(y)} for v, y in zip(g.l1, g.fit)],
    )
    return _with_explanation(rec, g, on=bool(on))


def _with_explanation(rec: L1Recommendation, g: Grouped, *, on: bool) -> L1Recommendation:
    from dataclasses import replace

    verb = "Lower" if rec.direction == "lower" else "Raise"
    parts = []
    if on:
        parts.append(
            f"Run {rec.reference} already settles at the target ({_fmt_pct(rec.reference_l0)} at l1_alpha "
            f"{_fmt_l1(rec.reference_l1_alpha)}): keep l1_alpha at {_fmt_l1(rec.l1_alpha)}.")
    elif rec.method == "interpolate" and rec.bracket:
        (a,) = [i for i, ids in enumerate(g.ids) if rec.bracket[0] in ids]
        (b,) = [i for i, ids in enumerate(g.ids) if rec.bracket[1] in ids]
        parts.append(
            f"Set l1_alpha to {_fmt_l1(rec.l1_alpha)} (range {_fmt_l1(rec.low)}-{_fmt_l1(rec.high)}) for the "
            f"{_fmt_pct(rec.target_l0)} target, between run {rec.bracket[0]} (l1_alpha {_fmt_l1(g.l1[a])}, settled "
            f"L0 {_fmt_pct(math.exp(g.y[a]))}, above the target: {_words('raise')}) and run {rec.bracket[1]} "
            f"(l1_alpha {_fmt_l1(g.l1[b])}, settled L0 {_fmt_pct(math.exp(g.y[b]))}, below the target: "
            f"{_words('lower')}). Relative to the run nearest the target, {rec.reference} (l1_alpha "
            f"{_fmt_l1(rec.reference_l1_alpha)}), that is {'lower' if rec.direction == 'lower' else 'higher'} "
            "l1_alpha.")
    else:
        parts.append(
            f"{verb} l1_alpha from {_fmt_l1(rec.reference_l1_alpha)} (run {rec.reference}, settled L0 "
            f"{_fmt_pct(rec.reference_l0)}) to {_fmt_l1(rec.l1_alpha)} (range {_fmt_l1(rec.low)}-"
            f"{_fmt_l1(rec.high)}) to reach the {_fmt_pct(rec.target_l0)} target: {_words(rec.direction)}.")
    if rec.method == "interpolate" and rec.bracket:
        main_name = ("monotone cubic through all runs" if "monotone cubic through all runs" in rec.candidates
                     else "log-log interpolation")
        others = [f"{k} ({_fmt_l1(v)})" for k, v in rec.candidates.items()
                  if k not in (main_name, "log-linear interpolation")]
        parts.append(
            f"The estimate is the geometric mean of the {main_name} "
            f"({_fmt_l1(rec.candidates[main_name])}) and log-linear interpolation "
            f"({_fmt_l1(rec.candidates['log-linear interpolation'])})"
            + (f"; the interval also covers {' and '.join(others)}." if others else "."))
    elif rec.method == "extrapolate":
        parts.append(f"Extrapolated with {', '.join(rec.candidates)}; treat the interval as wide.")
    elif rec.method == "single_run":
        parts.append(f"One run only: assumes L0 ~ l1_alpha^-{DEFAULT_ELASTICITY}.")
    parts.append(f"Predicted settled L0 at {_fmt_l1(rec.l1_alpha)}: about {_fmt_pct(rec.predicted_l0)}.")
    if rec.saturated:
        parts.append("Caution: L0 looks saturated (it barely responds to l1_alpha in this range).")
    return replace(rec, explanation=" ".join(parts))


def _monotonicity_warnings(g: Grouped) -> list[str]:
    out = []
    for i in range(len(g.x) - 1):
        if g.y[i + 1] > g.y[i]:
            gap = g.y[i + 1] - g.y[i]
            noise = math.hypot(g.noise[i], g.noise[i + 1])
            within = "within" if gap <= 2 * noise else "beyond"
            out.append(
                f"Runs {g.ids[i + 1][0]} (l1_alpha {_fmt_l1(math.exp(g.x[i + 1]))}) and {g.ids[i][0]} "
                f"(l1_alpha {_fmt_l1(math.exp(g.x[i]))}) contradict the monotone response: the higher "
                f"l1_alpha settled at a higher L0 ({_fmt_pct(math.exp(g.y[i + 1]))} vs "
                f"{_fmt_pct(math.exp(g.y[i]))}, {within} noise). The fit pools them; check for "
                "confounders (other settings that changed) or unsettled runs.")
    return out


def _saturation(g: Grouped, ref: int) -> tuple[bool, str]:
    """Flat response near the reference run (or across all runs)."""
    n = len(g.x)
    if n < 2:
        return False, ""
    spans = []
    for i in range(max(0, ref - 1), min(n - 1, ref + 1)):
        spans.append((i, i + 1))
    spans.append((0, n - 1))
    for i, j in spans:
        dx = g.x[j] - g.x[i]
        if dx < math.log(1.5):
            continue
        dy = g.fit[i] - g.fit[j]
        noise = math.hypot(g.noise[i], g.noise[j])
        if dy / dx < SATURATION_ELASTICITY or dy <= noise:
            l1a, l1b = math.exp(g.x[i]), math.exp(g.x[j])
            return True, (
                f"Saturated response: l1_alpha went from {_fmt_l1(l1a)} to {_fmt_l1(l1b)} "
                f"({l1b / l1a:.3g}x) but settled L0 only moved from {_fmt_pct(math.exp(g.y[i]))} to "
                f"{_fmt_pct(math.exp(g.y[j]))}. Changing l1_alpha alone may not reach the target "
                "(cf. SAELens #719, JumpReLU L0 stuck near 26 for coefficients 1 to 100); check the "
                "activation function / threshold, learning rate and run length.")
    return False, ""
