"""Recommending the next run: the l1_alpha fit across runs (``fit``), rules from a run's findings
(``rules``) and the next config (``nextconfig``). Comparing runs and putting these together
(``sae-report recommend``) is ``sae_report.compare``; drawing them is ``sae_report.report``.

Nothing here imports torch; ``nextconfig`` validates against ``trainer.config`` when present.
"""

from .fit import (DEFAULT_ELASTICITY, ELASTICITY_RANGE, MAX_STEP_FACTOR, SATURATION_ELASTICITY, L1Recommendation,
                  RunPoint, recommend_l1)
from .nextconfig import NextConfig, NextConfigError, next_config, write_next_config
from .rules import PastRun, past_run, rules_for
from .settled import Settled, settled_level

__all__ = [
    "DEFAULT_ELASTICITY", "ELASTICITY_RANGE", "MAX_STEP_FACTOR", "SATURATION_ELASTICITY", "L1Recommendation",
    "NextConfig", "NextConfigError", "PastRun", "RunPoint", "Settled", "next_config", "past_run",
    "recommend_l1", "rules_for", "settled_level", "write_next_config",
]

