"""The template context: ``Analysis.to_dict()`` (plus the comparison) turned into display-ready plain data.

Templates only loop and print: every figure is formatted here, every optional section is either a
value or ``None``/empty so the templates can omit it cleanly (they run under ``StrictUndefined``).
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, is_dataclass
from typing import Any, Mapping

import yaml

from .. import __version__
from ..analysis.claims import claim_from_dict, format_claim, placeholders, provenance
from ..runlog import to_jsonable
from . import formatting as fm
from .proposals import LOWER_L0, RAISE_L0, comparison_table, proposed_yaml, recommendation_rows, with_l1_fit

MARKS = {"ok": "✅", "warn": "⚠️", "fail": "❌", "info": "ℹ️", "none": ""}
#: The same marks for HTML, from characters every system font has (no emoji font needed).
MARKS_HTML = {"ok": "✓", "warn": "⚠", "fail": "✗", "info": "ℹ", "none": ""}

KIND_TITLES = {
    "sparsification": "Sparsification",
    "dormancy": "Dormant start",
    "collapse": "Collapse",
    "recovery": "Recovery",
    "plateau": "Plateau",
    "oscillation": "Oscillation",
    "late_spike": "Late spike",
    "secondary_rise": "Secondary rise",
    "not_converged": "Not converged",
    "diverged": "Diverged",
    "resample_thrash": "Resampling thrash",
}

METRIC_NAMES = {
    "l0_frac": "L0", "l0": "L0", "dead_frac": "dead features", "dead": "dead features",
    "loss": "loss", "mse": "MSE", "explained_variance": "explained variance", "lr": "learning rate",
    "l1_alpha": "l1_alpha", "grad_norm": "gradient norm",
}

INTERVENTIONS = {
    "resample": "the resample", "lr_change": "the learning-rate change",
    "l1_change": "the l1_alpha change", "resume": "the resume",
}




def plain(obj: Any) -> Any:
    """A comparison (dataclass, object with ``to_dict``, or dict) as JSON-safe plain data."""
    if obj is None:
        return None
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        obj = obj.to_dict()
    elif is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    return to_jsonable(obj)


def build_context(doc: Mapping[str, Any], *, comparison: Any = None, command: str = "", date: str = "",
                  run_summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the templates print, from an ``Analysis.to_dict()`` document (and ``summary.json``)."""
    run_summary = run_summary or {}
    run = doc["run"]
    d_sae = run.get("d_sae")
    summary = doc.get("summary") or {}
    findings = [_finding(f, i) for i, f in enumerate(doc.get("findings") or [])]
    second = summary.get("l0_frac") or {}
    comp = plain(comparison)
    recs = with_l1_fit(list(doc.get("recommendations") or []), comp, run.get("config") or {})
    ctx: dict[str, Any] = {
        "title": f"Training Results Analysis: {run['id']}",
        "run": {
            "id": str(run["id"]), "path": str(run.get("path", "")), "source": str(run.get("source", "")),
            "rows": fm.count(run.get("rows")), "span": _run_span(run), "sampled": bool(run.get("sampled")),
            "d_sae": fm.count(d_sae) if d_sae else "",
            "status": str(run_summary.get("status") or ""),
            "recovery": _recovery(run_summary.get("feature_recovery")),
        },
        "date": date,
        "verdict": _verdict(doc.get("verdict")),
        "config_yaml": _yaml(run.get("config") or {}),
        "targets": [_target(t, d_sae) for t in doc.get("targets") or []],
        "direction_note": _direction_note(doc.get("targets") or []),
        "comparison": comparison_table(comp, str(run["id"])),
        "phases": _phases(doc, d_sae, findings),
        "step_table": _step_lines(doc.get("step_table") or [], d_sae),
        "second_half": _second_half(second),
        "findings": findings,
        "resampling": _resampling(doc, run.get("config") or {}),
        "root_causes": [{"title": str(rc["title"]), "text": str(rc["sentence"]["text"])}
                        for rc in doc.get("root_causes") or []],
        "recommendations": recommendation_rows(recs),
        "proposed_yaml": proposed_yaml(run.get("config") or {}, recs),
        "skipped": [{"analysis": str(s["analysis"]), "reason": str(s["reason"])} for s in doc.get("skipped") or []],
        "notes": [str(n) for n in run.get("notes") or []],
        "charts": [],
        "footer": {"version": __version__, "command": command or f"sae-report analyze {shlex.quote(str(run.get('path', '')))}",
                   "date": date},
    }
    return ctx


def _recovery(rec: Any) -> str:
    """Feature recovery on synthetic data (the trainer knows the true features) in words."""
    if not isinstance(rec, Mapping) or not fm.is_num(rec.get("mmcs")):
        return ""
    above = rec.get("frac_above_0.9")
    tail = f"; {fm.whole_pct(above)} of the true features recovered with cosine > 0.9" if fm.is_num(above) else ""
    return f"mean max cosine similarity to the true features {rec['mmcs']:.3f}{tail}"


def _run_span(run: Mapping[str, Any]) -> str:
    a, b = run.get("first_step"), run.get("last_step")
    return f"steps {fm.step(a)} to {fm.step(b)}" if a is not None and b is not None else ""


def _yaml(config: Mapping[str, Any]) -> str:
    if not config:
        return "# no config recorded\n"
    return yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)


def _is_l0(label: str) -> bool:
    return "l0" in label.lower()


def _target(t: Mapping[str, Any], d_sae: int | None) -> dict[str, str]:
    name = str(t.get("metric", ""))
    low = name.lower()
    res, tgt, ratio = t.get("result"), t.get("target"), t.get("percent_of_target")
    status = str(t.get("status", "ok"))
    mark = ""
    if _is_l0(name):
        frac = fm.is_num(res) and res <= 1 and (tgt is None or (fm.is_num(tgt) and tgt <= 1))
        result, target = (fm.pct(res), fm.pct(tgt, 2)) if frac else (fm.sig(res), fm.sig(tgt))
        if fm.is_num(ratio):
            side = "undershooting" if ratio < 100 else "overshooting" if ratio > 100 else "on target"
            status_text = f"{mark} {ratio:.0f}% ({side})" if status != "ok" else f"{mark} {ratio:.0f}% of target"
        else:
            status_text = mark
    elif "dead" in low:
        result = fm.dead_text(res, d_sae) if fm.is_num(res) and res <= 1 else fm.count(res)
        target = fm.whole_pct(tgt) if fm.is_num(tgt) and tgt <= 1 else fm.sig(tgt)
        status_text = f"{mark} " + {"ok": "within limit", "warn": "near the limit", "fail": "over the limit"}.get(status, status)
    elif "duration" in low or "time" in low:
        unit = 60.0 if "(min" in low else 3600.0 if "(h" in low else 1.0
        result = fm.duration(res * unit if fm.is_num(res) else res)
        target = fm.duration(tgt * unit if fm.is_num(tgt) else tgt)
        name = name.replace("(min)", "").replace("(s)", "").replace("(h)", "").strip()
        status_text = f"{mark} " + {"ok": "on schedule", "warn": "slower than expected", "fail": "far over"}.get(status, status)
    elif "explained" in low:
        result, target = fm.pct(res), fm.pct(tgt)
        status_text = f"{mark} " + {"ok": "met", "warn": "close", "fail": "reconstructs almost nothing"}.get(status, status)
    else:
        result, target = fm.sig(res), fm.sig(tgt)
        status_text = f"{mark} " + {"ok": "met", "warn": "close", "fail": "missed"}.get(status, status)
    if t.get("comparison"):
        target = str(t["comparison"])
    if status == "none":
        return {"metric": name, "result": result, "target": target if t.get("comparison") else fm.DASH,
                "status": "none", "status_text": "no target", "mark": "", "mark_html": ""}
    return {"metric": name, "result": result, "target": target, "status": status, "status_text": status_text.strip(),
            "mark": MARKS.get(status, ""), "mark_html": MARKS_HTML.get(status, "")}


def _direction_note(targets: list[Mapping[str, Any]]) -> str:
    for t in targets:
        ratio = t.get("percent_of_target")
        if _is_l0(str(t.get("metric", ""))) and fm.is_num(ratio) and t.get("status") != "ok":
            if ratio < 100:
                return f"L0 is below its target ({ratio:.0f}%). To raise L0: {RAISE_L0}."
            return f"L0 is above its target ({ratio:.0f}%). To lower L0: {LOWER_L0}."
    return ""


def _finding(f: Mapping[str, Any], index: int) -> dict[str, Any]:
    kind = str(f.get("kind", ""))
    end = f.get("end_step")
    co = f.get("coincides_with")
    coincides = ""
    if co:
        what = INTERVENTIONS.get(str(co.get("kind")), str(co.get("kind")))
        coincides = f"{what} at step {fm.step(co.get('step'))}"
        if co.get("inferred"):
            src = "the dead fraction" if str(co.get("source", "")).startswith("dead") else f"the {co.get('source')} column"
            reason = f", {co['reason']}" if co.get("reason") and co.get("reason") != "step change" else ""
            coincides += f" (inferred from {src}{reason})"
    metric = str(f.get("metric", ""))
    claims = f.get("claims") or {}
    evidence = f.get("evidence") or {}
    return {
        "index": index + 1,
        "kind": kind,
        "title": KIND_TITLES.get(kind, fm.label(kind).capitalize()),
        "severity": str(f.get("severity", "info")),
        "mark": MARKS.get(str(f.get("severity", "info")), ""),
        "mark_html": MARKS_HTML.get(str(f.get("severity", "info")), ""),
        "metric": METRIC_NAMES.get(metric, metric),
        "family": _family(metric),
        "span": fm.span(f.get("step"), end),
        "step": f.get("step"),
        "end_step": end,
        "explanation": str(f.get("explanation", "")),
        "evidence": claim_rows(claims, str(f.get("template") or "")),
        "coincides": coincides,
        "mode": str(evidence.get("mode", "")) if isinstance(evidence, Mapping) else "",
        "recovered": bool(evidence.get("recovered")) if isinstance(evidence, Mapping) else False,
    }


#: Evidence labels for claim names that are not words.
CLAIM_LABELS = {"iv": "intervention", "iv_before": "before the change", "rel": "relative to baseline",
                "cv": "relative spread", "l0_tail": "L0 at the end", "l0_frac_tail": "L0 fraction at the end",
                "ev_tail": "explained variance at the end"}


def claim_rows(claims: Mapping[str, Any], template: str) -> list[dict[str, str]]:
    """The claims a finding's sentence shows, as evidence lines: the value and where in the log it
    comes from (claims the sentence does not show, e.g. per-resample operands, stay in analysis.json)."""
    shown = list(dict.fromkeys(placeholders(template))) if template else list(claims)
    rows = []
    for name in shown:
        if name not in claims:
            continue
        c = claim_from_dict(claims[name])
        rows.append({"label": CLAIM_LABELS.get(name, fm.label(name)), "value": format_claim(c), "source": provenance(c)})
    return rows


def _verdict(v: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not v:
        return None
    status = str(v.get("status", "ok"))
    words = {"ok": "No problems found", "warn": "Worth acting on", "fail": "Not usable"}
    return {"status": status, "mark": MARKS.get(status, ""), "mark_html": MARKS_HTML.get(status, ""),
            "headline": words.get(status, status), "lines": [str(x["text"]) for x in v.get("sentences") or []]}


def _step_lines(rows: list[Mapping[str, Any]], d_sae: int | None) -> list[str]:
    """The write-up's annotated step lines, columns aligned: ``Step 20,000:  0.7% L0, 7,646 dead (93%)``."""
    cells: list[list[str]] = []
    for r in rows:
        v = r.get("values") or {}
        parts = [f"Step {fm.step(r.get('step'))}:"]
        if v.get("l0_frac") is not None:
            parts.append(f"{fm.pct1(v['l0_frac'])} L0,")
        elif v.get("l0") is not None:
            parts.append(f"L0 {fm.sig(v['l0'], 3)},")
        if v.get("dead_frac") is not None or v.get("dead") is not None:
            parts.append(fm.dead_words(v.get('dead_frac'), d_sae, v.get('dead')))
        if v.get("loss") is not None:
            parts.append(f"loss {fm.sig(v['loss'], 4)}")
        cells.append(parts)
    if not cells:
        return []
    width = max(len(c) for c in cells)
    cols = [max((len(c[i]) for c in cells if i < len(c)), default=0) for i in range(width)]
    lines = []
    for r, c in zip(rows, cells):
        text = " ".join(p.rjust(cols[i]) if i in (0, 1) else p.ljust(cols[i]) for i, p in enumerate(c)).rstrip()
        note = str(r.get("annotation") or "").strip()
        lines.append((text.ljust(sum(cols) + len(cols)) + "  " + note).rstrip() if note else text)
    return lines


def _family(metric: Any) -> str:
    """``l0_frac`` and ``l0`` are one family, as are ``dead_frac`` and ``dead``."""
    m = str(metric or "")
    return m[:-5] if m.endswith("_frac") else m


def _phases(doc: Mapping[str, Any], d_sae: int | None, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Phases grouped by the metric they were cut on (in order of first appearance), numbered within
    each group; each phase lists the findings of its metric family that start in it (findings of a
    metric without phases go to the first group)."""
    rows = doc.get("step_table") or []
    lines = _step_lines(rows, d_sae)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for p in doc.get("phases") or []:
        groups.setdefault(_family(p.get("metric")), []).append(p)
    first = next(iter(groups), "")
    out = []
    for family, phases in groups.items():
        phases = sorted(phases, key=lambda p: p["start_step"])
        items = []
        for n, p in enumerate(phases, start=1):
            a, b = p["start_step"], p["end_step"]
            last = n == len(phases)
            mine = [ln for r, ln in zip(rows, lines) if a <= r["step"] <= b]
            notes = [{"mark": f["mark"], "mark_html": f["mark_html"], "index": f["index"],
                      "text": f"{f['title']} ({f['span'][0].lower()}{f['span'][1:]}, {f['metric']}): {f['explanation']}".strip()}
                     for f in findings if f["step"] is not None and (a <= f["step"] < b or (last and f["step"] == b))
                     and (f["family"] == family or (family == first and f["family"] not in groups))]
            items.append({"number": n, "name": str(p["name"]), "span": fm.span(a, b), "lines": mine, "notes": notes})
        metric = phases[0].get("metric")
        out.append({"metric": METRIC_NAMES.get(metric, str(metric)), "phases": items})
    return out


def _second_half(s: Mapping[str, Any]) -> dict[str, str] | None:
    if not s or s.get("second_half_mean") is None:
        return None
    return {"mean": fm.pct(s.get("second_half_mean")), "std": fm.pct(s.get("second_half_std")),
            "median": fm.pct(s.get("second_half_median")),
            "ends": _ends(s)}


def _ends(s: Mapping[str, Any]) -> str:
    """The last logged L0 and its step (``2.18% at step 100,000``)."""
    c = (s.get("claims") or {}).get("final")
    if not c:
        return fm.pct(s.get("final"))
    claim = claim_from_dict(c)
    return f"{format_claim(claim)} at step {format_claim(claim, 'step')}"


def _resampling(doc: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The resampling table (one row per resample) and the analysis' summary sentences."""
    recs = doc.get("resampling") or []
    if not recs:
        return None

    def shown(r: Mapping[str, Any], name: str) -> str:
        c = (r.get("claims") or {}).get(name)
        return format_claim(claim_from_dict(c)) if c and c.get("value") is not None else fm.DASH

    outcome = {"died": "died again", "survived": "survived", "no_drop": "no visible drop", "no_data": "no data"}
    rows = [{"step": fm.step(r["step"]), "n": fm.count(r.get("n_resampled")) if r.get("n_resampled") else fm.DASH,
             "before": shown(r, "before"), "after": shown(r, "after"), "back": shown(r, "back_steps"),
             "outcome": outcome.get(str(r.get("outcome")), str(r.get("outcome")))}
            for r in recs]
    return {"rows": rows, "summary": [str(x["text"]) for x in doc.get("resampling_summary") or []]}
