"""Every chart of every report, as altair charts (no I/O), by concept:

- ``style``: the colours and the step-axis zoom every chart shares (``TARGET_COLOR``, ``zoom``).
- ``timeline``: the run report's time charts (L0, dead features, loss, explained variance and the
  spliced-in LM loss, schedules, shrinkage, feature density, dense latents) with their shared markers and phases, and its two per-run charts (feature frequency,
  input dimensions); ``spec_of`` turns a chart into its Vega-Lite dict quickly.
- ``fit``: the l1_alpha-vs-L0 chart of the comparison and campaign reports (``l1_l0_chart``,
  ``smooth_curve``).
- ``runs``: the comparison's charts of several runs (``frontier_chart``: sparsity against fidelity;
  ``overlay_chart``: one metric of every run on one step axis).

``from sae_report.report import charts`` then ``charts.<name>`` reaches all of them.
"""

from .fit import l1_l0_chart, smooth_curve
from .runs import frontier_chart, overlay_chart
from .style import (ALERT_COLOR, BASELINE_COLOR, LINE, MUTED_COLOR, RUN_COLOR, SECOND_COLOR, TARGET_COLOR,
                    THIRD_COLOR, zoom)
from .timeline import (HEIGHT, LABEL_ROWS, MARKER_COLORS, MARKER_KINDS, MAX_MARKER_LABELS, MAX_MARKERS,
                       STRIP_HEIGHT, WIDTH, Timeline, dead_chart, dense_chart, density_change_chart, density_chart,
                       fidelity_chart,
                       frequency_chart, input_dims_chart, l0_chart, loss_chart, schedule_chart, shrinkage_chart,
                       spec_of)

__all__ = [
    "ALERT_COLOR", "BASELINE_COLOR", "HEIGHT", "LABEL_ROWS", "LINE", "MARKER_COLORS", "MARKER_KINDS",
    "MAX_MARKERS", "MAX_MARKER_LABELS", "MUTED_COLOR", "RUN_COLOR", "SECOND_COLOR", "STRIP_HEIGHT",
    "TARGET_COLOR", "THIRD_COLOR", "Timeline", "WIDTH", "dead_chart", "dense_chart", "density_change_chart", "density_chart",
    "fidelity_chart", "frequency_chart",
    "frontier_chart", "input_dims_chart", "l0_chart", "l1_l0_chart", "loss_chart", "overlay_chart",
    "schedule_chart", "shrinkage_chart", "smooth_curve", "spec_of", "zoom",
]
