"""Comparing runs: the write-up's table, the finding across runs, confounders, the l1_alpha fit.

``compare_runs(paths, target_l0) -> Comparison`` (``Comparison.to_dict()`` is plain data);
``comparison_for_siblings(run_path, loaded=data)`` for ``analyze``'s "Comparison to previous trainings";
writing ``comparison.md/.html/.json`` is ``sae_report.report.comparison.write_comparison``.
"""

from .comparison import Comparison, Confounder, compare_runs, comparison_for_siblings, find_confounders, load_runs
from .runs import RunRow, expand_paths, run_row

__all__ = ["Comparison", "Confounder", "RunRow", "compare_runs", "comparison_for_siblings", "expand_paths",
           "find_confounders", "load_runs", "run_row"]

