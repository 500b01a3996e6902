"""Root-cause notes: small rules that connect a finding to a likely cause in the run's own data.

Each rule returns a note only when its condition holds in this run; the report prints the notes
that apply (and nothing when none does). The rules:

- dead features together with outlier input dimensions;
- a collapse that starts soon after an l1_alpha warm-up ends (or coincides with an l1_alpha change);
- resampling thrash: revived features die before the next resample (their median life is shorter
  than the resample interval).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import polars as pl

from . import formatting as fm

#: A collapse that starts within this fraction of the run after the warm-up ends counts as "soon after".
WARMUP_WINDOW_FRAC = 0.1
#: Dead fraction from which dead features are worth explaining.
DEAD_NOTABLE = 0.25


def l1_warmup_end(metrics: pl.DataFrame) -> int | None:
    """Step where a rising l1_alpha schedule first reaches its full value, or None when it never rose.

    "Rose" means the first logged l1_alpha is below half its maximum; the end is the first step at
    which it reaches 99% of the maximum. Runs on the full data, vectorised.
    """
    if "l1_alpha" not in metrics.columns:
        return None
    sub = metrics.select("step", "l1_alpha").drop_nulls()
    if sub.height < 2:
        return None
    vals = sub["l1_alpha"].to_numpy()
    finite = np.isfinite(vals)
    if not finite.any():
        return None
    top = float(np.max(vals[finite]))
    first = vals[finite][0]
    if top <= 0 or first >= 0.5 * top:
        return None
    idx = int(np.argmax(finite & (vals >= 0.99 * top)))
    return int(sub["step"][idx])


def root_causes(doc: Mapping[str, Any], *, l1_warmup_end: int | None = None) -> list[dict[str, Any]]:
    """The notes whose rule applies to this analysis document (``Analysis.to_dict()``)."""
    notes = []
    for rule in (_outlier_dims, _collapse_after_warmup, _resample_thrash):
        note = rule(doc, l1_warmup_end)
        if note:
            notes.append(note)
    return notes


def _final_dead(doc: Mapping[str, Any]) -> float | None:
    s = (doc.get("summary") or {}).get("dead_frac") or {}
    v = s.get("final")
    return float(v) if fm.is_num(v) else None


def _outlier_dims(doc: Mapping[str, Any], _warmup: int | None) -> dict[str, Any] | None:
    outliers = doc.get("input_outliers") or []
    if not outliers:
        return None
    dead = _final_dead(doc)
    dead_findings = [f for f in doc.get("findings") or [] if str(f.get("metric", "")).startswith("dead")]
    if (dead is None or dead < DEAD_NOTABLE) and not dead_findings:
        return None
    top = sorted(outliers, key=lambda o: -(o.get("ratio") or 0))
    dims = ", ".join(str(o.get("dim")) for o in top[:8]) + (" ..." if len(top) > 8 else "")
    worst = top[0].get("ratio")
    dead_part = f" and {fm.whole_pct(dead)} of features are dead at the end" if dead is not None else ""
    return {
        "title": "Dead features with outlier input dimensions",
        "text": (f"{len(outliers)} input dimension(s) ({dims}) reach a magnitude up to "
                 f"{fm.sig(worst, 3)}x the typical dimension{dead_part}. A few huge dimensions dominate the "
                 "reconstruction loss: most features never win against them and stop firing. Normalise the "
                 "inputs (e.g. scale so that E||x|| = sqrt(d_in)) or standardise/clip the outlier dimensions, "
                 "then retrain."),
    }


def _collapse_after_warmup(doc: Mapping[str, Any], warmup: int | None) -> dict[str, Any] | None:
    run = doc["run"]
    length = (run.get("last_step") or 0) - (run.get("first_step") or 0)
    for f in doc.get("findings") or []:
        if f.get("kind") != "collapse":
            continue
        co = f.get("coincides_with") or {}
        if co.get("kind") == "l1_change":
            return {
                "title": "Collapse right after an l1_alpha change",
                "text": (f"The collapse at step {fm.step(f['step'])} follows the l1_alpha change at step "
                         f"{fm.step(co.get('step'))}. A stronger sparsity penalty pushes features to zero faster "
                         "than they find roles. Raise l1_alpha more gradually (a longer warm-up), or aim lower "
                         "(lower l1_alpha -> more active features -> higher L0)."),
            }
        if warmup is not None and length > 0 and 0 <= f["step"] - warmup <= WARMUP_WINDOW_FRAC * length:
            return {
                "title": "Collapse soon after the l1_alpha warm-up ends",
                "text": (f"l1_alpha reached its full value at step {fm.step(warmup)} and the collapse starts at step "
                         f"{fm.step(f['step'])}, {fm.step(f['step'] - warmup)} steps later. The full sparsity penalty "
                         "arrived before the features had settled. Lengthen the warm-up, or lower the final "
                         "l1_alpha (lower l1_alpha -> more active features -> higher L0)."),
            }
    return None


def _resample_thrash(doc: Mapping[str, Any], _warmup: int | None) -> dict[str, Any] | None:
    interval = (doc["run"].get("config") or {}).get("resample_interval")
    recs = doc.get("resampling") or []
    survival = sorted(r["revived_survival_steps"] for r in recs if fm.is_num(r.get("revived_survival_steps")))
    med = survival[len(survival) // 2] if survival else None
    thrash = [f for f in doc.get("findings") or [] if f.get("kind") == "resample_thrash"]
    short = fm.is_num(interval) and med is not None and med < interval
    if not thrash and not short:
        return None
    life = f"revived features keep firing for a median of {fm.step(med)} steps" if med is not None else \
        "features revived by resampling die again"
    every = f" while resampling happens every {fm.step(interval)} steps" if fm.is_num(interval) else ""
    return {
        "title": "Resampling thrash",
        "text": (f"{life[0].upper()}{life[1:]}{every}: each resample's features die before the next one, so "
                 "resampling replaces the same dead features over and over. Resample less often (raise "
                 "resample_interval) so revived features have time to settle, or weaken the penalty that kills "
                 "them (lower l1_alpha -> more active features -> higher L0)."),
    }
