"""The comparison's charts of several runs: the sparsity-fidelity frontier and one metric of every
run overlaid on one step axis. They take plain rows (``report.comparison`` gathers them); no I/O."""

from __future__ import annotations

from typing import Any, Sequence

import altair as alt

from .style import MUTED_COLOR, RUN_COLOR, TARGET_COLOR, zoom

#: Size of the comparison's overlay charts (the frontier is 120 px narrower and 300 high).
WIDTH, HEIGHT = 640, 230

OVERLAYS = {"l0": ("L0 (% of features active, log axis)", "log"), "dead": ("dead features (% of dictionary)", "linear"),
            "loss": ("loss", "log")}


def frontier_chart(rows: Sequence[dict[str, Any]], target_l0: float | None = None, *, fvu: bool = False,
                   width: int = WIDTH - 120) -> alt.LayerChart:
    """Settled L0 (log axis) against settled explained variance, one point per run, the Pareto
    frontier as a step line, the target L0 as a vertical rule (the target colour). ``rows``:
    ``{"run", "l0_pct", "ev_pct", "front"}`` with ``front`` ``on the frontier`` or ``dominated``;
    ``fvu``: explained variance was computed as 1 - FVU."""
    rows = list(rows)
    frontier = sorted((r for r in rows if r["front"] == "on the frontier"), key=lambda r: r["l0_pct"])
    ytitle = "settled explained variance = 1 - FVU (%)" if fvu else "settled explained variance (%)"
    x = alt.X("l0_pct:Q", title="settled L0, % of features (log)", scale=alt.Scale(type="log", nice=False, padding=20))
    y = alt.Y("ev_pct:Q", title=ytitle, scale=alt.Scale(zero=False, nice=True, padding=20))
    layers: list[Any] = []
    if len(frontier) >= 2:
        layers.append(alt.Chart(alt.Data(values=frontier)).mark_line(interpolate="step-after", color=RUN_COLOR,
                                                                       strokeWidth=1.5).encode(x=x, y=y))
    if target_l0:
        tv = 100 * target_l0
        layers.append(alt.Chart(alt.Data(values=[{"l0_pct": tv, "what": f"target L0 {tv:.3g}%"}])).mark_rule(
            color=TARGET_COLOR, strokeDash=[6, 4], strokeWidth=1.5).encode(x=x, tooltip=[alt.Tooltip("what:N")]))
    base = alt.Chart(alt.Data(values=rows))
    tip = [alt.Tooltip("run:N"), alt.Tooltip("l0_pct:Q", title="settled L0 %", format=".3g"),
           alt.Tooltip("ev_pct:Q", title="settled explained variance %", format=".4g"), alt.Tooltip("front:N")]
    layers.append(base.mark_circle(size=90).encode(
        x=x, y=y, tooltip=tip,
        color=alt.Color("front:N", title=None, scale=alt.Scale(domain=["on the frontier", "dominated"],
                                                                range=[RUN_COLOR, MUTED_COLOR]),
                        legend=alt.Legend(orient="bottom"))))
    layers.append(base.mark_text(dx=8, dy=-8, align="left", fontSize=10).encode(x=x, y=y, text="run:N"))
    sub = "one point per run (second-half medians); the line is the Pareto frontier: sparser and more faithful is better"
    return alt.layer(*layers).properties(width=width, height=300, title=alt.TitleParams(
        "Sparsity against fidelity", subtitle=sub, anchor="start"))


def overlay_chart(kind: str, rows: Sequence[dict[str, Any]], target_l0: float | None = None, *,
                  width: int = WIDTH, height: int = HEIGHT) -> alt.LayerChart | None:
    """One metric of every run over the training steps, a colour per run, zoom and pan on the step
    axis. ``kind``: ``l0`` (percent), ``dead`` (percent) or ``loss``; ``rows``: ``{"step", "value", "run"}``."""
    rows = list(rows)
    if not rows:
        return None
    title, scale = OVERLAYS[kind]
    if scale == "log" and not all(r["value"] > 0 for r in rows):
        scale = "linear"
    runs = list(dict.fromkeys(r["run"] for r in rows))
    x = alt.X("step:Q", title="Training step", scale=alt.Scale(nice=False, zero=False),
              axis=alt.Axis(labelExpr="datum.value == 0 ? '0' : format(datum.value, '~s')", labelOverlap=True))
    y = alt.Y("value:Q", title=title, scale=alt.Scale(type=scale) if scale == "log" else alt.Scale(zero=True))
    line = alt.Chart(alt.Data(values=rows)).mark_line(strokeWidth=1.3, clip=True).encode(
        x=x, y=y, color=alt.Color("run:N", title="run", sort=runs, legend=alt.Legend(orient="bottom")),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("step:Q", format=","), alt.Tooltip("value:Q", format=".4~g")],
    ).properties(name=f"zoom_{kind}_view").add_params(zoom(f"zoom_{kind}"))
    layers: list[Any] = [line]
    if kind == "l0" and target_l0:
        tv = 100 * target_l0
        layers.append(alt.Chart(alt.Data(values=[{"target": tv, "what": f"target L0 {tv:.3g}%"}])).mark_rule(
            color=TARGET_COLOR, strokeWidth=1.5).encode(y="target:Q", tooltip=[alt.Tooltip("what:N")]))
    names = {"l0": "L0", "dead": "Dead features", "loss": "Loss"}
    return alt.layer(*layers).properties(width=width, height=height, title=alt.TitleParams(
        f"{names[kind]} of every run over training steps", anchor="start",
        subtitle="green rule: target L0" if kind == "l0" and target_l0 else alt.Undefined))
