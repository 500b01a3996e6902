"""What every chart of every report shares: colours and the step-axis zoom.

The run report's time charts, the l1_alpha/L0 chart (comparison, campaign), the comparison's
sparsity-fidelity and overlay charts and the SAE-Track charts take their colours from here.
"""

from __future__ import annotations

from typing import Any

import altair as alt

#: A metric's line in the run report's time charts.
LINE = "#1f77b4"
#: The colour of a target, in every chart of every report (L0 target rule, the l1_alpha/L0 chart's
#: target, the sparsity-fidelity chart): never the red of a finding.
TARGET_COLOR = "#2ca02c"
#: Runs (points, fitted curves, the main series of a chart).
RUN_COLOR = "#4c78a8"
#: Runs left out (excluded from a fit, dominated on the frontier).
MUTED_COLOR = "#bbbbbb"
#: The recommended point and its interval; a finding's marker.
ALERT_COLOR = "#d62728"
#: A second and third series beside ``RUN_COLOR`` (SAE-Track: matching by assignment, controls, dead features).
SECOND_COLOR = "#f58518"
THIRD_COLOR = "#e45756"
#: A baseline drawn for comparison (SAE-Track: the fresh SAE).
BASELINE_COLOR = "#9e9e9e"


def zoom(name: str) -> Any:
    """Zoom and pan on the step axis: an interval selection bound to the x scale (wheel to zoom, drag
    to pan, double-click to reset in the HTML report; the static images show the whole run)."""
    return alt.selection_interval(name=name, bind="scales", encodings=["x"])
