"""The template context: ``Analysis.to_dict()`` (plus the comparison) turned into display-ready plain data.

Templates only loop and print: every figure is formatted here, every optional section is either a
value or ``None``/empty so the templates can omit it cleanly (they run under ``StrictUndefined``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, is_dataclass
from typing import Any, Mapping

import yaml

from .. import __version__
from ..analysis.verdict import severity_key
from ..analysis.claims import claim_from_dict, format_claim, placeholders, provenance
from ..runlog import to_jsonable
from . import formatting as fm
from .proposals import comparison_table, lower_l0, proposed_yaml, raise_l0, recommendation_rows, with_l1_fit

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
    "dense_latents": "Dense latents",
    "ultra_low_density": "Ultra-low-density cluster",
    "shrinkage": "Shrinkage",
    "dead_latents": "Dead latents",
    "poor_spliced_loss": "Poor spliced-in loss",
}

METRIC_NAMES = {
    "l0_frac": "L0", "l0": "L0", "dead_frac": "dead features", "dead": "dead features",
    "loss": "loss", "mse": "MSE", "explained_variance": "explained variance", "lr": "learning rate",
    "l1_alpha": "l1_alpha", "grad_norm": "gradient norm", "aux_loss": "AuxK loss", "l0_coefficient": "l0_coefficient",
    "k": "k", "l2_ratio": "l2_ratio", "dense_features": "dense latents", "density_below_1e-5": "feature density",
    "density_below_1e-6": "feature density", "ce_loss_score": "spliced-in LM loss",
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
    """Everything the templates print, from an ``Analysis.to_dict()`` document (and ``summary.json``).

    ``comparison`` default: the document's own ``comparison`` (the sibling runs, set by the pipeline).
    """
    run_summary = run_summary or {}
    run = doc["run"]
    d_sae = run.get("d_sae")
    config = run.get("config") or {}
    summary = doc.get("summary") or {}
    findings = [_finding(f, i) for i, f in enumerate(by_severity(doc.get("findings") or []))]
    second = summary.get("l0_frac") or {}
    comp = plain(comparison if comparison is not None else doc.get("comparison"))
    recs = with_l1_fit(list(doc.get("recommendations") or []), comp, config, doc.get("architecture"))
    recommendations = recommendation_rows(recs)
    results, basis = results_rows(doc)
    ctx: dict[str, Any] = {
        "title": f"Training Results Analysis: {run['id']}",
        "run": {
            "id": str(run["id"]), "path": str(run.get("path", "")), "source": str(run.get("source", "")),
            "rows": fm.count(run.get("rows")), "span": _run_span(run), "sampled": bool(run.get("sampled")),
            "d_sae": fm.count(d_sae) if d_sae else "",
            "status": str(run_summary.get("status") or ""),
            "recovery": _recovery(run_summary.get("feature_recovery")),
            "architecture": architecture_text(doc),
        },
        "date": date,
        "verdict": _verdict(doc.get("verdict")),
        "headline": headline(doc, findings, recommendations),
        "settings": key_settings(config),
        "config_yaml": _yaml(config),
        "targets": [_target(t, d_sae) for t in doc.get("targets") or []],
        "results": results,
        "results_basis": basis,
        "fidelity_name": fidelity_name(doc),
        "direction_note": _direction_note(doc.get("targets") or [], coefficient(doc)),
        "comparison": comparison_table(comp, str(run["id"])),
        "phases": _phases(doc, d_sae, findings),
        "step_table": _step_lines(doc.get("step_table") or [], d_sae, _ev_short(doc)),
        "second_half": _second_half(second),
        "findings": findings,
        "resampling": _resampling(doc, config),
        "root_causes": [{"title": str(rc["title"]), "text": str(rc["sentence"]["text"])}
                        for rc in doc.get("root_causes") or []],
        "recommendations": recommendations,
        "proposed_yaml": proposed_yaml(config, recs),
        "skipped": [{"analysis": str(s["analysis"]), "reason": str(s["reason"])} for s in doc.get("skipped") or []],
        "notes": [str(n) for n in run.get("notes") or []],
        "charts": [],
        "footer": {"version": __version__, "command": command or f"sae-report analyze {shlex.quote(str(run.get('path', '')))}",
                   "date": date},
    }
    return ctx


def by_severity(findings: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Findings in the order the analysis reads them (``severity_key``: most severe first)."""
    return sorted(findings, key=lambda f: severity_key(str(f.get("severity")), str(f.get("kind")), f.get("step")))


#: The settings a reader looks for first, in this order (the full config is folded away).
KEY_SETTINGS = ("architecture", "l1_alpha", "l0_coefficient", "k", "aux_loss_coefficient", "learning_rate", "d_in",
                "d_sae", "batch_size", "total_steps", "resample_interval", "dead_window", "target_l0", "l1_warmup_steps",
                "lr_warmup_steps", "lr_schedule", "variant")


def key_settings(config: Mapping[str, Any]) -> list[dict[str, str]]:
    """``[{"key", "value"}]`` for the key settings the config has (numbers as written, with separators)."""
    out = []
    for k in KEY_SETTINGS:
        v = config.get(k)
        if v is None or isinstance(v, (dict, list)):
            continue
        if k == "target_l0" and fm.is_num(v) and 0 < v <= 1:
            text = f"{fm.sig(v)} ({fm.pct(v)})"
        else:
            text = fm.sig(v) if fm.is_num(v) else str(v)
        out.append({"key": k, "value": text})
    return out


def _ev_short(doc: Mapping[str, Any]) -> str:
    """Fidelity's name in the step lines."""
    return "1-FVU" if fvu_logged(doc) else "expl. var."


def fvu_logged(doc: Mapping[str, Any]) -> bool:
    """True when the log had FVU (sparsify's ``fvu``) and the reader made explained variance from it."""
    return any("explained_variance = 1 - " in str(n) for n in doc["run"].get("notes") or [])


def fidelity_name(doc: Mapping[str, Any]) -> str:
    """How fidelity is named: ``explained variance (1 - FVU)`` when the log had FVU (sparsify)."""
    return "explained variance (1 - FVU)" if fvu_logged(doc) else "explained variance"


def _claim_text(s: Mapping[str, Any] | None, name: str, kind: str, d_sae: Any = None) -> str:
    """A summary claim's value as the results table shows it (``kind``: l0 / dead / pct / sig / dur)."""
    if not s:
        return fm.DASH
    c = (s.get("claims") or {}).get(name)
    v = c.get("value") if c else s.get(name)
    if v is None:
        return fm.DASH
    if kind == "l0frac":
        return fm.pct(v)
    if kind == "dead":
        return fm.dead_text(v, d_sae)
    if kind == "pct":
        return fm.pct(v)
    return fm.sig(v)


def _target_row(doc: Mapping[str, Any], *names: str) -> Mapping[str, Any] | None:
    for name in names:
        for t in doc.get("targets") or []:
            if t.get("metric") == name:
                return t
    return None


def _status_cell(t: Mapping[str, Any] | None, words: Mapping[str, str]) -> dict[str, str]:
    """Mark and words for a status; no mark (and "no target") where there is no target to meet."""
    status = str(t.get("status", "none")) if t else "none"
    if status == "none":
        return {"status": "none", "mark": "", "mark_html": "", "status_text": "no target"}
    return {"status": status, "mark": MARKS.get(status, ""), "mark_html": MARKS_HTML.get(status, ""),
            "status_text": words.get(status, status)}


def results_rows(doc: Mapping[str, Any]) -> tuple[list[dict[str, str]], str]:
    """The results table: one row per metric with its final and settled (second-half median) values,
    the target, % of target on ONE basis (the settled L0; ``basis`` says which) and a status mark only
    where there is a target to meet. Every value is a claim of the document."""
    summary = doc.get("summary") or {}
    run = doc["run"]
    d_sae = run.get("d_sae")
    rows: list[dict[str, str]] = []
    basis = ""
    l0_name = "l0_frac" if "l0_frac" in summary else "l0" if "l0" in summary else None
    if l0_name:
        s = summary[l0_name]
        kind = "l0frac" if l0_name == "l0_frac" else "sig"
        settled = _target_row(doc, "Settled L0")
        t = settled or _target_row(doc, "Final L0")
        basis = "settled" if settled else "final"
        pct_t = t.get("percent_of_target") if t else None
        tgt = t.get("target") if t else None
        if t and t.get("status") == "none":
            target = fm.DASH  # no target to meet (the skipped note says how to set one)
        elif t and t.get("comparison"):
            target = str(t["comparison"])
        elif fm.is_num(tgt):
            target = fm.pct(tgt, 2) if l0_name == "l0_frac" and tgt <= 1 else fm.sig(tgt)
        else:
            target = fm.DASH
        cell = _status_cell(t, {"ok": "on target", "warn": "off target", "fail": "far off target"})
        rows.append({"metric": "L0" if l0_name == "l0_frac" else "L0 (features per token)",
                     "final": _claim_text(s, "final", kind), "settled": _claim_text(s, "second_half_median", kind),
                     "target": target, "pct": fm.of_target(pct_t), **cell})
    d = summary.get("dead_frac")
    if d:
        t = _target_row(doc, "Dead features")
        rows.append({"metric": "Dead features", "final": _claim_text(d, "final", "dead", d_sae),
                     "settled": _claim_text(d, "second_half_median", "dead", d_sae),
                     "target": str(t.get("comparison") or fm.DASH) if t else fm.DASH, "pct": fm.DASH,
                     **_status_cell(t, {"ok": "within limit", "warn": "near the limit", "fail": "over the limit"})})
    e = summary.get("explained_variance")
    if e:
        t = _target_row(doc, "Explained variance")
        name = fidelity_name(doc)
        rows.append({"metric": name[:1].upper() + name[1:], "final": _claim_text(e, "final", "pct"),
                     "settled": _claim_text(e, "second_half_median", "pct"),
                     "target": str(t.get("comparison") or fm.DASH) if t and t.get("status") != "none" else fm.DASH,
                     "pct": fm.DASH,
                     **_status_cell(t, {"ok": "met", "warn": "close", "fail": "reconstructs almost nothing"})})
    for key, label in (("ce_loss_score", "Spliced-in LM loss (ce_loss_score)"), ("l2_ratio", "Shrinkage (l2_ratio)"),
                       ("mse", "MSE")):  # rows with no target
        c = summary.get(key)
        if c:
            rows.append({"metric": label, "final": _claim_text(c, "final", "sig"),
                         "settled": _claim_text(c, "second_half_median", "sig"), "target": fm.DASH, "pct": fm.DASH,
                         **_status_cell(None, {})})
    loss = summary.get("loss")
    if loss:
        t = _target_row(doc, "Final Loss")
        rows.append({"metric": "Loss", "final": _claim_text(loss, "final", "sig"),
                     "settled": _claim_text(loss, "second_half_median", "sig"),
                     "target": str(t.get("comparison") or fm.DASH) if t and t.get("status") != "none" else fm.DASH,
                     "pct": fm.DASH, **_status_cell(t, {"ok": "met", "warn": "close", "fail": "missed"})})
    dur = _target_row(doc, "Duration (s)")
    if dur:
        rows.append({"metric": "Duration", "final": fm.duration(dur.get("result")), "settled": fm.DASH,
                     "target": fm.DASH, "pct": fm.DASH, **_status_cell(None, {})})
    return rows, basis


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (a full stop followed by a capital letter ends it; decimals do not)."""
    return _SENTENCE_END.split(str(text).strip(), maxsplit=1)[0]


def headline(doc: Mapping[str, Any], findings: list[dict[str, Any]],
             recommendations: list[dict[str, str]]) -> dict[str, Any]:
    """The lines the report opens with: L0 and fidelity against their targets, the most severe
    finding, the next config. Every number is a claim of the document (or a recommendation)."""
    summary = doc.get("summary") or {}
    rows, basis = results_rows(doc)
    by = {r["metric"]: r for r in rows}
    l0 = next((r for r in rows if r["metric"].startswith("L0")), None)
    l0_line = ""
    if l0:
        settled = _target_row(doc, "Settled L0") if basis == "settled" else _target_row(doc, "Final L0")
        ratio = settled.get("percent_of_target") if settled else None
        l0_line = f"{l0['settled']} settled (second-half median), {l0['final']} at the end"
        arch = doc.get("architecture") if isinstance(doc.get("architecture"), Mapping) else {}
        if arch.get("fixed_l0"):
            l0_line += f"; set by k ({arch.get('label') or 'TopK'}: no L0 target)"
        elif l0["target"] == fm.DASH:
            l0_line += "; no target set (--target-l0)"
        else:
            l0_line += f"; target {l0['target']}"
            if fm.is_num(ratio):
                side = {"undershoot": ", undershooting", "overshoot": ", overshooting"}.get(fm.target_side(ratio), "")
                l0_line += f": {ratio:.0f}% of target ({basis}{side})"
    fid = []
    e = summary.get("explained_variance")
    if e:
        fid.append(f"{fidelity_name(doc)} {_claim_text(e, 'final', 'pct')} at the end "
                   f"({_claim_text(e, 'second_half_median', 'pct')} second-half median)")
    ce = summary.get("ce_loss_score")
    if ce:
        fid.append(f"spliced-in LM loss (ce_loss_score) {_claim_text(ce, 'final', 'sig')} at the end "
                   f"({_claim_text(ce, 'second_half_median', 'sig')} second-half median)")
    m = summary.get("mse")
    if m:
        fid.append(f"MSE {_claim_text(m, 'final', 'sig')} at the end ({_claim_text(m, 'second_half_median', 'sig')} second-half median)")
    ev_row = next((r for r in rows if r["metric"].lower().startswith("explained")), None)
    fid_mark = ev_row if ev_row and ev_row["status"] != "none" else None
    dead = by.get("Dead features")
    # the most severe finding: the one the verdict names first (a collapse or divergence before other
    # findings of its severity), else the first in severity order
    said = [str(x.get("text", "")) for x in (doc.get("verdict") or {}).get("sentences") or []]
    worst = next((f for f in findings if said and f["explanation"] == said[0] and f["severity"] != "info"), None)
    if worst is None and findings and findings[0]["severity"] != "info":
        worst = findings[0]
    nxt = [f"{r['parameter']} {r['current']} -> {r['proposed']}" + (f" ({r['range']})" if r["range"] else "")
           for r in recommendations]
    return {
        "l0": l0_line, "l0_mark": (l0 or {}).get("mark", ""), "l0_mark_html": (l0 or {}).get("mark_html", ""),
        "fidelity": "; ".join(fid), "fidelity_mark": (fid_mark or {}).get("mark", ""),
        "fidelity_mark_html": (fid_mark or {}).get("mark_html", ""),
        "dead": (f"{dead['final']} at the end (limit {dead['target']})" if dead else ""),
        "dead_mark": dead["mark"] if dead else "", "dead_mark_html": dead["mark_html"] if dead else "",
        "worst": ({"index": worst["index"], "title": worst["title"], "span": worst["span"][:1].lower() + worst["span"][1:],
                   "metric": worst["metric"],
                   "mark": worst["mark"], "mark_html": worst["mark_html"], "explanation": first_sentence(worst["explanation"])}
                  if worst else None),
        "next": nxt,
    }


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


def coefficient(doc: Mapping[str, Any]) -> str | None:
    """The run's sparsity coefficient (``l1_alpha``, JumpReLU's ``l0_coefficient``; None: k sets L0)."""
    arch = doc.get("architecture")
    if isinstance(arch, Mapping) and "coefficient" in arch:
        return arch.get("coefficient")
    return "l1_alpha"


def architecture_text(doc: Mapping[str, Any]) -> str:
    """The architecture as the header names it ("" when the config does not say: read as an L1 SAE)."""
    arch = doc.get("architecture")
    if not isinstance(arch, Mapping) or arch.get("name") in (None, "unknown"):
        return ""
    label = str(arch.get("label") or arch.get("name"))
    if arch.get("fixed_l0"):
        return f"{label}: L0 is set by k (no sparsity coefficient, no L0 target)"
    return f"{label}: sparsity coefficient {arch.get('coefficient')}"


def _direction_note(targets: list[Mapping[str, Any]], coef: str | None = "l1_alpha") -> str:
    """The direction to move the sparsity coefficient (l1_alpha; JumpReLU's l0_coefficient) when L0
    misses its target, judged on the settled L0 (the basis of "% of target" in every table), else
    on the final L0. None for TopK / BatchTopK (k sets L0; no target)."""
    if coef is None:
        return ""
    settled = [t for t in targets if t.get("metric") == "Settled L0"]
    basis = "settled" if settled else "final"
    for t in settled or targets:
        ratio = t.get("percent_of_target")
        if _is_l0(str(t.get("metric", ""))) and fm.is_num(ratio) and t.get("status") != "ok":
            if ratio < 100:
                return f"L0 is below its target ({ratio:.0f}% of target, {basis}). To raise L0: {raise_l0(coef)}."
            return f"L0 is above its target ({ratio:.0f}% of target, {basis}). To lower L0: {lower_l0(coef)}."
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
        # the diagnostics' flags (dense_latents: growing; ultra_low_density: fed by resampling;
        # shrinkage: an L1 penalty to blame; poor_spliced_loss: L0 on target)
        "growing": bool(evidence.get("growing")) if isinstance(evidence, Mapping) else False,
        "fed": bool(evidence.get("fed")) if isinstance(evidence, Mapping) else False,
        "l1_penalty": bool(evidence.get("l1_penalty")) if isinstance(evidence, Mapping) else False,
        "l0_on_target": evidence.get("l0_on_target") if isinstance(evidence, Mapping) else None,
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


def _step_lines(rows: list[Mapping[str, Any]], d_sae: int | None, ev_name: str = "expl. var.") -> list[str]:
    """The write-up's annotated step lines, columns aligned, with fidelity:
    ``Step 20,000:  0.7% L0, 7,646 dead (93%), loss 0.02962, MSE 0.0123, expl. var. 97.1%``."""
    cells: list[list[str]] = []
    for r in rows:
        v = r.get("values") or {}
        parts = [f"Step {fm.step(r.get('step'))}:", "", "", "", "", ""]  # step, L0, dead, loss, MSE, fidelity
        if v.get("l0_frac") is not None:
            parts[1] = f"{fm.pct1(v['l0_frac'])} L0"
        elif v.get("l0") is not None:
            parts[1] = f"L0 {fm.sig(v['l0'], 3)}"
        if v.get("dead_frac") is not None or v.get("dead") is not None:
            parts[2] = fm.dead_words(v.get('dead_frac'), d_sae, v.get('dead'))
        if v.get("loss") is not None:
            parts[3] = f"loss {fm.sig(v['loss'], 4)}"
        if v.get("mse") is not None:
            parts[4] = f"MSE {fm.sig(v['mse'], 4)}"
        if v.get("explained_variance") is not None:
            parts[5] = f"{ev_name} {fm.pct1(v['explained_variance'])}"
        cells.append(parts)
    if not cells:
        return []
    used = [i for i in range(6) if i == 0 or any(c[i] for c in cells)]
    cols = {i: max(len(c[i]) + (1 if i != used[-1] else 0) for c in cells) for i in used}
    lines = []
    for r, c in zip(rows, cells):
        shown = []
        for i in used:
            text = c[i] + ("," if c[i] and i != used[-1] and i != 0 and any(c[j] for j in used if j > i) else "")
            shown.append(text.rjust(cols[i]) if i in (0, 1) else text.ljust(cols[i]))
        text = " ".join(shown).rstrip()
        note = str(r.get("annotation") or "").strip()
        width = sum(cols.values()) + len(cols)
        lines.append((text.ljust(width) + " " + note).rstrip() if note else text)
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
    lines = _step_lines(rows, d_sae, _ev_short(doc))
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
                     for f in sorted(findings, key=lambda f: (f["step"] or 0, f["index"])) if f["step"] is not None and (a <= f["step"] < b or (last and f["step"] == b))
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
