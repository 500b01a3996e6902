"""Fidelity everywhere (issue 12): explained variance, or FVU when the log has it, and MSE in the
verdict lines, the results table, the step tables and a chart; marks only where there is a target."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from sae_report.cli import main


def _sparsify_like(folder: Path) -> Path:
    """A sparsify-style table: FVU (not explained variance), L0 as a count, no target in the config."""
    steps = np.arange(0, 3000, 10)
    fvu = 0.9 * np.exp(-steps / 400) + 0.08
    l0 = 1000 * np.exp(-steps / 500) + 40
    mse = fvu * 0.5
    rows = "\n".join(f"{s},{f:.6f},{k:.3f},{m:.6f},{m + 0.01:.6f}" for s, f, k, m in zip(steps, fvu, l0, mse))
    f = folder / "metrics.csv"
    f.write_text("step,fvu,l0,mse,loss\n" + rows + "\n")
    (folder / "config.yaml").write_text("num_latents: 4096\n")
    return f


def test_fvu_log_shows_fidelity_as_one_minus_fvu_everywhere(tmp_path: Path) -> None:
    f = _sparsify_like(tmp_path)
    res = CliRunner().invoke(main, ["analyze", str(f), "--no-siblings"], env={"COLUMNS": "100"}, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (out,) = (tmp_path / "report").iterdir()  # one folder per run beside a metrics file: report/<run id>/
    doc = json.loads((out / "analysis.json").read_text())
    assert out.name == doc["run"]["id"]
    last_fvu = float(f.read_text().splitlines()[-1].split(",")[1])
    assert abs(doc["summary"]["explained_variance"]["final"] - (1 - last_fvu)) < 1e-9
    md = (out / "report.md").read_text()
    head = md.split("## Results Summary")[0]
    ev = f"{100 * (1 - last_fvu):.1f}%"
    assert re.search(rf"- \*\*Fidelity:\*\* explained variance \(1 - FVU\) {re.escape(ev)} at the end \(\d+\.\d% "
                     r"second-half median\); MSE 0\.04\d* at the end", head), head
    assert f"| **Explained variance (1 - FVU)** | {ev} | " in md
    assert re.search(r"\| \*\*MSE\*\* \| 0\.04\d* \| 0\.04\d* \| - \| - \| no target \|", md)
    steps = re.findall(r"^\s*Step [\d,]+: .*$", md, re.M)
    assert steps and all("MSE " in ln and "1-FVU " in ln for ln in steps), steps
    assert "![Explained variance over training steps](charts/fidelity.svg)" in md
    assert "explained variance = 1 - FVU, read from the log's FVU" in md
    svg = (out / "charts" / "fidelity.svg").read_text()
    assert "1 - FVU" in svg
    # No target anywhere in this log: no mark, "no target" in every row that has none.
    table = md.split("## Results Summary")[1].split("\n\n")[1]
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[3] == "-":
            assert cells[5] == "no target", row
    assert "✅" not in table
    assert "no target set (--target-l0)" in head
    # The terminal says the same, in 100 columns.
    assert "explained variance (1 - FVU)" in " ".join(res.stdout.split())
