"""Shared rendering for the comparison and campaign reports: the jinja environment over
``templates/``, chart embedding (Vega-Lite spec inline + one vegaEmbed bundle per HTML file, an
SVG file beside the Markdown), and display formatting of comparison rows.

HTML templates autoescape every value; chart specs are the only ``|safe`` content and are made
inert inside ``<script>`` (``</`` escaped).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping

import jinja2

from ..report import formatting as fm
from ..runlog import atomic_write_text, to_jsonable


def template_dirs() -> list[Path]:
    """Where templates live: the installed copy (``sae_report/templates``) or the repo's ``templates/``."""
    here = Path(__file__).resolve().parent.parent
    return [p for p in (here / "templates", here.parent / "templates") if p.is_dir()]


@functools.lru_cache(maxsize=2)
def environment(kind: str) -> jinja2.Environment:
    """Jinja environment; ``kind`` ``html`` autoescapes, ``md`` does not (values are md-escaped)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in template_dirs()]),
        autoescape=(kind == "html"), undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = lambda s: fm.md_escape(str(s))
    return env


def render(template: str, context: Mapping[str, Any]) -> str:
    """Render ``templates/<template>`` (``.html.j2`` autoescaped)."""
    kind = "html" if template.endswith(".html.j2") else "md"
    return environment(kind).get_template(template).render(**context)


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """The offline vegaEmbed bundle (inlined once per HTML report; no network)."""
    import vl_convert

    return vl_convert.javascript_bundle().replace("</script", "<\\/script")


def spec_json(chart: Any) -> str:
    """A chart's Vega-Lite spec as JSON safe inside ``<script>``."""
    spec = chart.to_dict() if hasattr(chart, "to_dict") else chart
    text = json.dumps(to_jsonable(spec), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_svg(chart: Any, path: Path) -> Path | None:
    """Render a chart to an SVG file (atomic); None when rendering is unavailable."""
    try:
        import vl_convert

        svg = vl_convert.vegalite_to_svg(chart.to_dict(), vl_version="6.4")
    except Exception:  # rendering is best effort: the HTML report carries the live chart
        try:
            import vl_convert

            svg = vl_convert.vegalite_to_svg(chart.to_dict())
        except Exception:
            return None
    atomic_write_text(path, svg)
    return path


def g3(value: Any) -> str:
    """A hyperparameter value with up to 3 significant digits (``0.005``, ``0.0383``, ``1e-04``)."""
    if not fm.is_num(value):
        return fm.sig(value)
    return f"{float(value):.3g}"


def display_rows(rows: list[Mapping[str, Any]], target_l0: float | None) -> list[dict[str, str]]:
    """Comparison rows (``RunRow`` as dicts) formatted for the templates."""
    out = []
    for r in rows:
        ratio = r.get("pct_of_target")  # one basis in every table: the settled L0 (second-half median)
        out.append({
            "id": str(r.get("id", "")),
            "l1_alpha": g3(r.get("l1_alpha")),
            "resample": fm.short_step(r.get("resample_interval")) if r.get("resample_interval") is not None else fm.DASH,
            "final_l0": fm.pct(r.get("final_l0")),
            "settled_l0": fm.pct(r.get("settled_l0")),
            "pct_target": fm.of_target(ratio),
            "second_half": (f"{fm.pct(r.get('second_half_mean_l0'))} ± {fm.pct(r.get('second_half_std_l0'))}"
                            if fm.is_num(r.get("second_half_std_l0")) else fm.pct(r.get("second_half_mean_l0"))),
            "dead": fm.whole_pct(r.get("dead_frac")),
            "loss": fm.sig(r.get("final_loss")),
            "duration": fm.duration(r.get("duration_s")),
            "status": ("excluded: " + str(r["excluded"])) if r.get("excluded") else
                      (str(r.get("status", "")) + (" (L0 unsettled)" if r.get("unstable") else "")),
        })
    return out


def recommendation_view(rec: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An ``L1Recommendation.to_dict()`` formatted for the templates."""
    if not rec:
        return None
    return {
        "l1_alpha": g3(rec["l1_alpha"]), "low": g3(rec["low"]), "high": g3(rec["high"]),
        "predicted_l0": fm.pct(rec["predicted_l0"]), "direction": str(rec["direction"]),
        "reference": str(rec.get("reference", "")), "reference_l1": g3(rec.get("reference_l1_alpha")),
        "explanation": str(rec["explanation"]), "method": str(rec.get("method", "")),
        "basis": ", ".join(str(b) for b in rec.get("basis") or []),
        "candidates": [{"name": str(k), "value": g3(v)} for k, v in (rec.get("candidates") or {}).items()],
        "warnings": [str(w) for w in rec.get("warnings") or []],
        "elasticity": fm.sig(rec.get("elasticity"), 3) if rec.get("elasticity") is not None else fm.DASH,
        "saturated": bool(rec.get("saturated")),
    }
