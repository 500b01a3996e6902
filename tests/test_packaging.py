"""The distribution: both import packages come from it, templates ship in the wheel, no torch at import."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_both_packages_belong_to_the_distribution() -> None:
    dist = metadata.distribution("sae-report")
    assert dist.version == __import__("sae_report").__version__
    import sae_report
    import trainer

    for pkg in (sae_report, trainer):
        # editable or regular install: each package must live in this checkout or site-packages copy
        origin = Path(pkg.__file__).resolve().parent
        assert origin.name == pkg.__name__
    assert [ep.value for ep in dist.entry_points if ep.name == "sae-report"] == ["sae_report.entry:main"]


def test_importing_sae_report_does_not_import_torch() -> None:
    code = (
        "import sys, sae_report, sae_report.cli, sae_report.runlog, sae_report.ingest, sae_report.analysis;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_wheel_ships_both_packages_and_templates(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0 and "hatchling" in (build.stderr + build.stdout):
        build = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT)],
            capture_output=True,
            text=True,
        )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("sae_report-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "sae_report/cli.py" in names
    assert "trainer/__init__.py" in names
    shipped = {n for n in names if n.startswith("sae_report/templates/")}
    in_repo = {"sae_report/templates/" + p.relative_to(ROOT / "templates").as_posix()
               for p in (ROOT / "templates").rglob("*") if p.is_file()}
    assert in_repo and in_repo <= shipped
