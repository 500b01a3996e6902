"""An independent referee of ``analysis.json`` claims (``docs/claims.md``; issue 10).

It reads a run's raw log on its own with polars, following the README's "Run directory format"
(not through sae_report's reader, binning or analysis), and recomputes every claim of an analysis
document (schema_version 2). ``check_document`` returns human-readable problems, each prefixed by
the claim's location in the document (``findings[3].claims.trough: ...``); an empty list means
every number is true.

Only ``sae_report.analysis.claims.render`` (and the ``Claim`` record it formats) is imported, for
the check that a sentence's text is its template rendered: that is formatting, not computation.
The raw log reader lives in ``claimcheck_log``; this module holds the claim and document checks.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np
import polars as pl

from claimcheck_log import RawLog, as_float, as_step, says as _says, same, show as _show

try:
    from sae_report.analysis.claims import Claim, render
except ImportError:  # the analysis package does not import (mid-edit): load the formatting module alone
    import importlib.util
    import sys
    from pathlib import Path
    _spec = importlib.util.spec_from_file_location("_claimcheck_render", Path(__file__).resolve().parents[1]
                                                   / "sae_report" / "analysis" / "claims.py")
    _mod = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)  # registered for dataclasses
    _spec.loader.exec_module(_mod)
    Claim, render = _mod.Claim, _mod.render

__all__ = ["RawLog", "check_claim", "check_document", "same"]

DERIVED = frozenset({"ratio", "difference", "median_of", "count_of", "count_nonnull_of"})
SPAN_STATS = frozenset({"median", "mean", "std", "min", "max", "quantile", "count_nonfinite", "first_step_below",
                        "first_step_above", "first_step_nonfinite", "count_events"})
STEP_FIELD_STATS = frozenset({"value", "first", "last", "min", "max", "event_step", "input_ratio"})
THRESHOLD_STATS = frozenset({"first_step_below", "first_step_above", "quantile"})
EXACT_STATS = frozenset({"count_nonfinite", "first_step_below", "first_step_above", "first_step_nonfinite",
                         "count_events", "count_of", "count_nonnull_of", "event_step"})
LOG_STATS = frozenset({"value", "first", "last"}) | SPAN_STATS - {"count_events"}
_UNITS = "pct|points|count|steps|step|x|sig|features"
_PLACEHOLDER = re.compile(r"\{(\w+)(?:\.(step|start_step|end_step|threshold))?(?::(" + _UNITS + r"))?\}")
_BRACES = re.compile(r"\{[^{}]*\}")
_WORD = re.compile(r"[^\W\d]\w*")


# --- one claim -----------------------------------------------------------------------------------


def _d_sae(doc: Mapping[str, Any], raw: RawLog) -> float | None:
    run = doc.get("run") if isinstance(doc.get("run"), Mapping) else {}
    for v in (run.get("d_sae"), raw.config.get("d_sae")):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


def _span_desc(stat: str, metric: str, a: int | None, b: int | None, threshold: Any = None) -> str:
    what = f"{stat} {threshold}" if stat in ("first_step_below", "first_step_above") else stat
    return f"{what} of {metric} over [{'-' if a is None else a}, {'-' if b is None else b}]"


def _unused_fields(claim: Mapping[str, Any], stat: str) -> str | None:
    """Every step or threshold a claim carries must be one its statistic defines (a template
    could show it, and nothing could check it otherwise)."""
    extra = []
    if stat not in STEP_FIELD_STATS and claim.get("step") is not None:
        extra.append("step")
    if stat not in SPAN_STATS:
        extra += [f for f in ("start_step", "end_step") if claim.get(f) is not None]
    if stat not in THRESHOLD_STATS and claim.get("threshold") is not None:
        extra.append("threshold")
    return f"{stat} claim carries {', '.join(extra)}, which {stat} does not define" if extra else None


def _check_derived(claim: Mapping[str, Any], stat: str, claimed: float | None,
                   siblings: Mapping[str, Any]) -> str | None:
    of = list(claim.get("of") or [])
    missing = [n for n in of if not isinstance(siblings.get(n), Mapping)]
    if missing:
        return f"{stat} names {missing}, not claims of the same mapping"
    try:
        vals = [as_float(siblings[n].get("value")) for n in of]
    except ValueError as exc:
        return f"{stat} of {of}: a sibling value is not a number ({exc})"
    if stat in ("ratio", "difference"):
        if len(vals) != 2:
            return f"{stat} needs two names in of, has {of}"
        a, b = vals
        if a is None or b is None or (stat == "ratio" and b == 0):
            truth = None
        else:
            truth = a / b if stat == "ratio" else a - b
    elif stat == "median_of":
        present = [v for v in vals if v is not None]
        truth = float(pl.Series(present, dtype=pl.Float64).median()) if present else None
        if present and any(math.isnan(v) for v in present):
            truth = math.nan
    elif stat == "count_of":
        truth = float(len(of))
    else:
        truth = float(sum(v is not None for v in vals))
    if same(truth, claimed, exact=stat in EXACT_STATS):
        return None
    op = {"ratio": " / ", "difference": " - "}.get(stat, ", ")
    return _says(f"{stat} of {op.join(of)}", truth, claimed)


def _check_log_stat(claim: Mapping[str, Any], stat: str, claimed: float | None, raw: RawLog,
                    d_sae: float | None) -> str | None:
    metric = str(claim.get("metric") or "")
    steps, vals = raw.column(metric, d_sae)
    a, b = as_step(claim.get("start_step")), as_step(claim.get("end_step"))
    claimed_step = as_step(claim.get("step"))
    if stat == "value":
        if claimed_step is None:
            return f"value of {metric} has no step"
        truth = raw.cell(metric, claimed_step, d_sae)
        return None if same(truth, claimed) else _says(f"value of {metric} at step {claimed_step}", truth, claimed)
    if stat in ("first", "last"):
        i = 0 if stat == "first" else len(steps) - 1
        truth, t_step = (float(vals[i]), int(steps[i])) if len(steps) else (None, None)
        if t_step != claimed_step:
            return f"{stat} of {metric} is logged at step {t_step}, analysis says step {claimed_step}"
        return None if same(truth, claimed) else _says(f"{stat} of {metric} (step {t_step})", truth, claimed)
    inside = pl.Series(steps).is_between(a if a is not None else -2**62, b if b is not None else 2**62)
    st, v = pl.Series(steps).filter(inside), pl.Series(vals, dtype=pl.Float64).filter(inside)
    fin = v.is_finite()
    desc = _span_desc(stat, metric, a, b, claim.get("threshold"))
    t_step = None
    if stat == "count_nonfinite":
        truth = float((~fin).sum())
    elif stat == "first_step_nonfinite":
        bad = st.filter(~fin)
        truth = float(bad[0]) if len(bad) else None
    elif stat in ("first_step_below", "first_step_above"):
        try:
            thr = as_float(claim.get("threshold"))
        except ValueError:
            thr = None
        if thr is None:
            return f"{desc}: no threshold"
        fv, fs = v.filter(fin), st.filter(fin)
        hit = fs.filter(fv < thr if stat == "first_step_below" else fv > thr)
        truth = float(hit[0]) if len(hit) else None
    else:
        fv, fs = v.filter(fin), st.filter(fin)
        if not len(fv):
            truth = None
        elif stat in ("min", "max"):
            k = int(fv.arg_min() if stat == "min" else fv.arg_max())  # the first occurrence
            truth, t_step = float(fv[k]), int(fs[k])
        elif stat == "quantile":
            try:
                q = as_float(claim.get("threshold"))
            except ValueError:
                q = None
            if q is None or not 0 <= q <= 1:
                return f"{desc}: no quantile in [0, 1]"
            truth = float(fv.quantile(q, interpolation="linear"))
        else:
            truth = float({"median": fv.median, "mean": fv.mean, "std": lambda: fv.std(ddof=0)}[stat]())
    if not same(truth, claimed, exact=stat in EXACT_STATS):
        return _says(desc, truth, claimed)
    if stat in ("min", "max") and t_step != claimed_step:
        return f"{desc} is first reached at step {t_step}, analysis says step {claimed_step}"
    return None


def check_claim(claim: Mapping[str, Any], raw: RawLog, doc: Mapping[str, Any],
                siblings: Mapping[str, Any]) -> str | None:
    """Recompute one claim (a dict as stored in ``analysis.json``): None when it is true, else what
    is wrong. Derived claims are computed from ``siblings``' document values; ``config`` claims
    from ``doc["run"]["config"]``."""
    if not isinstance(claim, Mapping):
        return f"not a claim mapping: {claim!r}"
    stat = str(claim.get("stat"))
    try:
        claimed = as_float(claim.get("value"))
        for f in ("step", "start_step", "end_step"):
            as_step(claim.get(f))
    except ValueError as exc:
        return f"{stat} claim is malformed: {exc}"
    if stat not in DERIVED | LOG_STATS | {"count_events", "config", "event_step", "input_ratio"}:
        return f"unknown stat {stat!r}"
    unused = _unused_fields(claim, stat)
    if unused:
        return unused
    if stat in DERIVED:
        return _check_derived(claim, stat, claimed, siblings)
    if stat == "config":
        run = doc.get("run") if isinstance(doc.get("run"), Mapping) else {}
        cfg = run.get("config") if isinstance(run.get("config"), Mapping) else raw.config
        v = cfg.get(claim.get("metric"))
        truth = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
        return None if same(truth, claimed) else _says(f"config {claim.get('metric')}", truth, claimed)
    if stat == "event_step":
        st, kind = as_step(claim.get("step")), claim.get("event")
        if not any(e["kind"] == kind and e["step"] == st for e in raw.events):
            return f"no {kind!r} event is logged at step {st}"
        return None if same(float(st) if st is not None else None, claimed, exact=True) else _says(
            f"event_step {kind!r}", st, claimed)
    if stat == "input_ratio":
        dim = as_step(claim.get("step"))
        finite = [v for v in raw.input_absmax.values() if v is not None and math.isfinite(v)]
        if dim not in raw.input_absmax or not finite:
            return f"input dimension {dim} is not in the run's input statistics"
        truth = raw.input_absmax[dim] / float(np.median(finite))
        return None if same(truth, claimed) else _says(f"input_ratio of dimension {dim}", truth, claimed)
    if stat == "count_events":
        a, b = as_step(claim.get("start_step")), as_step(claim.get("end_step"))
        kind = claim.get("event")
        truth = float(sum(e["kind"] == kind and (a is None or e["step"] >= a) and (b is None or e["step"] <= b)
                          for e in raw.events))
        return None if same(truth, claimed, exact=True) else _says(
            f"count_events {kind!r} over [{a}, {b}]", truth, claimed)
    return _check_log_stat(claim, stat, claimed, raw, _d_sae(doc, raw))


# --- the document --------------------------------------------------------------------------------


def _to_claim(d: Mapping[str, Any]) -> Claim:
    """A ``Claim`` record from its stored dict (for rendering only)."""
    return Claim(metric=str(d.get("metric") or ""), stat=d.get("stat"), value=as_float(d.get("value")),
                 step=as_step(d.get("step")), start_step=as_step(d.get("start_step")),
                 end_step=as_step(d.get("end_step")), threshold=as_float(d.get("threshold")),
                 event=d.get("event"), of=tuple(d.get("of") or ()), unit=d.get("unit") or "")


def _check_sentence(node: Mapping[str, Any], path: str, out: list[str]) -> None:
    """Rule (c): placeholders name sibling claims, no literal digits, text is the rendering."""
    tmpl = node.get("template")
    p = f"{path}.template" if path else "template"
    if not isinstance(tmpl, str):
        out.append(f"{p}: not a string")
        return
    claims = node.get("claims") if isinstance(node.get("claims"), Mapping) else {}
    ok = True
    for br in _BRACES.findall(tmpl):
        if not _PLACEHOLDER.fullmatch(br):
            out.append(f"{p}: malformed placeholder {br!r}")
            ok = False
    missing = [m.group(1) for m in _PLACEHOLDER.finditer(tmpl) if not isinstance(claims.get(m.group(1)), Mapping)]
    if missing:
        out.append(f"{p}: placeholders {missing} name no claim of the sibling claims")
        ok = False
    # a digit inside a word that starts with a letter names a metric (L0, l0_frac), not a number
    digits = "".join(ch for ch in _WORD.sub("", _PLACEHOLDER.sub("", tmpl)) if ch.isdigit())
    if digits:
        out.append(f"{p}: literal digits {digits!r} outside placeholders")
    if not ok:
        return
    try:
        rendered = render(tmpl, {k: _to_claim(v) for k, v in claims.items() if isinstance(v, Mapping)})
    except (ValueError, TypeError, KeyError) as exc:
        out.append(f"{p}: cannot be rendered ({exc})")
        return
    for key in ("text", "explanation"):
        if key in node and node[key] != rendered:
            out.append(f"{path}.{key}: is {node[key]!r}, the template renders {rendered!r}")


def _check_repeats(values: Mapping[str, Any], claims: Mapping[str, Any], path: str, out: list[str],
                   skip: tuple[str, ...] = ()) -> None:
    """Numbers repeated next to claims under a claim's name must equal the claim's value."""
    for name, v in values.items():
        c = claims.get(name)
        if name in skip or name == "claims" or not isinstance(c, Mapping) or isinstance(v, (Mapping, list, bool)):
            continue
        try:
            a, b = as_float(c.get("value")), as_float(v)
        except ValueError:
            continue
        if not same(a, b):
            out.append(f"{path}.{name}: is {_show(b)}, its claim says {_show(a)}")


def _walk(node: Any, path: str, raw: RawLog, doc: Mapping[str, Any], out: list[str]) -> None:
    if isinstance(node, list):
        for i, v in enumerate(node):
            _walk(v, f"{path}[{i}]", raw, doc, out)
        return
    if not isinstance(node, Mapping):
        return
    if "template" in node and ("text" in node or "explanation" in node):
        _check_sentence(node, path, out)
    if isinstance(node.get("claims"), Mapping) and isinstance(node.get("evidence"), Mapping):
        _check_repeats(node["evidence"], node["claims"], f"{path}.evidence", out)
    for key, v in node.items():
        p = f"{path}.{key}" if path else str(key)
        if key == "claims" and isinstance(v, Mapping):
            order = sorted(v, key=lambda n: isinstance(v[n], Mapping) and v[n].get("stat") in DERIVED)
            for name in order:  # the log's claims first, then those derived from them
                msg = check_claim(v[name], raw, doc, v)
                if msg:
                    out.append(f"{p}.{name}: {msg}")
        elif key == "claim" and isinstance(v, Mapping):
            msg = check_claim(v, raw, doc, {})
            if msg:
                out.append(f"{p}: {msg}")
        else:
            _walk(v, p, raw, doc, out)


def _check_tables(doc: Mapping[str, Any], raw: RawLog, out: list[str]) -> None:
    """Rules (a) step table, (b) summary finals, (d) targets."""
    d_sae = _d_sae(doc, raw)
    for i, row in enumerate(doc.get("step_table") or []):
        p = f"step_table[{i}]"
        try:
            step = as_step(row.get("step"))
        except ValueError:
            step = None
        if step is None or not raw.has_step(step):
            out.append(f"{p}.step: {row.get('step')!r} is not a step logged in the raw metrics")
            continue
        for m, v in (row.get("values") or {}).items():
            truth = raw.cell(m, step, d_sae)
            try:
                claimed = as_float(v)
            except ValueError:
                out.append(f"{p}.values.{m}: {v!r} is not a number")
                continue
            if not same(truth, claimed):
                out.append(f"{p}.values.{m}: " + _says(f"the cell of {m} at step {step}", truth, claimed))
    summary = doc.get("summary") if isinstance(doc.get("summary"), Mapping) else {}
    for m, s in summary.items():
        if not isinstance(s, Mapping):
            continue
        if "final" in s:
            steps, vals = raw.column(m, d_sae)
            truth = float(vals[-1]) if len(vals) else None
            try:
                ok = same(truth, as_float(s["final"]))
            except ValueError:
                ok = False
            if not ok:
                out.append(f"summary.{m}.final: the last logged cell of {m} is {_show(truth)}, "
                           f"analysis says {s['final']!r}")
        if isinstance(s.get("claims"), Mapping):
            _check_repeats(s, s["claims"], f"summary.{m}", out, skip=("final",))
    for i, t in enumerate(doc.get("targets") or []):
        if isinstance(t, Mapping) and isinstance(t.get("claim"), Mapping):
            try:
                a, b = as_float(t["claim"].get("value")), as_float(t.get("result"))
            except ValueError as exc:
                out.append(f"targets[{i}].result: {exc}")
                continue
            if not same(a, b):
                out.append(f"targets[{i}].result: is {_show(b)}, its claim's value is {_show(a)}")


def check_document(doc: Mapping[str, Any], raw: RawLog) -> list[str]:
    """Every problem in an ``analysis.json`` document (schema_version 2) against the raw log."""
    out: list[str] = []
    if doc.get("schema_version") != 2:
        out.append(f"schema_version: {doc.get('schema_version')!r}, expected 2")
    _walk(doc, "", raw, doc, out)
    _check_tables(doc, raw, out)
    return out
