"""``sae-report tune``: train, analyze, recommend, train again until the settled L0 is within
tolerance of the target or the run budget is spent; stoppable and restartable (state on disk)."""

from .loop import Campaign, Iteration, TuneError, tune

__all__ = ["Campaign", "Iteration", "TuneError", "tune"]
