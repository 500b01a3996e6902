"""What a campaign trains next: one round of runs, as many as it trains at once.

One run at a time (the default), a round is the recommendation alone, as before. With ``parallel``
slots, a round spends them where the answer can be: the recommended coefficient first, then points
across the recommendation's interval (its ends first, then log-spaced between; while every run is on one side
of the target, first a step as large again beyond the recommendation, whose step is capped), so
that even when the fit is off, the round brackets the target and the next fit interpolates. The first round, with
no run to fit yet, is the starting config's coefficient and its neighbours a factor ``SPREAD``
away on either side (above first: a starting L0 is more often too high). A value within
``SAME_REL`` of a run already planned is not trained again.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .campaign import Iteration

#: Factor between the first round's values (1, SPREAD, 1/SPREAD, SPREAD^2, ...) x the starting value.
SPREAD = 2.0
#: Relative difference under which two coefficients count as the same run.
SAME_REL = 0.02
#: Half-width (factor) given to an interval narrower than this around the recommendation.
MIN_HALF_WIDTH = 1.25


def run_name(index: int, value: float, coefficient: str = "l1_alpha") -> str:
    """The run directory name of iteration ``index`` (``iter_03_l1_0.025``, ``iter_02_l0_0.001``)."""
    return f"iter_{index:02d}_{'l0' if coefficient == 'l0_coefficient' else 'l1'}_{value:.3g}"


def config_for(base_cfg: Any, l1: float, total_steps: int | None = None, coefficient: str = "l1_alpha") -> Any:
    """The base config with ``l1_alpha`` (a piecewise l1 schedule is scaled with it; a JumpReLU
    SAE's ``l0_coefficient`` with ``coefficient="l0_coefficient"``) and, when given, ``total_steps``
    set."""
    extra = {"total_steps": int(total_steps)} if total_steps else {}
    if coefficient != "l1_alpha":
        return base_cfg.replace(**{coefficient: l1, **extra})
    sched = getattr(base_cfg, "l1_alpha_schedule", None)
    if sched and base_cfg.l1_alpha > 0:
        ratio = l1 / base_cfg.l1_alpha
        return base_cfg.replace(l1_alpha=l1, l1_alpha_schedule={k: v * ratio for k, v in sched.items()}, **extra)
    return base_cfg.replace(l1_alpha=l1, **extra)


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=SAME_REL)


def first_round(start: float, n: int) -> list[float]:
    """``n`` values around the starting coefficient: start, start x SPREAD, start / SPREAD, ..."""
    out = [start]
    k = 1
    while len(out) < n:
        out.append(start * SPREAD ** k)
        if len(out) < n:
            out.append(start / SPREAD ** k)
        k += 1
    return out


def round_values(rec: dict[str, Any], n: int, taken: list[float]) -> list[tuple[float, str]]:
    """Up to ``n`` values for a round planned from recommendation ``rec`` (its dict), each with why:
    the recommendation; when no run is on the far side of the target yet (``bracket`` None), a step
    as large again beyond it; then its interval's ends (a factor ``MIN_HALF_WIDTH`` from it where the
    interval is narrower), the end farther from every run so far first; then points log-spaced
    between the ends. Added points within ``SAME_REL`` of ``taken`` or of each other are skipped."""
    best, low, high = float(rec["l1_alpha"]), float(rec["low"]), float(rec["high"])
    coef = str(rec.get("coefficient") or "l1_alpha")
    interval = f"the recommendation's interval ({low:.3g}-{high:.3g})"
    ends: list[tuple[float, str]] = []
    for end, word, far in ((high, "Upper", best * MIN_HALF_WIDTH), (low, "Lower", best / MIN_HALF_WIDTH)):
        if _same(end, best) or not 0 < end < math.inf or math.log(abs(end / best)) ** 2 < math.log(MIN_HALF_WIDTH) ** 2:
            end, where = far, (f"{word} side, {coef} {best:.3g} x {far / best:.3g} ({interval} is narrower than "
                                f"a factor {MIN_HALF_WIDTH:g} on this side)")
        else:
            where = f"{word} end of {interval}"
        ends.append((end, f"{where}: trained at once with {coef} {best:.3g} so the round brackets the target even "
                          "if the fit is off."))

    def distance(v: float) -> float:
        return min((abs(math.log(v / t)) for t in taken if t > 0), default=math.inf)

    ends.sort(key=lambda e: -distance(e[0]))
    lo_end, hi_end = min(e[0] for e in ends), max(e[0] for e in ends)
    ref = float(rec.get("reference_l1_alpha") or 0.0)
    if rec.get("bracket") is None and ref > 0 and not _same(ref, best):
        # no run on the far side of the target yet, and the recommender's step is capped: the first
        # extra point goes as far again beyond it
        far = best * (best / ref)
        ends.insert(0, (far, f"As far again beyond {coef} {best:.3g} (from {ref:.3g}, the run nearest the target): "
                             "no run is on the far side of the target yet and the recommended step is capped; "
                             f"trained at once with {coef} {best:.3g}."))
    m = max(n - 3, 0)
    inner: list[tuple[float, str]] = []
    for k in (m, m + 1, m + 2):  # a spacing's middle point can be the recommendation itself: the next fills in
        inner += [(math.exp(math.log(lo_end) + (math.log(hi_end) - math.log(lo_end)) * i / (k + 1)),
                   f"Between {lo_end:.3g} and {hi_end:.3g} (log-spaced), trained at once with {coef} {best:.3g}.")
                  for i in range(1, k + 1)]
    chosen: list[tuple[float, str]] = [(best, str(rec["explanation"]))]  # a repeat is _decide's to stop
    for v, why in [*ends, *inner]:
        if len(chosen) >= n:
            break
        if any(_same(v, t) for t in taken) or any(_same(v, c) for c, _ in chosen):
            continue
        chosen.append((v, why))
    return chosen[:n]


def plan_round(camp: Any, start: float, notify: Callable[..., None]) -> None:
    """Append the next round's iterations to ``camp`` (``camp.parallel`` of them, fewer when the run
    budget or the distinct values run out; always at least one)."""
    n = max(1, min(camp.parallel, camp.max_runs - len(camp.iterations)))
    rnd = max((it.round for it in camp.iterations), default=0) + 1
    rec = camp.next_recommendation
    taken = [float(it.l1_alpha) for it in camp.iterations]
    if rec is None:
        values = [(v, "Starting config." if i == 0 else
                   f"Starting round: the starting {camp.coefficient} {start:.3g} x {v / start:.3g}, trained at once "
                   "with it so the first fit has runs on both sides of the target.")
                  for i, v in enumerate(first_round(start, n))]
        values = [(v, why) for v, why in values if not any(_same(v, t) for t in taken)] or values[:1]
    else:
        values = round_values(rec, n, taken)
    for v, why in values:
        index = len(camp.iterations) + 1
        it = Iteration(index=index, run_id=run_name(index, v, camp.coefficient), l1_alpha=v, why=why,
                       recommendation=rec, total_steps=camp.total_steps, round=rnd)
        camp.iterations.append(it)
        notify("plan", camp, it)


__all__ = ["config_for", "first_round", "plan_round", "round_values", "run_name"]
