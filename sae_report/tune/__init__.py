"""``sae-report tune``: train, analyze, recommend, train again until the settled L0 is within
tolerance of the target or the run budget is spent; stoppable and restartable (state on disk)."""

from .campaign import Campaign, Iteration, TuneError
from .loop import tune

__all__ = ["Campaign", "Iteration", "TuneError", "tune"]
