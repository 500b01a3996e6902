"""The series manifest ``OUT/track/series.json``: which SAE run belongs to which model checkpoint.

Written by ``trainer.track`` (or by hand for SAEs trained elsewhere) and read by the analysis::

    {"schema_version": 1, "fraction": 0.05, "threshold": 0.9,
     "checkpoints": [{"index": 0, "label": "step 125", "acts": "/cache/.../activations.npy",
                      "run_dir": "../sae_00", "init": "scratch", "budget_tokens": 2048000}, ...],
     "controls": [{"index": 7, "run_dir": "../fresh_07", "budget_tokens": 2048000}],
     "probes": [{"index": 7, "run_dir": "../probe_07", "init": "recurrent", "budget_tokens": 512000}],
     "source": {...}}

Relative paths are relative to the manifest's folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .schema import RunLogError, atomic_write_text, to_jsonable

MANIFEST_SCHEMA = 1
TRACK_DIR = "track"
MANIFEST_FILE = "series.json"


@dataclass(frozen=True)
class SeriesEntry:
    """One SAE of the series (or a from-scratch control)."""

    index: int
    """Model checkpoint position, 0-based, in training order."""
    label: str
    """How the checkpoint is named in the report (``step 1500`` or the activation file name)."""
    run_dir: Path
    """The SAE's run directory (analyzable by ``sae-report analyze``)."""
    init: Literal["scratch", "recurrent"]
    """From scratch or initialised from the previous SAE."""
    budget_tokens: int
    """Training tokens the run was given."""
    acts: Path | None = None
    """The activation source it trained on (None when unknown)."""


@dataclass(frozen=True)
class SeriesManifest:
    """The whole study's layout."""

    checkpoints: list[SeriesEntry]
    """The series, one SAE per model checkpoint, in training order."""
    controls: list[SeriesEntry] = field(default_factory=list)
    """From-scratch SAEs on later checkpoints (for the speed-up and independent matching)."""
    probes: list[SeriesEntry] = field(default_factory=list)
    """Recurrent SAEs at control checkpoints trained past ``fraction`` (same start, seed and data
    order as the series' SAE there, so their first steps are that run's): the speed-up is read on
    them, so the tokens a recurrent SAE needs are observed even when they exceed the budget."""
    fraction: float = 0.05
    """Budget fraction given to each recurrent SAE."""
    threshold: float = 0.9
    """Decoder cosine at or above which two features count as matched."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where the activations came from (e.g. the built-in language model's config)."""


def write_manifest(path: Path, manifest: SeriesManifest) -> None:
    """Write ``series.json`` atomically (paths relative to its folder when inside it)."""
    path = Path(path)
    base = path.parent.resolve()

    def rel(p: Path | None) -> str | None:
        if p is None:
            return None
        p = Path(p).resolve()
        try:
            return str(Path(*_relpath(p, base)))
        except ValueError:
            return str(p)

    def entry(e: SeriesEntry) -> dict[str, Any]:
        return {"index": e.index, "label": e.label, "run_dir": rel(e.run_dir), "init": e.init,
                "budget_tokens": e.budget_tokens, "acts": rel(e.acts)}

    data = {"schema_version": MANIFEST_SCHEMA, "fraction": manifest.fraction, "threshold": manifest.threshold,
            "checkpoints": [entry(e) for e in manifest.checkpoints], "controls": [entry(e) for e in manifest.controls],
            "probes": [entry(e) for e in manifest.probes],
            "source": to_jsonable(manifest.source)}
    atomic_write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def _relpath(p: Path, base: Path) -> tuple[str, ...]:
    """Parts of ``p`` relative to ``base`` allowing ``..`` one level up (sibling run dirs)."""
    try:
        return p.relative_to(base).parts
    except ValueError:
        return ("..", *p.relative_to(base.parent).parts)


def read_manifest(path: Path) -> SeriesManifest:
    """Read ``series.json`` (or a folder holding it, or an ``OUT`` folder holding ``track/``)."""
    path = Path(path)
    for cand in (path, path / MANIFEST_FILE, path / TRACK_DIR / MANIFEST_FILE):
        if cand.is_file():
            path = cand
            break
    else:
        raise RunLogError(f"{path}: no {TRACK_DIR}/{MANIFEST_FILE} (not a track output folder)")
    try:
        data = json.loads(path.read_text())
        base = path.parent

        def entry(d: dict) -> SeriesEntry:
            acts = d.get("acts")
            return SeriesEntry(index=int(d["index"]), label=str(d.get("label") or f"checkpoint {d['index']}"),
                               run_dir=(base / d["run_dir"]).resolve(), init=d.get("init", "scratch"),
                               budget_tokens=int(d.get("budget_tokens") or 0),
                               acts=(base / acts).resolve() if acts else None)

        return SeriesManifest(checkpoints=[entry(d) for d in data["checkpoints"]],
                              controls=[entry(d) for d in data.get("controls", [])],
                              probes=[entry(d) for d in data.get("probes", [])],
                              fraction=float(data.get("fraction", 0.05)), threshold=float(data.get("threshold", 0.9)),
                              source=dict(data.get("source") or {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunLogError(f"{path}: not a readable series manifest ({str(exc)[:120]})") from None
