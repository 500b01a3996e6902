"""Shared helpers of the tests/test_ingest_*.py files (ground truth, comparisons, CLI)."""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

from click.testing import CliRunner

from sae_report.cli import main
from sae_report.runlog import RunData

FIXTURES = Path(__file__).resolve().parent / "fixtures"
INGEST = FIXTURES / "ingest"

_spec = importlib.util.spec_from_file_location("make_ingest_fixtures", FIXTURES / "make_ingest_fixtures.py")
mk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mk)

#: SAELens key -> canonical column.
CANON = {
    "losses/overall_loss": "loss",
    "losses/mse_loss": "mse",
    "losses/l1_loss": "l1",
    "metrics/explained_variance": "explained_variance",
    "metrics/l0": "l0",
    "details/current_learning_rate": "lr",
    "details/l1_coefficient": "l1_alpha",
    "details/n_training_tokens": "tokens",
    "sparsity/dead_features": "dead",
}
#: SAELens keys that count features where the canonical column is a share of the dictionary.
PER_D_SAE = {"sparsity/below_1e-5": "density_below_1e-5", "sparsity/below_1e-6": "density_below_1e-6"}


def expected(points, d_sae: int | None = mk.D_SAE) -> dict[int, dict[str, float]]:
    """step -> {canonical column: value} for the points' logged keys (unlogged keys absent)."""
    out: dict[int, dict[str, float]] = {}
    for step, row in points:
        cells = out.setdefault(step, {})
        for key, value in row.items():
            if key in CANON:
                cells[CANON[key]] = value
            elif key in PER_D_SAE and d_sae:
                cells[PER_D_SAE[key]] = value / d_sae
        if d_sae:
            if "l0" in cells:
                cells["l0_frac"] = cells["l0"] / d_sae
            if "dead" in cells:
                cells["dead_frac"] = cells["dead"] / d_sae
    return out


def assert_matches(data: RunData, points, *, rel: float = 1e-12, d_sae: int | None = mk.D_SAE) -> None:
    """Every canonical cell equals the truth: NaN stays NaN, an unlogged cell is null (never
    forward-filled), and the steps are exactly the logged ones."""
    want = expected(points, d_sae)
    frame = data.metrics
    assert frame.get_column("step").to_list() == sorted(want)
    columns = sorted({c for cells in want.values() for c in cells})
    assert set(columns) <= set(frame.columns), (columns, frame.columns)
    rows = {r["step"]: r for r in frame.iter_rows(named=True)}
    for step, cells in want.items():
        for col in columns:
            got = rows[step][col]
            if col not in cells:
                assert got is None, (step, col, got)
            elif math.isnan(cells[col]):
                assert got is not None and math.isnan(got), (step, col, got)
            else:
                assert got is not None and math.isclose(got, cells[col], rel_tol=rel, abs_tol=1e-12), (step, col, got, cells[col])


def digest(path: Path) -> str:
    """Hash of every file's relative path and bytes under ``path`` (or of the file)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent if path.is_file() else path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def cli(*args: str):
    """Run ``sae-report ARGS`` in-process; stderr kept apart from stdout."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
