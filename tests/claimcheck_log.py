"""The claim checker's own reader of a run's raw log (README "Run directory format").

Written from the format's rules alone, with polars, so that ``claimcheck`` does not trust the
reader it referees:

- ``metrics/part-NNNNNN.parquet|csv`` read in name order; a part present as both is read from the
  parquet file; CSV columns are Float64 (``step`` Int64), an empty cell is null and ``nan``/``inf``/
  ``-inf`` are floats; a CSV whose last line has no trailing newline loses that line.
- Within a file the last row for a step wins; a later part supersedes every earlier row at or
  after its own first (smallest) step.
- ``events.ndjson``: lines that do not parse are skipped; a ``resume`` event at step S drops the
  events written earlier in the file with a step > S.
- ``config.yaml``: ``yaml.safe_load``.

It also holds how stored numbers are parsed (``as_float``, ``as_step``) and compared (``same``).
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

__all__ = ["RawLog", "as_float", "as_step", "same", "says", "show"]

REL_TOL, ABS_TOL = 1e-6, 1e-12

_PART = re.compile(r"^part-(\d{6})\.(parquet|csv)$")
#: metric -> (the other column of its pair, multiply by d_sae (True) or divide (False))
_PAIRS = {"l0_frac": ("l0", False), "dead_frac": ("dead", False), "l0": ("l0_frac", True),
          "dead": ("dead_frac", True)}
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def same(truth: float | None, claimed: float | None, exact: bool = False) -> bool:
    """True when ``claimed`` is ``truth`` within the tolerance (NaN equals NaN; None equals None)."""
    if truth is None or claimed is None:
        return truth is None and claimed is None
    if math.isnan(truth) or math.isnan(claimed):
        return math.isnan(truth) and math.isnan(claimed)
    if exact or math.isinf(truth) or math.isinf(claimed):
        return truth == claimed
    return abs(truth - claimed) <= ABS_TOL + REL_TOL * abs(truth)


def show(v: float | None) -> str:
    """A number for a message (6 significant digits; null, nan, inf)."""
    if v is None:
        return "null"
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.6g}"


def says(desc: str, truth: float | None, claimed: float | None) -> str:
    """``<desc> is <truth>, analysis says <claimed>``."""
    a, b = show(truth), show(claimed)
    if a == b:  # a difference beyond the tolerance that 6 digits hide
        a, b = repr(truth), repr(claimed)
    return f"{desc} is {a}, analysis says {b}"


def as_float(v: Any) -> float | None:
    """A stored number: None, an int/float, or ``"nan"``/``"inf"``/``"-inf"``; ValueError otherwise."""
    if v is None:
        return None
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a number")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.strip().lower() in _NONFINITE:
        return _NONFINITE[v.strip().lower()]
    raise ValueError(f"{v!r} is not a number")


def as_step(v: Any) -> int | None:
    """A stored step: None or an integer (an integral float is accepted); ValueError otherwise."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"step {v!r} is not an integer")
    return int(v)


def _read_csv(path: Path) -> pl.DataFrame:
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]  # a write cut short: that line is lost
    if not raw.strip():
        return pl.DataFrame({"step": pl.Series([], dtype=pl.Int64)})
    header = [c.strip() for c in raw.split(b"\n", 1)[0].decode("utf-8").split(",")]
    schema = {c: (pl.Int64 if c == "step" else pl.Float64) for c in header}
    return pl.read_csv(io.BytesIO(raw), schema_overrides=schema)


def _read_part(path: Path) -> pl.DataFrame:
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else _read_csv(path)
    frame = frame.select([pl.col(c).cast(pl.Int64 if c == "step" else pl.Float64, strict=False)
                          for c in frame.columns])
    frame = frame.filter(pl.col("step").is_not_null())
    return frame.unique(subset="step", keep="last", maintain_order=True)  # last row for a step wins


def _merge_parts(parts: list[Path]) -> pl.DataFrame:
    """Apply "a later part supersedes every earlier row at or after its own first step"."""
    kept: list[pl.DataFrame] = []
    cutoff: int | None = None
    for path in reversed(parts):
        frame = _read_part(path)
        first = frame.get_column("step").min() if frame.height else None
        if cutoff is not None:
            frame = frame.filter(pl.col("step") < cutoff)
        kept.append(frame)
        if first is not None:
            cutoff = first if cutoff is None else min(cutoff, first)
    if not kept:
        return pl.DataFrame({"step": pl.Series([], dtype=pl.Int64)})
    return pl.concat(kept[::-1], how="diagonal_relaxed").sort("step")


def _read_events(path: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    if not path.exists():
        return events
    for line in path.read_bytes().split(b"\n"):
        try:
            rec = json.loads(line)
            step = as_step(rec["step"])
            kind = rec["kind"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
        if step is None or not isinstance(kind, str):
            continue
        if kind == "resume":
            events = [e for e in events if e["step"] <= step]
        events.append({**rec, "step": step, "kind": kind})
    return events


def _read_input_absmax(stats: Path) -> dict[int, float]:
    """Per input dimension, its largest absolute activation, from the run's stats files."""
    dims = stats / "input_dims.csv"
    if dims.is_file():
        t = pl.read_csv(dims, schema_overrides={"dim": pl.Int64, "absmax": pl.Float64})
        return dict(zip(t["dim"].to_list(), t["absmax"].to_list()))
    sample = stats / "input_sample.npy"
    if sample.is_file():
        a = np.load(sample)
        return {i: float(v) for i, v in enumerate(np.nanmax(np.abs(a.astype(np.float64)), axis=0))}
    return {}


@dataclass
class RawLog:
    """A run's raw log after the run-format rules: one row per step, sorted by step."""

    steps: pl.Series
    """Every logged step (Int64, ascending, unique)."""
    columns: dict[str, pl.Series]
    """Metric -> its cells (Float64, aligned with ``steps``; null = not logged at that step)."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """Events after the resume rule, in file order (each with int ``step`` and str ``kind``)."""
    config: dict[str, Any] = field(default_factory=dict)
    """``config.yaml`` as loaded (empty when absent)."""
    input_absmax: dict[int, float] = field(default_factory=dict)
    """Input dimension -> largest absolute activation (``stats/input_dims.csv``, else
    ``stats/input_sample.npy``; empty when neither exists)."""
    _cache: dict[tuple[str, float | None], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False)

    @classmethod
    def read(cls, path: str | Path) -> "RawLog":
        """Read a run directory, or a single ``.csv``/``.parquet`` metrics file (with an optional
        ``config.yaml`` and ``events.ndjson`` beside it)."""
        path = Path(path)
        if path.is_dir():
            base, by_index = path, {}
            mdir = path / "metrics"
            for p in sorted(mdir.iterdir()) if mdir.is_dir() else []:
                m = _PART.match(p.name)
                if m and (m.group(1) not in by_index or m.group(2) == "parquet"):
                    by_index[m.group(1)] = p
            frame = _merge_parts([by_index[k] for k in sorted(by_index)])
        else:
            base, frame = path.parent, _merge_parts([path])
        cfg_path = base / "config.yaml"
        config = yaml.safe_load(cfg_path.read_text()) if cfg_path.exists() else {}
        return cls(steps=frame.get_column("step"),
                   columns={c: frame.get_column(c) for c in frame.columns if c != "step"},
                   events=_read_events(base / "events.ndjson"),
                   config=config if isinstance(config, dict) else {},
                   input_absmax=_read_input_absmax(base / "stats"))

    def column(self, metric: str, d_sae: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps int64, values float64) of the non-null cells of ``metric``, by step. ``l0_frac`` /
        ``dead_frac`` come from ``l0`` / ``dead`` divided by ``d_sae`` (and the counts from the
        fractions times ``d_sae``) when the log has only the other one of the pair."""
        key = (metric, d_sae)
        if key not in self._cache:
            s = self.columns.get(metric)
            if (s is None or s.null_count() == len(s)) and metric in _PAIRS and d_sae:
                other, times = _PAIRS[metric]
                o = self.columns.get(other)
                if o is not None:
                    s = o * float(d_sae) if times else o / float(d_sae)
            if s is None:
                s = pl.Series([None] * len(self.steps), dtype=pl.Float64)
            ok = s.is_not_null()
            self._cache[key] = (self.steps.filter(ok).to_numpy().astype(np.int64),
                                s.filter(ok).to_numpy().astype(np.float64))
        return self._cache[key]

    def cell(self, metric: str, step: int, d_sae: float | None = None) -> float | None:
        """The cell of ``metric`` at exactly ``step`` (NaN/inf included); None when not logged there."""
        st, v = self.column(metric, d_sae)
        i = int(np.searchsorted(st, step))
        return float(v[i]) if i < len(st) and st[i] == step else None

    def has_step(self, step: int) -> bool:
        """Whether the raw metrics have a row at ``step``."""
        i = int(np.searchsorted(self.steps.to_numpy(), step))
        return i < len(self.steps) and int(self.steps[i]) == step
