"""The comparison with earlier runs and the proposals for the next one, as display data.

Direction is always written as a chain (``RAISE_L0`` / ``LOWER_L0``), never as "more/less sparsity":
the write-up's mistake was raising l1_alpha to raise L0.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import yaml

from . import formatting as fm

RAISE_L0 = "lower l1_alpha -> weaker sparsity penalty -> more active features -> higher L0"
LOWER_L0 = "raise l1_alpha -> stronger sparsity penalty -> fewer active features -> lower L0"


def raise_l0(coefficient: str | None) -> str:
    """``RAISE_L0`` for the architecture's coefficient (``l0_coefficient`` for JumpReLU; ``k`` sets a
    TopK SAE's L0)."""
    if coefficient is None or coefficient == "k":
        return "raise k -> more active latents per token -> higher L0 (L0 = k)"
    return RAISE_L0.replace("l1_alpha", coefficient)


def lower_l0(coefficient: str | None) -> str:
    """``LOWER_L0`` for the architecture's coefficient."""
    if coefficient is None or coefficient == "k":
        return "lower k -> fewer active latents per token -> lower L0 (L0 = k)"
    return LOWER_L0.replace("l1_alpha", coefficient)

#: Config keys shown first in the proposed-config block (the write-up's five).
KEY_CONFIG = ("l1_alpha", "learning_rate", "resample_interval", "target_l0", "total_steps")
#: The same for the other architectures (their coefficient or k first).
KEY_CONFIG_BY_COEF = {"l0_coefficient": ("l0_coefficient", "learning_rate", "target_l0", "total_steps"),
                      None: ("k", "aux_loss_coefficient", "learning_rate", "total_steps")}


def comparison_table(comp: Any, current_id: str) -> dict[str, Any] | None:
    """The comparison table (+ the l1_alpha fit when the recommender made one), or None."""
    if not comp or not isinstance(comp, Mapping):
        return None
    rows_in = comp.get("rows") or comp.get("runs") or []
    if not rows_in:
        return None
    rows = []
    for r in rows_in:
        # one basis for "% of target" in every table: the settled L0 (second-half median)
        ratio = r.get("pct_of_target")
        rows.append({
            "id": str(r.get("id", "")), "current": str(r.get("id", "")) == current_id,
            "l1_alpha": fm.sig(r.get("k") if comp.get("coefficient") == "k" else r.get("l1_alpha")),
            "resample": fm.short_step(r.get("resample_interval")) if r.get("resample_interval") is not None else fm.DASH,
            "final_l0": fm.pct(r.get("final_l0")),
            "settled_l0": fm.pct(r.get("settled_l0")),
            "pct_target": fm.of_target(ratio),
            "second_half": fm.pct(r.get("second_half_mean_l0")),
            "dead": fm.whole_pct(r.get("dead_frac")),
            "loss": fm.sig(r.get("final_loss")),
            "duration": fm.duration(r.get("duration_s")),
            "excluded": str(r.get("excluded") or ""),
        })
    warnings: list[str] = []
    for w in list(comp.get("warnings") or []) + [c.get("message", "") if isinstance(c, Mapping) else str(c)
                                                 for c in comp.get("confounders") or []]:
        if w and str(w) not in warnings:
            warnings.append(str(w))
    for u in comp.get("unreadable") or []:
        warnings.append(f"not compared: {u.get('path', '')}: {u.get('reason', '')}" if isinstance(u, Mapping) else str(u))
    return {"rows": rows, "key_finding": str(comp.get("key_finding") or ""), "warnings": warnings,
            "excluded": [f"{r['id']}: {r['excluded']}" for r in rows if r["excluded"]],
            "fit": _fit(comp.get("recommendation")),
            "no_fit": str(comp.get("no_recommendation_reason") or ""),
            "coef": str(comp.get("coefficient") or "l1_alpha")}


def _fit(rec: Any) -> dict[str, Any] | None:
    """The recommender's l1_alpha fit (``L1Recommendation.to_dict()``) as display data."""
    if not isinstance(rec, Mapping) or not fm.is_num(rec.get("l1_alpha")):
        return None
    direction = str(rec.get("direction", ""))
    coef = str(rec.get("coefficient") or "l1_alpha")
    words = raise_l0(coef) if direction == "lower" else lower_l0(coef) if direction == "raise" else ""
    low, high = rec.get("low"), rec.get("high")
    return {"l1_alpha": fm.sig(rec["l1_alpha"]),
            "range": f"{fm.sig(low)} to {fm.sig(high)}" if fm.is_num(low) and fm.is_num(high) else "",
            "predicted": fm.pct(rec.get("predicted_l0")) if fm.is_num(rec.get("predicted_l0")) else "",
            "basis": ", ".join(str(b) for b in rec.get("basis") or []),
            "direction": words, "explanation": str(rec.get("explanation") or ""),
            "warnings": [str(w) for w in rec.get("warnings") or []]}


def with_l1_fit(recs: list[dict[str, Any]], comp: Any, config: Mapping[str, Any],
                arch: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Put the comparison's l1_alpha fit first among the recommendations: a fit across runs replaces a
    single run's rule of thumb for l1_alpha. Only a fit of the run's own sparsity coefficient
    (``arch``: the analysis' architecture; a TopK run has none)."""
    fit = comp.get("recommendation") if isinstance(comp, Mapping) else None
    if not isinstance(fit, Mapping) or not fm.is_num(fit.get("l1_alpha")):
        return recs
    coef = str(fit.get("coefficient") or "l1_alpha")  # l1_alpha, or a JumpReLU SAE's l0_coefficient
    if isinstance(arch, Mapping) and "coefficient" in arch and arch.get("coefficient") != coef:
        return recs
    recs = [r for r in recs if r.get("parameter") != coef]
    current = config.get(coef)
    effect = f"settled L0 about {fm.pct(fit['predicted_l0'])}" if fm.is_num(fit.get("predicted_l0")) else ""
    rec = {"parameter": coef, "current": current if fm.is_num(current) else fit.get("reference_l1"),
           "proposed": fit["l1_alpha"], "low": fit.get("low"), "high": fit.get("high"),
           "reason": str(fit.get("explanation") or ""), "predicted_effect": effect}
    return [rec] + recs


def _direction(parameter: str, current: Any, proposed: Any) -> str:
    if not (fm.is_num(current) and fm.is_num(proposed)) or math.isclose(current, proposed):
        return ""
    up = proposed > current
    if parameter in ("l1_alpha", "l0_coefficient"):
        return lower_l0(parameter) if up else raise_l0(parameter)
    if parameter == "k":
        return ("raise k -> more active latents per token -> better reconstruction, higher L0 (L0 = k)" if up
                else "lower k -> fewer active latents per token -> sparser code, lower L0 (L0 = k)")
    if parameter == "aux_loss_coefficient":
        return ("raise aux_loss_coefficient -> a stronger AuxK pull on dead latents -> fewer stay dead" if up
                else "lower aux_loss_coefficient -> a weaker AuxK pull on dead latents")
    if parameter == "l0_warmup_steps":
        return ("raise l0_warmup_steps -> the L0 penalty arrives gradually -> fewer features die early" if up
                else "lower l0_warmup_steps -> the full L0 penalty arrives sooner")
    if parameter == "resample_interval":
        return ("raise resample_interval -> resample less often -> revived features get longer to settle" if up
                else "lower resample_interval -> resample more often -> dead features are replaced sooner")
    if parameter == "total_steps":
        return "raise total_steps -> longer training -> more time to settle" if up else "lower total_steps -> shorter run"
    if parameter.startswith("l1_warmup"):
        return ("raise l1_warmup_steps -> the sparsity penalty arrives gradually -> fewer features die early" if up
                else "lower l1_warmup_steps -> the full sparsity penalty arrives sooner")
    if parameter in ("learning_rate", "lr"):
        return "raise learning_rate -> larger updates" if up else "lower learning_rate -> smaller, steadier updates"
    return f"{'raise' if up else 'lower'} {parameter}"


def recommendation_rows(recs: list[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One display row per recommendation, with the direction in words."""
    return [_recommendation(r) for r in recs]


def _recommendation(r: Mapping[str, Any]) -> dict[str, str]:
    low, high = r.get("low"), r.get("high")
    rng = f"{fm.sig(low)} to {fm.sig(high)}" if fm.is_num(low) and fm.is_num(high) else ""
    return {"parameter": str(r.get("parameter", "")), "current": fm.sig(r.get("current")),
            "proposed": fm.sig(r.get("proposed")), "range": rng,
            "direction": _direction(str(r.get("parameter", "")), r.get("current"), r.get("proposed")),
            "reason": _sentence(r.get("reason", "")), "effect": _sentence(r.get("predicted_effect", ""))}


def _sentence(text: Any) -> str:
    """Text ending with a full stop (so a template can put two after each other)."""
    t = str(text or "").strip()
    return t if not t or t[-1] in ".!?" else t + "."


def proposed_yaml(config: Mapping[str, Any], recs: list[Mapping[str, Any]]) -> str:
    """The next run's key config lines with the proposed values, each change commented."""
    changes = {str(r["parameter"]): r for r in recs if isinstance(r.get("proposed"), (int, float, str, bool))}
    if not changes:
        return ""
    from ..analysis.architecture import architecture

    shown = KEY_CONFIG_BY_COEF.get(architecture(config).coefficient, KEY_CONFIG)
    keys = [k for k in shown if k in config or k in changes] + [k for k in changes if k not in shown]
    lines = []
    for k in keys:
        if k in changes:
            value = changes[k]["proposed"]
            old = changes[k].get("current", config.get(k))
            lines.append(f"{_scalar(k, value)}   # was {_scalar_value(old)}")
        else:
            lines.append(_scalar(k, config[k]))
    return "\n".join(lines) + "\n"


def _scalar_value(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def _scalar(k: str, v: Any) -> str:
    return yaml.safe_dump({k: v}, default_flow_style=False, width=1000).strip()
