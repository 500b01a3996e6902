"""The l1_alpha-vs-L0 chart (log-log) of the comparison and campaign reports: runs, the fitted
monotone curve, the target, the recommended point with its interval. Returns an altair chart; no I/O."""

from __future__ import annotations

import math
from typing import Any, Sequence

import altair as alt
import numpy as np
from scipy.interpolate import PchipInterpolator

from ...recommend.fit import L1Recommendation, RunPoint
from .style import ALERT_COLOR, MUTED_COLOR, RUN_COLOR, TARGET_COLOR


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def smooth_curve(points: Sequence[tuple[float, float]], per_segment: int = 16) -> list[dict[str, float]]:
    """The fitted monotone curve through (l1_alpha, L0 fraction) points, sampled along the
    monotone cubic (PCHIP) in log-log space, as chart rows (``l1_alpha``, ``l0_pct``)."""
    pts: list[tuple[float, float]] = []
    for p in sorted(points):  # one point per l1_alpha (a repeated one would stop the interpolation)
        if not pts or p[0] != pts[-1][0]:
            pts.append(p)
    if len(pts) < 2:
        return [{"l1_alpha": x, "l0_pct": 100 * y} for x, y in pts]
    x = np.log([p[0] for p in pts])
    curve = PchipInterpolator(x, np.log([p[1] for p in pts]))
    rows = []
    for i in range(len(x) - 1):
        h = x[i + 1] - x[i]
        for t in np.linspace(0.0, 1.0, per_segment, endpoint=i == len(x) - 2):
            xx = x[i] + t * h
            rows.append({"l1_alpha": float(math.exp(xx)), "l0_pct": float(100 * math.exp(float(curve(xx))))})
    return rows


def l1_l0_chart(points: Sequence[RunPoint], recommendation: L1Recommendation | None = None,
                target_l0: float | None = None, *, excluded: Sequence[RunPoint] = (),
                labels: dict[str, str] | None = None, title: str | None = None,
                width: int = 520, height: int = 320, coefficient: str = "l1_alpha") -> alt.LayerChart:
    """Runs as points (settled L0 in percent), excluded runs greyed, the fitted curve through the
    runs, the target as a horizontal rule and the recommended l1_alpha as a diamond with its
    interval. ``labels`` maps run id -> point label (default: the id)."""
    labels = labels or {}
    rows = [{"run": p.run_id, "label": labels.get(p.run_id, p.run_id), "l1_alpha": p.l1_alpha,
             "l0_pct": 100 * p.l0, "used": "used in fit"} for p in points if _finite(p.l1_alpha) and _finite(p.l0)]
    rows += [{"run": p.run_id, "label": labels.get(p.run_id, p.run_id), "l1_alpha": p.l1_alpha,
              "l0_pct": 100 * p.l0, "used": "excluded"} for p in excluded if _finite(p.l1_alpha) and _finite(p.l0)]
    xs = [r["l1_alpha"] for r in rows]
    ys = [r["l0_pct"] for r in rows]
    if recommendation is not None:
        xs += [recommendation.low, recommendation.high, recommendation.l1_alpha]
        ys += [100 * recommendation.predicted_l0]
    if target_l0:
        ys.append(100 * target_l0)
    xs = [v for v in xs if _finite(v)] or [1e-3, 1e-1]
    ys = [v for v in ys if _finite(v)] or [1.0, 10.0]
    xdom = [min(xs) / 1.4, max(xs) * 1.4]
    ydom = [min(ys) / 1.4, max(ys) * 1.4]
    coef = getattr(recommendation, "coefficient", None) or coefficient
    title = title or f"L0 against {coef} (log-log)"
    x = alt.X("l1_alpha:Q", title=f"{coef} (log)", scale=alt.Scale(type="log", domain=xdom))
    y = alt.Y("l0_pct:Q", title="settled L0, % of features (log)", scale=alt.Scale(type="log", domain=ydom))
    layers: list[alt.Chart] = []
    if recommendation is not None and len(recommendation.curve) >= 2:
        curve = smooth_curve([(c["l1_alpha"], c["l0"]) for c in recommendation.curve
                              if _finite(c["l1_alpha"]) and _finite(c["l0"])])
        layers.append(alt.Chart(alt.Data(values=curve)).mark_line(color=RUN_COLOR, strokeWidth=2)
                      .encode(x=x, y=y))
    if target_l0:
        layers.append(alt.Chart(alt.Data(values=[{"l0_pct": 100 * target_l0, "what": f"target {100 * target_l0:.3g}%"}]))
                      .mark_rule(color=TARGET_COLOR, strokeDash=[6, 4], strokeWidth=1.5).encode(y=y, tooltip=[alt.Tooltip("what:N")]))
    if rows:
        base = alt.Chart(alt.Data(values=rows))
        layers.append(base.mark_circle(size=90).encode(
            x=x, y=y,
            color=alt.Color("used:N", title=None,
                            scale=alt.Scale(domain=["used in fit", "excluded"], range=[RUN_COLOR, MUTED_COLOR])),
            tooltip=[alt.Tooltip("run:N"), alt.Tooltip("l1_alpha:Q", format=".3g"),
                     alt.Tooltip("l0_pct:Q", title="settled L0 %", format=".3g")]))
        layers.append(base.mark_text(dx=8, dy=-8, align="left", fontSize=10).encode(x=x, y=y, text="label:N"))
    if recommendation is not None:
        rec = {"l1_alpha": recommendation.l1_alpha, "low": recommendation.low, "high": recommendation.high,
               "l0_pct": 100 * recommendation.predicted_l0,
               "what": f"recommended {recommendation.l1_alpha:.3g} ({recommendation.low:.3g}-{recommendation.high:.3g})"}
        rb = alt.Chart(alt.Data(values=[rec]))
        layers.append(rb.mark_rule(color=ALERT_COLOR, strokeWidth=2).encode(
            x=alt.X("low:Q", scale=alt.Scale(type="log", domain=xdom)), x2="high:Q", y=y))
        layers.append(rb.mark_point(shape="diamond", size=160, filled=True, color=ALERT_COLOR).encode(
            x=x, y=y, tooltip=[alt.Tooltip("what:N"), alt.Tooltip("l0_pct:Q", title="predicted L0 %", format=".3g")]))
        layers.append(rb.mark_text(dx=8, dy=12, align="left", fontSize=10, color=ALERT_COLOR).encode(
            x=x, y=y, text="what:N"))
    if not layers:
        layers.append(alt.Chart(alt.Data(values=[{"l1_alpha": 0.01, "l0_pct": 1.0}])).mark_point(opacity=0).encode(x=x, y=y))
    return alt.layer(*layers).properties(title=title, width=width, height=height)
