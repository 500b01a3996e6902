"""Write an analysis out: ``analysis.json``, ``report.md`` (+ ``charts/``), ``report.html``.

Flow: ``Analysis.to_dict()`` -> ``context.build_context`` (display-ready plain data) and
``figures.build_figures`` (Vega-Lite specs from the thinned series) -> jinja2 templates in
``templates/`` -> ``output`` (atomic files, chart folder swapped whole).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

from markupsafe import Markup

from ..analysis.result import Analysis
from ..runlog import RunData
from . import output, render
from .context import build_context
from .figures import build_figures
from .series import MAX_POINTS

FORMATS = ("md", "html", "json")
IMAGE_FORMATS = ("svg", "png")

__all__ = ["FORMATS", "write_report", "render_report"]


def write_report(analysis: Analysis, data: RunData, out_dir: Path, formats: Sequence[str] = FORMATS,
                 command: str = "", comparison: Any = None, *, date: str | None = None,
                 image_format: str = "svg", n_points: int = MAX_POINTS) -> list[Path]:
    """Write the chosen formats into ``out_dir`` and return the files written.

    - ``formats``: any of ``md`` (``report.md`` + ``charts/*.svg``), ``html`` (one self-contained
      ``report.html``), ``json`` (``analysis.json``).
    - ``command``: the command line that regenerates the report (printed in the footer).
    - ``comparison``: the recommender's comparison (dataclass, object with ``to_dict`` or dict with
      ``rows``, ``key_finding``, ``warnings``); its section is left out when None.
    - ``date``: the date printed in the title block (default: the run's end date from
      ``summary.json`` when recorded, else today, UTC).
    - ``image_format``: ``svg`` or ``png`` for the Markdown's chart images.

    Everything is rendered before anything is written; each file is replaced atomically and stale
    chart images from an earlier report are removed.
    """
    files = render_report(analysis, data, formats, command=command, comparison=comparison, date=date,
                          image_format=image_format, n_points=n_points)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "md" in formats:
        charts = {k.split("/", 1)[1]: v for k, v in files.items() if k.startswith(output.CHARTS_DIR + "/")}
        if charts:
            written += output.swap_charts(out_dir, charts)
        else:
            output.remove_charts(out_dir)
    written += output.write_files(out_dir, {k: v for k, v in files.items() if "/" not in k})
    return written


def render_report(analysis: Analysis, data: RunData, formats: Sequence[str] = FORMATS, *, command: str = "",
                  comparison: Any = None, date: str | None = None, image_format: str = "svg",
                  n_points: int = MAX_POINTS) -> dict[str, bytes]:
    """Render the report in memory: relative file name -> bytes (``charts/l0.svg``, ``report.md``, ...)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown report format(s) {', '.join(map(repr, unknown))} (choose from {', '.join(FORMATS)})")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {image_format!r} (choose from {', '.join(IMAGE_FORMATS)})")
    doc = analysis.to_dict()
    out: dict[str, bytes] = {}
    if "json" in formats:
        out["analysis.json"] = (json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode("utf-8")
    if "md" not in formats and "html" not in formats:
        return out
    ctx = build_context(doc, comparison=comparison, command=command, date=date or run_date(data),
                        run_summary=data.summary)
    figures = build_figures(doc, data, n_points=n_points)
    if "md" in formats:
        images, failed = _images(figures, image_format)
        charts = {}
        for fig in figures:
            if fig.id not in images:
                continue
            name = f"{fig.id}.{image_format}"
            out[f"{output.CHARTS_DIR}/{name}"] = images[fig.id]
            charts[fig.id] = {"id": fig.id, "title": fig.title, "caption": fig.caption,
                              "path": render.Verbatim(f"{output.CHARTS_DIR}/{name}")}
        md_ctx = {**ctx, "charts": charts, "notes": ctx["notes"] + failed}
        out["report.md"] = render.render("report.md.j2", md_ctx, "md").encode("utf-8")
    if "html" in formats:
        charts = {fig.id: {"id": fig.id, "title": fig.title, "caption": fig.caption,
                           "spec_json": Markup(render.script_json(fig.spec))} for fig in figures}
        html = render.render("report.html.j2", {**ctx, "charts": charts, "bundle": Markup(render.vega_bundle())}, "html")
        out["report.html"] = html.encode("utf-8")
    return out


def _images(figures: list, image_format: str) -> tuple[dict[str, bytes], list[str]]:
    """Chart images rendered in parallel threads; a chart that fails to render is left out with a note."""
    if not figures:
        return {}, []
    from concurrent.futures import ThreadPoolExecutor

    def one(fig):
        try:
            return render.chart_image(fig.spec, image_format), ""
        except Exception as exc:  # vl_convert raises plain Exceptions; one chart must not sink the report
            return None, f"chart {fig.id} could not be rendered ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"

    with ThreadPoolExecutor(max_workers=min(4, len(figures))) as pool:
        rendered = list(pool.map(one, figures))
    images = {f.id: img for f, (img, _) in zip(figures, rendered) if img is not None}
    return images, [note for _, note in rendered if note]


def run_date(data: RunData) -> str:
    """The run's date (``YYYY-MM-DD``): its end or start time from ``summary.json``, else today (UTC)."""
    sources = [data.summary or {}, data.config or {}, (data.config or {}).get("provenance") or {}]
    for key, source in ((k, src) for src in sources if isinstance(src, dict)
                        for k in ("ended_at", "end_time", "finished_at", "started_at", "start_time", "created_at", "date")):
        value = source.get(key)
        if isinstance(value, str) and len(value) >= 10 and value[4] == "-":
            return value[:10]
        if isinstance(value, (int, float)) and value > 1e9:
            return _dt.datetime.fromtimestamp(value, _dt.timezone.utc).strftime("%Y-%m-%d")
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
