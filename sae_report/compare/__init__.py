"""Comparing runs: the write-up's table, the finding across runs, confounders, the l1_alpha fit.

``compare_runs(paths, target_l0) -> Comparison`` (``Comparison.to_dict()`` is plain data);
``comparison_for_siblings(run_path, loaded=data)`` for ``analyze``'s "Comparison to previous trainings";
``write_comparison(comp, out_dir)`` writes ``comparison.md/.html/.json``.
"""

from .comparison import Comparison, Confounder, compare_runs, comparison_for_siblings, find_confounders, load_runs
from .runs import RunRow, expand_paths, run_row

__all__ = ["Comparison", "Confounder", "RunRow", "compare_runs", "comparison_for_siblings", "expand_paths",
           "find_confounders", "load_runs", "run_row", "write_comparison"]


def write_comparison(*args, **kwargs):
    """See ``sae_report.compare.render.write_comparison`` (imported lazily: it pulls in altair)."""
    from .render import write_comparison as _write

    return _write(*args, **kwargs)
