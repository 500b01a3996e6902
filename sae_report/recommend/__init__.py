"""Recommending the next run: the l1_alpha fit across runs (``fit``), rules from a run's findings
(``rules``), the next config (``nextconfig``) and the l1_alpha/L0 chart (``chart``).

Nothing here imports torch; ``nextconfig`` validates against ``trainer.config`` when present.
"""

from .fit import (DEFAULT_ELASTICITY, ELASTICITY_RANGE, MAX_STEP_FACTOR, SATURATION_ELASTICITY, L1Recommendation,
                  RunPoint, recommend_l1)
from .nextconfig import NextConfig, NextConfigError, next_config, write_next_config
from .rules import PastRun, past_run, rules_for
from .settled import Settled, settled_level

__all__ = [
    "DEFAULT_ELASTICITY", "ELASTICITY_RANGE", "MAX_STEP_FACTOR", "SATURATION_ELASTICITY", "L1Recommendation",
    "NextConfig", "NextConfigError", "PastRun", "RunPoint", "Settled", "l1_l0_chart", "next_config", "past_run",
    "recommend_l1", "rules_for", "settled_level", "write_next_config",
]


def __getattr__(name: str):  # the chart pulls in altair: load it on first use
    if name == "l1_l0_chart":
        from .chart import l1_l0_chart

        return l1_l0_chart
    raise AttributeError(name)
