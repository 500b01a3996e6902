"""Number and text formatting for the report: every figure a template prints is formatted here.

Templates receive strings already formatted (``"2.18%"``, ``"7,324 (89%)"``, ``"20K"``) so the
Markdown and HTML reports print the same figures. ``md_escape`` makes a user string inert Markdown
text (no HTML, no links, no table breaks) while staying readable as plain text.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

DASH = "-"


def is_num(value: Any) -> bool:
    """True for a finite int/float (bool excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sig(value: Any, digits: int = 4) -> str:
    """A number with at most ``digits`` significant digits, trailing zeros dropped (0.065, 0.01137, 10,000)."""
    if isinstance(value, str):
        return value  # non-finite values arrive as "nan"/"inf" strings from to_jsonable
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not is_num(value):
        return DASH if value is None else str(value)
    v = float(value)
    if v == 0:
        return "0"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    mag = math.floor(math.log10(abs(v)))
    if mag < -4 or mag >= 15:
        return f"{v:.{digits - 1}e}"
    decimals = max(0, digits - 1 - mag)
    text = f"{v:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def pct(frac: Any, digits: int = 3) -> str:
    """A fraction as a percent with ``digits`` significant digits (0.0218 -> ``2.18%``)."""
    if not is_num(frac):
        return sig(frac)
    p = float(frac) * 100
    if p == 0:
        return "0%"
    if abs(p) >= 10 ** (digits - 1):
        return f"{p:,.0f}%"
    mag = math.floor(math.log10(abs(p)))
    return f"{p:.{max(0, digits - 1 - mag)}f}%"


def pct1(frac: Any) -> str:
    """A fraction as a percent with one decimal, as the write-up's step tables print it (``50.4%``, ``0.7%``)."""
    if not is_num(frac):
        return sig(frac)
    p = float(frac) * 100
    if p != 0 and abs(p) < 0.1:
        return pct(frac, 2)
    return f"{p:.1f}%"


def whole_pct(frac: Any) -> str:
    """A fraction as a whole percent (0.893 -> ``89%``); ``<1%`` for small non-zero values."""
    if not is_num(frac):
        return sig(frac)
    p = float(frac) * 100
    if 0 < abs(p) < 1:
        return "<1%"
    return f"{p:.0f}%"


def count(value: Any) -> str:
    """An integer count with thousands separators."""
    if not is_num(value):
        return sig(value)
    return f"{round(float(value)):,}"


def step(value: Any) -> str:
    """A training step with thousands separators (``20,000``)."""
    return count(value)


def short_step(value: Any) -> str:
    """A step in short form for prose (``20K``, ``1.5M``, ``950``)."""
    if not is_num(value):
        return sig(value)
    v = float(value)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            q = v / div
            return (f"{q:.0f}" if q.is_integer() or abs(q) >= 100 else f"{q:.1f}".rstrip("0").rstrip(".")) + unit
    return f"{v:.0f}"


def span(start: Any, end: Any) -> str:
    """A step span for headings (``Steps 0-20K``)."""
    if end is None or end == start:
        return f"Step {short_step(start)}"
    return f"Steps {short_step(start)}-{short_step(end)}"


def target_side(ratio: Any) -> str:
    """``undershoot`` / ``overshoot`` for a percent of target outside the band the analyzer calls on
    target (``AnalyzerConfig.target_ok_band``, 80% to 125%), else ``""``: the one rule every report,
    table and headline uses."""
    if not is_num(ratio):
        return ""
    from ..analysis.config import AnalyzerConfig

    low, high = AnalyzerConfig().target_ok_band
    return "undershoot" if ratio < 100 * low else "overshoot" if ratio > 100 * high else ""


def of_target(ratio: Any) -> str:
    """A percent of target as every table shows it: ``44% (undershoot)``, ``226% (overshoot)``,
    ``97%`` (within the on-target band, see ``target_side``); a dash when there is none."""
    if not is_num(ratio):
        return DASH
    shown = f"{float(ratio):.0f}%"
    side = target_side(ratio)
    return f"{shown} ({side})" if side else shown


def g3(value: Any) -> str:
    """A hyperparameter value with up to 3 significant digits (``0.005``, ``0.0383``, ``1e-04``)."""
    if not is_num(value):
        return sig(value)
    return f"{float(value):.3g}"


def duration(seconds: Any) -> str:
    """Seconds as ``17.4 minutes`` / ``2.3 hours`` / ``45 s``."""
    if not is_num(seconds):
        return sig(seconds)
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} minutes"
    return f"{s / 3600:.1f} hours"


def dead_text(frac: Any, d_sae: int | None, dead_count: Any = None) -> str:
    """Dead features as ``7,324 (89%)`` when the dictionary size is known, else ``89%``."""
    if not is_num(frac):
        return count(dead_count) if is_num(dead_count) else sig(frac)
    n = dead_count if is_num(dead_count) else (frac * d_sae if d_sae else None)
    if n is None:
        return whole_pct(frac)
    return f"{count(n)} ({whole_pct(frac)})"


def dead_words(frac: Any, d_sae: int | None, dead_count: Any = None) -> str:
    """Dead features as the write-up's step lines print them: ``7,646 dead (93%)``."""
    if not is_num(frac) and not is_num(dead_count):
        return f"{sig(frac)} dead"
    n = dead_count if is_num(dead_count) else (frac * d_sae if d_sae and is_num(frac) else None)
    if n is None:
        return f"{whole_pct(frac)} dead"
    if not is_num(frac):
        return f"{count(n)} dead"
    return f"{count(n)} dead ({whole_pct(frac)})"


def label(key: str) -> str:
    """An evidence key as words (``dead_before`` -> ``dead before``)."""
    return str(key).replace("_", " ").strip()


_MD_ALWAYS = re.compile(r"([\\`*\[\]|])")
_MD_HTML = re.compile(r"<(?=[A-Za-z/!?])")
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_MD_LINE_START = re.compile(r"^([#>])")
_MD_AUTOLINK = re.compile(r"(?i)\b(https?|ftp|www)([:.])")


def md_escape(text: str) -> str:
    """Make ``text`` inert inline Markdown (GFM): no HTML, links, emphasis or table breaks.

    Escapes only what could change the rendering, so ordinary text stays readable as plain text:
    ``<`` only before a tag-like character, ``_`` only at word edges, ``&`` only before an entity.
    Newlines become spaces (a newline would end a table row).
    """
    s = str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    s = _MD_ALWAYS.sub(r"\\\1", s)
    s = _MD_HTML.sub(r"\\<", s)
    s = _MD_ENTITY.sub(r"\\&", s)
    s = _MD_UNDERSCORE.sub(r"\\_", s)
    s = _MD_LINE_START.sub(r"\\\1", s)
    s = _MD_AUTOLINK.sub(lambda m: m.group(1) + "\\" + m.group(2), s)
    return s.replace("~~", "\\~\\~")  # GFM strikethrough


def fence(text: str, info: str = "") -> str:
    """A fenced code block that ``text`` cannot break out of (fence longer than any backtick run)."""
    runs = [len(m) for m in re.findall(r"`+", text)]
    ticks = "`" * max(3, (max(runs) + 1) if runs else 3)
    body = text if text.endswith("\n") else text + "\n"
    return f"{ticks}{info}\n{body}{ticks}"


def code_span(text: str) -> str:
    """An inline code span that ``text`` cannot close (backtick run longer than any inside it)."""
    s = str(text).replace("\n", " ")
    runs = [len(m) for m in re.findall(r"`+", s)]
    ticks = "`" * ((max(runs) + 1) if runs else 1)
    pad = " " if s.startswith("`") or s.endswith("`") or ticks != "`" else ""
    return f"{ticks}{pad}{s}{pad}{ticks}"


def display_rows(rows: list[Mapping[str, Any]], target_l0: float | None = None) -> list[dict[str, str]]:
    """Comparison rows (``RunRow`` as dicts) formatted for the comparison and campaign tables and the
    terminal (``target_l0`` is unused: each row carries its own percent of target)."""
    out = []
    for r in rows:
        ratio = r.get("pct_of_target")  # one basis in every table: the settled L0 (second-half median)
        out.append({
            "id": str(r.get("id", "")),
            "l1_alpha": g3(r.get("l1_alpha") if r.get("l1_alpha") is not None else r.get("k")),
            "resample": short_step(r.get("resample_interval")) if r.get("resample_interval") is not None else DASH,
            "final_l0": pct(r.get("final_l0")),
            "settled_l0": pct(r.get("settled_l0")),
            "pct_target": of_target(ratio),
            "second_half": (f"{pct(r.get('second_half_mean_l0'))} ± {pct(r.get('second_half_std_l0'))}"
                            if is_num(r.get("second_half_std_l0")) else pct(r.get("second_half_mean_l0"))),
            "dead": whole_pct(r.get("dead_frac")),
            "loss": sig(r.get("final_loss")),
            "duration": duration(r.get("duration_s")),
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
        "predicted_l0": pct(rec["predicted_l0"]), "direction": str(rec["direction"]),
        "reference": str(rec.get("reference", "")), "reference_l1": g3(rec.get("reference_l1_alpha")),
        "explanation": str(rec["explanation"]), "method": str(rec.get("method", "")),
        "basis": ", ".join(str(b) for b in rec.get("basis") or []),
        "candidates": [{"name": str(k), "value": g3(v)} for k, v in (rec.get("candidates") or {}).items()],
        "warnings": [str(w) for w in rec.get("warnings") or []],
        "elasticity": sig(rec.get("elasticity"), 3) if rec.get("elasticity") is not None else DASH,
        "saturated": bool(rec.get("saturated")),
    }
