"""Claims: every number a report prints, with where in the raw log it comes from.

A claim names a metric (a canonical column of the log), a statistic, the steps it covers and the
value. Sentences are templates whose numbers are all placeholders for claims (``{trough}``,
``{trough.step}``); ``render`` fills them, so a sentence cannot show a number that is not a claim,
and a test can recompute every claim from the raw log without the analyzer (``docs/claims.md``).

Statistics over the log (``metric`` is a column):

- ``value``: the value logged at ``step`` (NaN and inf included).
- ``first`` / ``last``: the value at the first / last step where the metric was logged (``step``).
- ``median``, ``mean``, ``std`` (population), ``min``, ``max``: over the finite values logged at
  ``start_step <= step <= end_step``; for ``min``/``max`` ``step`` is the first step holding it.
- ``count_nonfinite``: rows in the span where the metric is NaN or +-inf.
- ``first_step_below`` / ``first_step_above``: the first step in the span whose finite value is
  ``< threshold`` / ``> threshold`` (the value is that step; None when there is none).
- ``first_step_nonfinite``: the first step in the span where the metric is NaN or +-inf.
- ``quantile``: the ``threshold``-quantile (linear interpolation) of the finite values in the span.
- ``count_events``: events of kind ``event`` with ``start_step <= step <= end_step``.
- ``event_step``: an event of kind ``event`` was logged at ``step``; the value is that step.

Derived from sibling claims (``of`` names claims in the same container):

- ``ratio`` (a / b), ``difference`` (a - b), ``median_of`` (median of the values),
  ``count_of`` (how many), ``count_nonnull_of`` (how many have a value).
- ``config``: the run's config value of key ``metric``.
- ``input_ratio``: input dimension ``step``'s largest magnitude over the median dimension's
  (``stats/input_dims.csv`` or ``stats/input_sample.npy``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

import numpy as np
import polars as pl

ClaimStat = Literal[
    "value", "first", "last", "median", "mean", "std", "min", "max", "quantile", "count_nonfinite",
    "first_step_below", "first_step_above", "first_step_nonfinite", "count_events", "event_step",
    "ratio", "difference", "median_of", "count_of", "count_nonnull_of", "config", "input_ratio",
]

#: Statistics whose value is a step.
STEP_STATS = frozenset({"first_step_below", "first_step_above", "first_step_nonfinite", "event_step"})
#: Statistics computed from sibling claims rather than the log.
DERIVED_STATS = frozenset({"ratio", "difference", "median_of", "count_of", "count_nonnull_of"})
#: How a claim's value is shown.
Unit = Literal["", "pct", "points", "count", "steps", "step", "x", "sig", "features"]


@dataclass(frozen=True)
class Claim:
    """One number a report shows, and how to recompute it from the raw log."""

    metric: str
    """Canonical metric column (``l0_frac``, ``dead``, ``loss`` ...); the config key for ``config``;
    "" for claims derived from siblings."""
    stat: ClaimStat
    """What is claimed about the metric (see the module docstring)."""
    value: float | None
    """The claimed number (a step for the step statistics; NaN/inf allowed; None: "there is none")."""
    step: int | None = None
    """The logged step (``value``, ``first``, ``last``) or where a ``min``/``max`` occurs."""
    start_step: int | None = None
    """First step of the span (inclusive) for span statistics."""
    end_step: int | None = None
    """Last step of the span (inclusive)."""
    threshold: float | None = None
    """Threshold of ``first_step_below`` / ``first_step_above``; the quantile of ``quantile``."""
    event: str | None = None
    """Event kind counted by ``count_events``."""
    of: tuple[str, ...] = ()
    """Names of the sibling claims a derived claim is computed from."""
    unit: Unit = ""
    """How to show the value; "" derives it from the metric and the statistic."""


Claims = dict[str, Claim]

_FRACTION_METRICS = ("explained_variance", "density_below_1e-5", "density_below_1e-6")


def display_unit(c: Claim) -> str:
    """The unit a claim is shown in when it names none."""
    if c.unit:
        return c.unit
    if c.stat in STEP_STATS:
        return "step"
    if c.stat in ("count_nonfinite", "count_events", "count_of", "count_nonnull_of"):
        return "count"
    if c.stat == "ratio":
        return "x"
    m = c.metric
    if m.endswith("_frac") or m in _FRACTION_METRICS:
        return "points" if c.stat == "difference" else "pct"
    if m in ("dead", "dense_features"):
        return "count"
    if m == "l0":
        return "features"
    return "sig"


def fmt_step(step: float | int | None) -> str:
    """A step with thousands separators (``20,475``); ``?`` when unknown."""
    if step is None:
        return "?"
    return f"{int(round(float(step))):,}"


def fmt_steps_short(step: float | int | None) -> str:
    """A length in steps, short (``12K``, ``12.5M``)."""
    if step is None:
        return "?"
    s = float(step)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(s) >= div:
            v = s / div
            return (f"{v:.1f}".rstrip("0").rstrip(".") if v < 100 else f"{v:.0f}") + unit
    return f"{int(round(s))}"


def fmt_pct(v: float) -> str:
    """A fraction as a percentage with 3 significant digits (``4.19%``, ``0.705%``, ``11.3%``)."""
    p = v * 100
    if p == 0:
        return "0%"
    a = abs(p)
    digits = 1 if a >= 10 else 2 if a >= 1 else max(2, 2 - int(math.floor(math.log10(a))))
    return f"{p:.{min(digits, 8)}f}%"


def fmt_sig(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}g}"


def format_value(v: float | None, unit: str) -> str:
    """``v`` in ``unit`` ("n/a" for None, "NaN"/"inf" for non-finite values)."""
    if v is None:
        return "n/a"
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if unit == "pct":
        return fmt_pct(v)
    if unit == "points":
        return f"{v * 100:.1f} points"
    if unit in ("count", "step"):
        return f"{int(round(v)):,}"
    if unit == "steps":
        return fmt_steps_short(v)
    if unit == "x":
        return f"{v:.1f}x" if abs(v) < 100 else f"{v:,.0f}x"
    if unit == "features":
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return fmt_sig(v)


def format_claim(c: Claim, part: str | None = None, unit: str | None = None) -> str:
    """The shown text of a claim's value, or of one of its steps (``part``)."""
    if part in ("step", "start_step", "end_step"):
        return fmt_step(getattr(c, part))
    if part == "threshold":
        return format_value(c.threshold, unit or display_unit(Claim(c.metric, "value", c.threshold)))
    return format_value(c.value, unit or display_unit(c))


_PLACEHOLDER = re.compile(r"\{(\w+)(?:\.(step|start_step|end_step|threshold))?(?::(\w+))?\}")


def render(template: str, claims: Mapping[str, Claim]) -> str:
    """Fill ``{name}``, ``{name.step}``, ``{name.start_step}``, ``{name.end_step}``,
    ``{name.threshold}`` and ``{name:unit}`` placeholders from ``claims``."""
    def one(m: re.Match[str]) -> str:
        c = claims[m.group(1)]
        return format_claim(c, m.group(2), m.group(3))
    return _PLACEHOLDER.sub(one, template)


def placeholders(template: str) -> list[str]:
    """Claim names a template refers to."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(template)]


def literal_digits(template: str) -> str:
    """Numbers a template shows outside its placeholders (a sentence must have none); digits inside
    a name that starts with a letter (``L0``, ``l1_alpha``) are part of the name."""
    text = _PLACEHOLDER.sub(" ", template)
    return "".join(re.findall(r"(?<![A-Za-z_0-9])\d[\d.,]*", text))


@dataclass(frozen=True)
class Sentence:
    """A sentence whose numbers are claims."""

    template: str
    """The sentence with ``{claim}`` placeholders and no literal numbers."""
    claims: dict[str, Claim]
    """The claims it shows, by name."""
    text: str = ""
    """The rendered sentence (filled in by ``sentence``)."""


def used_claims(template: str, claims: Mapping[str, Claim]) -> dict[str, Claim]:
    """The claims ``template`` shows, with the sibling claims they are derived from (transitively)."""
    keep: dict[str, Claim] = {}
    todo = list(placeholders(template))
    while todo:
        name = todo.pop()
        if name in keep or name not in claims:
            continue
        keep[name] = claims[name]
        todo.extend(claims[name].of)
    return {k: claims[k] for k in claims if k in keep}


def sentence(template: str, claims: Mapping[str, Claim]) -> Sentence:
    """A ``Sentence`` with its text rendered; the claims kept are those the template shows (and the
    ones they are derived from)."""
    used = used_claims(template, claims)
    return Sentence(template=template, claims=used, text=render(template, used))


# --- computing claims from a metric's raw arrays -------------------------------------------------


def _span(step: np.ndarray, a: float | None, b: float | None) -> slice:
    lo = 0 if a is None else int(np.searchsorted(step, np.int64(math.ceil(a)), side="left"))
    hi = len(step) if b is None else int(np.searchsorted(step, np.int64(math.floor(b)), side="right"))
    return slice(lo, max(lo, hi))


def _finite(step: np.ndarray, value: np.ndarray, a: float | None, b: float | None,
            all_finite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    sl = _span(step, a, b)
    st, v = step[sl], value[sl]
    if all_finite:
        return st, v
    ok = np.isfinite(v)
    return (st, v) if ok.all() else (st[ok], v[ok])


class ClaimMaker:
    """Claims about one metric, computed from its raw logged points (``step`` ascending, all
    non-null values including NaN/inf)."""

    def __init__(self, metric: str, step: np.ndarray, value: np.ndarray, all_finite: bool | None = None) -> None:
        self.metric = metric
        self.step = step
        self.value = value
        self._all_finite = all_finite

    @property
    def all_finite(self) -> bool:
        """True when no logged value is NaN or inf (checked once: spans then need no mask)."""
        if self._all_finite is None:
            self._all_finite = bool(np.isfinite(self.value).all()) if len(self.value) else True
        return self._all_finite

    def _span_finite(self, a: float | None, b: float | None) -> tuple[np.ndarray, np.ndarray]:
        return _finite(self.step, self.value, a, b, self.all_finite)

    def at(self, step: int) -> Claim:
        """``value`` at a logged step (None when the metric was not logged there)."""
        i = int(np.searchsorted(self.step, np.int64(step)))
        v = float(self.value[i]) if i < len(self.step) and self.step[i] == step else None
        return Claim(self.metric, "value", v, step=int(step))

    def nearest_step(self, step: float, lo: float | None = None, hi: float | None = None) -> int | None:
        """The logged step nearest to ``step`` (within [lo, hi] when given)."""
        sl = _span(self.step, lo, hi)
        st = self.step[sl]
        if not len(st):
            return None
        i = int(np.clip(np.searchsorted(st, np.int64(round(step))), 0, len(st) - 1))
        cands = [c for c in (i - 1, i) if 0 <= c < len(st)]
        return int(st[min(cands, key=lambda c: abs(int(st[c]) - step))])

    def last(self) -> Claim:
        if not len(self.step):
            return Claim(self.metric, "last", None)
        return Claim(self.metric, "last", float(self.value[-1]), step=int(self.step[-1]))

    def first(self) -> Claim:
        if not len(self.step):
            return Claim(self.metric, "first", None)
        return Claim(self.metric, "first", float(self.value[0]), step=int(self.step[0]))

    def stat(self, stat: str, a: float, b: float) -> Claim:
        """``median``/``mean``/``std``/``min``/``max`` over the finite values in [a, b]."""
        a_i, b_i = int(math.ceil(a)), int(math.floor(b))
        st, v = self._span_finite(a_i, b_i)
        where = None
        if not len(v):
            val = None
        elif stat == "median":
            val = float(pl.Series(v).median()) if len(v) > 50_000 else float(np.median(v))  # polars: 2x faster
        elif stat == "mean":
            val = float(np.mean(v))
        elif stat == "std":
            val = float(pl.Series(v).std(ddof=0)) if len(v) > 1 else 0.0  # one pass, no temporary array
        elif stat in ("min", "max"):
            k = int(np.argmin(v) if stat == "min" else np.argmax(v))
            val, where = float(v[k]), int(st[k])
        else:
            raise ValueError(f"unknown span statistic {stat!r}")
        return Claim(self.metric, stat, val, step=where, start_step=a_i, end_step=b_i)  # type: ignore[arg-type]

    def quantile(self, q: float, a: float, b: float) -> Claim:
        """The ``q``-quantile (linear interpolation) of the finite values in [a, b]."""
        a_i, b_i = int(math.ceil(a)), int(math.floor(b))
        _, v = self._span_finite(a_i, b_i)
        val = float(np.quantile(v, q)) if len(v) else None
        return Claim(self.metric, "quantile", val, start_step=a_i, end_step=b_i, threshold=float(q))

    def first_step(self, direction: Literal["below", "above"], threshold: float, a: float, b: float) -> Claim:
        """The first step in [a, b] whose finite value is below / above ``threshold``."""
        a_i, b_i = int(math.ceil(a)), int(math.floor(b))
        st, v = self._span_finite(a_i, b_i)
        hit = v < threshold if direction == "below" else v > threshold
        k = int(np.argmax(hit)) if len(hit) else 0
        val = float(st[k]) if len(hit) and hit[k] else None
        return Claim(self.metric, f"first_step_{direction}", val, start_step=a_i, end_step=b_i,  # type: ignore[arg-type]
                     threshold=float(threshold))

    def first_nonfinite(self, a: float | None = None, b: float | None = None) -> Claim:
        sl = _span(self.step, a, b)
        bad = np.flatnonzero(~np.isfinite(self.value[sl]))
        val = float(self.step[sl][bad[0]]) if len(bad) else None
        return Claim(self.metric, "first_step_nonfinite", val,
                     start_step=int(self.step[sl][0]) if sl.stop > sl.start else None,
                     end_step=int(self.step[sl][-1]) if sl.stop > sl.start else None)

    def count_nonfinite(self, a: float, b: float) -> Claim:
        a_i, b_i = int(math.ceil(a)), int(math.floor(b))
        sl = _span(self.step, a_i, b_i)
        return Claim(self.metric, "count_nonfinite", float(np.count_nonzero(~np.isfinite(self.value[sl]))),
                     start_step=a_i, end_step=b_i)


def ratio(a: str, b: str, claims: Mapping[str, Claim], unit: Unit = "") -> Claim:
    """``claims[a] / claims[b]`` as a derived claim."""
    va, vb = claims[a].value, claims[b].value
    v = va / vb if va is not None and vb not in (None, 0) else None
    return Claim("", "ratio", v, of=(a, b), unit=unit)


def difference(a: str, b: str, claims: Mapping[str, Claim], unit: Unit = "") -> Claim:
    """``claims[a] - claims[b]`` as a derived claim; the unit follows the operands' metric."""
    va, vb = claims[a].value, claims[b].value
    v = va - vb if va is not None and vb is not None else None
    metric = claims[a].metric if claims[a].metric == claims[b].metric else ""
    if not unit:
        unit = "steps" if claims[a].stat in STEP_STATS else ""
    return Claim(metric, "difference", v, of=(a, b), unit=unit)


def median_of(names: Iterable[str], claims: Mapping[str, Claim], unit: Unit = "") -> Claim:
    names = tuple(names)
    vals = [claims[n].value for n in names if claims[n].value is not None]
    return Claim("", "median_of", float(np.median(vals)) if vals else None, of=names, unit=unit)


def count_of(names: Iterable[str], claims: Mapping[str, Claim], nonnull: bool = False) -> Claim:
    """How many of ``names`` there are (``nonnull``: how many have a value)."""
    names = tuple(names)
    n = sum(1 for x in names if claims[x].value is not None) if nonnull else len(names)
    return Claim("", "count_nonnull_of" if nonnull else "count_of", float(n), of=names)


def event_claim(kind: str, step: int) -> Claim:
    """An event of ``kind`` logged at ``step`` (shown as the step)."""
    return Claim("events", "event_step", float(step), step=int(step), event=kind)


def config_claim(key: str, config: Mapping[str, Any], unit: Unit = "") -> Claim:
    v = config.get(key)
    num = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    return Claim(key, "config", num, unit=unit)


def claim_from_dict(d: Mapping[str, Any]) -> Claim:
    """A claim back from its ``analysis.json`` form (non-finite values arrive as strings)."""
    def num(v: Any) -> float | None:
        if v is None:
            return None
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    def step(v: Any) -> int | None:
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return Claim(metric=str(d.get("metric", "")), stat=d.get("stat", "value"), value=num(d.get("value")),
                 step=step(d.get("step")), start_step=step(d.get("start_step")), end_step=step(d.get("end_step")),
                 threshold=num(d.get("threshold")), event=d.get("event"), of=tuple(d.get("of") or ()),
                 unit=d.get("unit") or "")


_STAT_WORDS = {"median": "median", "mean": "mean", "std": "standard deviation", "min": "lowest value",
               "max": "highest value"}


def provenance(c: Claim) -> str:
    """Where in the log a claim comes from, in words (``median of l0_frac, steps 19,975-20,975``)."""
    span = (f"steps {fmt_step(c.start_step)}-{fmt_step(c.end_step)}" if c.start_step is not None
            and c.end_step is not None else "the whole log")
    if c.stat == "value":
        return f"{c.metric} at step {fmt_step(c.step)}"
    if c.stat in ("first", "last"):
        return f"{c.metric}, {c.stat} logged value (step {fmt_step(c.step)})"
    if c.stat in _STAT_WORDS:
        at = f" (at step {fmt_step(c.step)})" if c.step is not None else ""
        return f"{_STAT_WORDS[c.stat]} of {c.metric}, {span}{at}"
    if c.stat == "quantile":
        return f"{(c.threshold or 0) * 100:g}% quantile of {c.metric}, {span}"
    if c.stat in ("first_step_below", "first_step_above"):
        side = c.stat.rsplit("_", 1)[1]
        return f"first step with {c.metric} {side} {format_claim(c, 'threshold')}, {span}"
    if c.stat == "first_step_nonfinite":
        return f"first step with {c.metric} NaN or inf, {span}"
    if c.stat == "count_nonfinite":
        return f"NaN or inf rows of {c.metric}, {span}"
    if c.stat == "count_events":
        return f"{c.event} events, {span}"
    if c.stat == "event_step":
        return f"{c.event} event"
    if c.stat == "config":
        return f"config {c.metric}"
    if c.stat == "input_ratio":
        return f"input dimension {c.step}: largest magnitude over the median dimension's"
    if c.stat == "ratio":
        return f"{c.of[0]} / {c.of[1]}" if len(c.of) == 2 else "ratio"
    if c.stat == "difference":
        return f"{c.of[0]} - {c.of[1]}" if len(c.of) == 2 else "difference"
    if c.stat == "median_of":
        return f"median of {len(c.of)} values"
    if c.stat in ("count_of", "count_nonnull_of"):
        return f"count of {len(c.of)}"
    return c.stat
