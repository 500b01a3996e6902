"""Write an analysis out: ``analysis.json``, ``report.md``, ``report.html`` and chart images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..analysis.result import Analysis
from ..runlog import RunData, atomic_write_text

FORMATS = ("md", "html", "json")


def write_report(analysis: Analysis, data: RunData, out_dir: Path, formats: Sequence[str] = FORMATS,
                 command: str = "") -> list[Path]:
    """Write the chosen formats into ``out_dir`` atomically; return the files written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "json" in formats:
        path = out_dir / "analysis.json"
        atomic_write_text(path, json.dumps(analysis.to_dict(), indent=2, allow_nan=False) + "\n")
        written.append(path)
    missing = [f for f in formats if f not in ("json",)]
    if missing:
        raise NotImplementedError(f"report formats not built yet: {missing}")
    return written
