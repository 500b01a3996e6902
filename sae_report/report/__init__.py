"""Write an analysis out: ``analysis.json``, ``report.md`` (+ ``charts/``), ``report.html``.

Flow: ``Analysis.to_dict()`` -> ``context.build_context`` (display-ready plain data) and
``figures.build_figures`` (Vega-Lite specs from the thinned series) -> jinja2 templates in
``templates/`` -> ``output.publish`` (our files only, all or nothing, never through a link).

Control and bidirectional-text characters from the run (an ANSI escape or U+202E in a run id,
config value, metric name or note) never reach a report raw: they are written as visible escapes
(``\\x1b``, ``\\u202e``) in report.md, report.html and the charts, and the report says they were there
(a note under "Not Analysed"). analysis.json keeps the exact strings, with those characters written
as JSON ``\\u`` escapes so the file is safe to view.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import unicodedata
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..analysis.result import Analysis
from .printable import DOCUMENT_UNSAFE, printable
from ..runlog import RunData
from . import output
from .points import MAX_POINTS

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

    Everything is rendered before anything is written, then ``output.publish`` writes all files or
    none: chart images of an earlier report that this tool wrote (its manifest says so) are removed,
    nothing else is; a link or a non-folder ``charts`` is refused (``output.OutputRefused``).
    """
    files = render_report(analysis, data, formats, command=command, comparison=comparison, date=date,
                          image_format=image_format, n_points=n_points)
    return output.publish(Path(out_dir), files, replace_charts="md" in formats)


def analysis_json(doc: Mapping[str, Any]) -> bytes:
    """``analysis.json``: strict JSON, non-ASCII kept, control and bidi characters as ``\\u`` escapes."""
    text = json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    return DOCUMENT_UNSAFE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text).encode("utf-8")


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
        out["analysis.json"] = analysis_json(doc)
    if "md" not in formats and "html" not in formats:
        return out
    # templates, vl_convert and altair load only when there is a document to render (not for analysis.json)
    from . import render
    from .context import build_context
    from .figures import build_figures

    ctx = build_context(doc, comparison=comparison, command=command, date=date or run_date(data),
                        run_summary=data.summary)
    found: set[str] = set()
    figures = [dataclasses.replace(f, spec=_visible(f.spec, found)) for f in build_figures(doc, data, n_points=n_points)]
    hidden = sorted(found | set(DOCUMENT_UNSAFE.findall("\n".join(_strings(ctx)))))
    if hidden:
        ctx["notes"] = list(ctx["notes"]) + [hidden_characters_note(hidden)]
    # Chart images, rendered once: the Markdown's files, and the static SVGs report.html shows to a
    # reader with JavaScript off (the interactive charts replace nothing: <noscript> holds them).
    images, failed = _images(figures, image_format if "md" in formats else "svg")
    svgs = images if image_format == "svg" or "md" not in formats else _images(figures, "svg")[0]
    if "md" in formats:
        charts = {}
        for fig in figures:
            if fig.id not in images:
                continue
            name = f"{fig.id}.{image_format}"
            out[f"{output.CHARTS_DIR}/{name}"] = images[fig.id]
            charts[fig.id] = {"id": fig.id, "title": fig.title, "caption": fig.caption,
                              "path": render.Verbatim(f"{output.CHARTS_DIR}/{name}")}
        md_ctx = {**ctx, "charts": charts, "notes": ctx["notes"] + failed}
        md = render.render("report.md.j2", md_ctx, "md")
        out["report.md"] = printable(md, keep_newlines=True).encode("utf-8")
    if "html" in formats:
        charts = {fig.id: render.chart_view(fig.id, fig.title, fig.caption, fig.spec, svgs.get(fig.id), fig.zoom)
                  for fig in figures}
        html = render.html_page("report.html.j2", {**ctx, "charts": charts},
                                finish=lambda page: printable(page, keep_newlines=True))
        out["report.html"] = html.encode("utf-8")
    return out


def hidden_characters_note(chars: Sequence[str]) -> str:
    """The report's note that the run's text held control or bidi characters, and how they are shown."""
    names = []
    for c in chars[:8]:
        name = unicodedata.name(c, "")
        names.append(f"U+{ord(c):04X}" + (f" {name}" if name else ""))
    more = f" and {len(chars) - 8} more" if len(chars) > 8 else ""
    return ("the run's text (names, config values or notes) held invisible control or bidirectional-text "
            f"characters ({', '.join(names)}{more}); they are shown as visible escapes such as "
            f"{printable(chars[0])}, so they cannot reorder, hide or restyle this report")


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def _visible(obj: Any, found: set[str]) -> Any:
    """A chart spec with its strings made visible (``printable``; Vega draws them as text); ``found`` collects."""
    if isinstance(obj, str):
        hits = DOCUMENT_UNSAFE.findall(obj)
        if not hits:
            return obj
        found.update(hits)
        return printable(obj, keep_newlines=True)
    if isinstance(obj, dict):
        return {_visible(k, found): _visible(v, found) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_visible(v, found) for v in obj]
    return obj


def _images(figures: list, image_format: str) -> tuple[dict[str, bytes], list[str]]:
    """Chart images rendered in parallel threads; a chart that fails to render is left out with a note."""
    if not figures:
        return {}, []
    from concurrent.futures import ThreadPoolExecutor

    from . import render

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
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 1e9 < value < 1e11:  # 2001-5138
            return _dt.datetime.fromtimestamp(value, _dt.timezone.utc).strftime("%Y-%m-%d")
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
