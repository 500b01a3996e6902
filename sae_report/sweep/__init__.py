"""``sae-report sweep``: one training per point of a grid of config values, as many at once as
there are device slots, each a normal run directory; restartable (state in ``sweep.json``); then
the comparison across the runs.

    plan = make_plan("my.yaml", ["l1_alpha=0.01,0.02,0.04"], out_dir="runs/sweep", devices=["cpu"], parallel=2)
    result = run_sweep(plan)
"""

from .plan import PlannedRun, SweepError, SweepPlan, make_plan
from .run import RunOutcome, SweepResult, run_sweep

__all__ = ["PlannedRun", "RunOutcome", "SweepError", "SweepPlan", "SweepResult", "make_plan", "run_sweep"]
