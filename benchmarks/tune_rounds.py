"""Rounds a parallel `tune` needs, on simulated L0 curves with a known answer (no training).

A campaign's wall time is its number of rounds times a run's length, when each round's runs train
at once. This drives the real round planner (``sae_report.tune.plan``) and the real recommender
(``recommend_l1``) against L0 curves whose answer is known: log L0 falls with log l1_alpha at an
elasticity between 0.4 and 2.5, with curvature, and each run's settled L0 is the curve times a
lognormal noise (3% by default). A campaign is done when a run lands within the tolerance of the
target, as ``tune`` stops. It prints, for 1, 2, 3 and 4 runs at once, the rounds and runs taken over
every (curve, start) pair side by side.

    python benchmarks/tune_rounds.py                 # 5 curves x 7 starts (1e-3 to 1), 3 noise seeds
    python benchmarks/tune_rounds.py --slots 1 2 --noise 0.05
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sae_report.recommend.curve import RunPoint  # noqa: E402
from sae_report.recommend.fit import recommend_l1  # noqa: E402
from sae_report.tune.plan import SAME_REL, first_round, round_values  # noqa: E402

TARGET, TOL = 0.05, 0.1
#: (elasticity at the answer, curvature of log L0 in log l1_alpha, the answer's l1_alpha)
CURVES = [(0.4, 0.0, 0.02), (0.8, 0.1, 0.08), (1.2, 0.2, 0.01), (1.8, -0.1, 0.2), (2.5, 0.3, 0.005)]


def curve(e: float, c: float, answer: float):  # noqa: ANN201 - the curve as a function
    def l0(l1: float) -> float:
        u = math.log(l1 / answer)
        return float(min(0.6, max(1e-4, TARGET * math.exp(-e * u - c * u * u * np.sign(u)))))
    return l0


def campaign(truth, start: float, slots: int, rng: np.random.Generator, noise: float, max_runs: int) -> tuple[int, int, bool]:  # noqa: ANN001
    """(rounds, runs, reached) of one simulated campaign."""
    points: list[RunPoint] = []
    taken: list[float] = []
    rec = None
    rounds = 0
    while len(taken) < max_runs:
        rounds += 1
        n = min(slots, max_runs - len(taken))
        values = first_round(start, n) if rec is None else [v for v, _ in round_values(rec.to_dict(), n, taken)]
        hit = False
        for v in values:
            l0 = truth(v) * math.exp(noise * rng.standard_normal())
            points.append(RunPoint(f"r{len(points)}", v, l0, noise))
            taken.append(v)
            hit = hit or abs(l0 / TARGET - 1) <= TOL
        if hit:
            return rounds, len(taken), True
        rec = recommend_l1(points, TARGET)
        if any(math.isclose(rec.l1_alpha, t, rel_tol=0.005) for t in taken):
            return rounds, len(taken), False  # tune stops: stuck / saturated
    return rounds, len(taken), False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--starts", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0])
    ap.add_argument("--noise", type=float, default=0.03, help="sd of log settled L0 (default 0.03)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-runs", type=int, default=12)
    args = ap.parse_args()
    print(f"target {100 * TARGET:g}% +- {100 * TOL:g}%, {len(CURVES)} curves x {len(args.starts)} starts x "
          f"{args.seeds} noise seeds (noise {args.noise:g}), budget {args.max_runs} runs; a value within "
          f"{100 * SAME_REL:g}% of a run is not trained again", flush=True)
    print(f"{'at once':>7} {'reached':>9} {'rounds median':>13} {'rounds mean':>11} {'rounds max':>10} "
          f"{'runs median':>11} {'runs mean':>9}")
    base_rounds = None
    for slots in args.slots:
        rows = []
        for (e, c, answer) in CURVES:
            for start in args.starts:
                for seed in range(args.seeds):
                    rng = np.random.default_rng(seed)
                    rows.append(campaign(curve(e, c, answer), start, slots, rng, args.noise, args.max_runs))
        reached = [r for r in rows if r[2]]
        rounds = [r[0] for r in reached]
        mean_rounds = statistics.mean(rounds) if rounds else float("nan")
        base_rounds = base_rounds or mean_rounds
        print(f"{slots:>7} {len(reached):>4}/{len(rows):<4} {statistics.median(rounds):>13g} {mean_rounds:>11.2f} "
              f"{max(rounds):>10} {statistics.median(r[1] for r in reached):>11g} "
              f"{statistics.mean(r[1] for r in reached):>9.2f}   rounds vs one at a time: "
              f"{base_rounds / mean_rounds:.2f}x fewer", flush=True)


if __name__ == "__main__":
    main()
