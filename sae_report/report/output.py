"""Writing a report folder: every file atomically, the chart folder swapped whole, stale charts removed.

Order of a write (``publish``): everything is rendered in memory before this module runs, so a
failed render leaves the old report untouched. Then the new ``charts/`` folder is written beside the
old one and swapped in with two renames, the old one removed; then each report file is replaced
with a temp file + rename. Only files this module wrote can be removed: the report folder may hold
other things.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

from ..runlog import atomic_write_bytes

CHARTS_DIR = "charts"
CHART_SUFFIXES = (".svg", ".png")


def swap_charts(out_dir: Path, images: Mapping[str, bytes]) -> list[Path]:
    """Replace ``out_dir/charts`` by exactly ``images`` (file name -> bytes); return the new paths.

    Files in the old folder that are not charts (other suffixes) are carried over untouched.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for leftover in list(out_dir.glob(".charts-new-*")) + list(out_dir.glob(".charts-old-*")):
        shutil.rmtree(leftover, ignore_errors=True)  # from a write killed half-way: ours by name
    final = out_dir / CHARTS_DIR
    staging = Path(tempfile.mkdtemp(prefix=".charts-new-", dir=out_dir))
    try:
        for name, data in images.items():
            (staging / name).write_bytes(data)
            with open(staging / name, "rb+") as fh:
                os.fsync(fh.fileno())
        if final.is_dir():
            for old in final.iterdir():
                if not (old.is_file() and old.suffix in CHART_SUFFIXES) and not (staging / old.name).exists():
                    os.replace(old, staging / old.name)  # keep what is not ours
        old_dir = None
        if final.exists():
            old_dir = Path(tempfile.mkdtemp(prefix=".charts-old-", dir=out_dir))
            os.replace(final, old_dir / CHARTS_DIR)
        os.replace(staging, final)
        if old_dir is not None:
            shutil.rmtree(old_dir, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [final / name for name in images]


def remove_charts(out_dir: Path) -> None:
    """Remove our chart images (a report written without charts must not link stale ones)."""
    final = out_dir / CHARTS_DIR
    if not final.is_dir():
        return
    for old in final.iterdir():
        if old.is_file() and old.suffix in CHART_SUFFIXES:
            old.unlink()
    if not any(final.iterdir()):
        final.rmdir()


def write_files(out_dir: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write each ``name -> bytes`` atomically into ``out_dir``; return the paths in order."""
    paths = []
    for name, data in files.items():
        path = out_dir / name
        atomic_write_bytes(path, data)
        paths.append(path)
    return paths
