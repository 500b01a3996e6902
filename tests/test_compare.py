"""`sae-report compare` on generated runs with known settings (the write-up's three runs and
runs that must be excluded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sae_report.cli import main
from sae_report.compare import compare_runs, comparison_for_siblings
from sae_report.fixtures import write_run, write_siblings

ROWS = 400


@pytest.fixture(scope="module")
def writeup(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    write_siblings(root, steps=100_000, rows=ROWS)
    return root


def test_writeup_runs_table_finding_and_fit(writeup):
    comp = compare_runs([writeup], 0.05)
    assert [r.id for r in comp.rows] == ["train_0314574b", "train_05555a4b", "train_e01c6183"]
    assert [r.l1_alpha for r in comp.rows] == [0.005, 0.05, 0.065]
    assert [r.resample_interval for r in comp.rows] == [15_000, 15_000, 10_000]
    # settled L0 = second-half median: the sibling_mid fixture settles at 2.6% whatever its last point
    mid = comp.rows[1]
    assert mid.settled_l0 == pytest.approx(0.026, rel=0.15)
    assert mid.pct_of_target == pytest.approx(100 * mid.settled_l0 / 0.05)
    rec = comp.recommendation
    assert rec is not None and rec.direction == "lower"
    assert 0.005 < rec.low <= rec.l1_alpha <= rec.high < 0.05
    assert rec.bracket == ["train_0314574b", "train_05555a4b"]
    assert "L0 falls as l1_alpha rises" in comp.key_finding
    assert "lower l1_alpha relative to 0.05" in comp.key_finding
    keys = [c.key for c in comp.confounders]
    assert keys == ["resample_interval"]
    assert comp.confounders[0].values == {"train_0314574b": 15_000, "train_05555a4b": 15_000, "train_e01c6183": 10_000}


def test_excluded_runs_are_reported_with_reasons(tmp_path):
    write_run(tmp_path, "sibling_low", steps=10_000, rows=ROWS)
    write_run(tmp_path, "sibling_mid", steps=10_000, rows=ROWS, seed=1)
    write_run(tmp_path, "diverged", steps=10_000, rows=ROWS, run_id="train_diverged")
    write_run(tmp_path, "sibling_mid", steps=10_000, rows=ROWS, d_sae=4096, run_id="train_small")
    noconf = write_run(tmp_path, "sibling_mid", steps=10_000, rows=ROWS, run_id="train_noconfig").run_dir
    (noconf / "config.yaml").unlink()
    (noconf / "metrics" / "part-000000.parquet").exists()
    comp = compare_runs([tmp_path], 0.05)
    reasons = {r.id: r.excluded for r in comp.rows}
    assert reasons["train_0314574b"] is None and reasons["train_05555a4b"] is None
    assert reasons["train_diverged"].startswith("diverged")
    assert reasons["train_small"] == "d_sae 4,096 differs from the other runs' 8,192 (L0 is not comparable)"
    # without config the logged l1_alpha coefficient is used, but d_sae is unknown: l0_frac still logged
    assert reasons["train_noconfig"] is None
    assert any("l1_alpha taken from the logged coefficient" in w for w in comp.rows[[r.id for r in comp.rows].index("train_noconfig")].warnings)
    assert {r.id for r in comp.excluded} == {"train_diverged", "train_small"}
    assert set(comp.recommendation.basis) <= {"train_0314574b", "train_05555a4b", "train_noconfig"}
    assert any("train_small: excluded from the fit - d_sae" in w for w in comp.warnings)


def test_missing_config_and_no_l1_in_log_is_excluded(tmp_path):
    run = write_run(tmp_path, "sibling_mid", steps=10_000, rows=ROWS).run_dir
    (run / "config.yaml").unlink()
    import polars as pl

    part = next((run / "metrics").iterdir())
    frame = pl.read_parquet(part) if part.suffix == ".parquet" else pl.read_csv(part)
    frame = frame.drop("l1_alpha")
    part.unlink()
    frame.write_parquet(run / "metrics" / "part-000000.parquet")
    comp = compare_runs([run], 0.05)
    assert comp.rows[0].excluded == "missing config: l1_alpha unknown"
    assert comp.recommendation is None
    assert comp.no_recommendation_reason == "no run is usable for the fit (see the exclusions)"


def test_cli_writes_md_html_json_and_prints(writeup, tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["compare", str(writeup), "--target-l0", "5%", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Key finding: L0 falls as l1_alpha rises" in res.output
    assert "Recommended l1_alpha:" in res.output and "lower relative to 0.05" in res.output
    assert "Confounder: resample_interval changed together with l1_alpha" in res.output
    md = (out / "comparison.md").read_text()
    assert "| **train_e01c6183** | 0.065 | 10K |" in md
    assert "## Recommended next l1_alpha" in md
    assert "| Settled L0 | % of target (settled) |" in md and "Explained variance (settled) | MSE (settled) |" in md
    assert "## Sparsity and fidelity" in md and "![L0 of every run](overlay_l0.svg)" in md
    html = (out / "comparison.html").read_text()
    assert 'id="spec-l1_l0"' in html and "train_05555a4b" in html
    for chart in ("l1_l0", "fidelity", "overlay_l0", "overlay_dead", "overlay_loss"):
        assert f'id="spec-{chart}"' in html, chart
        assert (out / f"{chart}.svg").read_text().startswith("<svg"), chart
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp and "script-src 'sha256-" in csp
    assert html.count("<noscript><img class=\"static-chart\" src=\"data:image/svg+xml;base64,") == 5
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["recommendation"]["direction"] == "lower"
    fid = {r["id"]: r for r in doc["fidelity"]["runs"]}
    assert set(fid) == {"train_0314574b", "train_05555a4b", "train_e01c6183"}
    assert all(0.5 < r["explained_variance_settled"] <= 1 and r["mse_settled"] > 0 for r in fid.values())
    assert doc["fidelity"]["pareto_front"]  # at least one run is not beaten on both sparsity and fidelity


def test_cli_json_on_stdout_and_glob(writeup):
    res = CliRunner().invoke(main, ["compare", str(writeup / "train_*"), "--json", "--no-files"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["target_source"] == "config" and doc["target_l0"] == 0.05
    assert [r["id"] for r in doc["runs"]] == ["train_0314574b", "train_05555a4b", "train_e01c6183"]


def test_cli_errors(tmp_path):
    res = CliRunner().invoke(main, ["compare", str(tmp_path / "nope")])
    assert res.exit_code == 2
    assert res.output.strip() == f"Error: {tmp_path / 'nope'}: no such file or directory"
    res = CliRunner().invoke(main, ["compare", str(tmp_path), "--target-l0", "700%"])
    assert res.exit_code == 2
    assert "'700%' must be a fraction of the dictionary between 0 and 1" in res.output


def test_html_escapes_run_ids(tmp_path):
    write_run(tmp_path, "sibling_mid", steps=10_000, rows=ROWS, run_id="<img src=x onerror=alert(1)>")
    write_run(tmp_path, "sibling_low", steps=10_000, rows=ROWS)
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["compare", str(tmp_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = (out / "comparison.html").read_text()
    body = html.split("</script>", 1)[1]
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in body


def test_siblings_share_shape(writeup):
    comp = comparison_for_siblings(writeup / "train_e01c6183")
    assert comp is not None and len(comp.rows) == 3


@pytest.mark.browser
def test_html_chart_renders_in_chromium(writeup, tmp_path):
    import shutil
    import subprocess

    if not shutil.which("chromium"):
        pytest.skip("needs /usr/bin/chromium")
    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["compare", str(writeup), "--target-l0", "0.05", "--out", str(out)])
    assert res.exit_code == 0, res.output
    dom = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--proxy-server=127.0.0.1:9",
         "--virtual-time-budget=8000", "--dump-dom", (out / "comparison.html").as_uri()],
        capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="marks"') == 5  # l1_l0, sparsity-fidelity, and the L0, dead and loss overlays
    assert 'data-charts-ready="5"' in dom and 'class="vega chart-error"' not in dom


def test_pareto_front_and_fidelity_chart():
    from sae_report.report.comparison import pareto_front

    pts = [("a", 0.10, 0.99), ("b", 0.05, 0.97), ("c", 0.05, 0.95), ("d", 0.02, 0.90), ("e", 0.08, 0.96)]
    assert pareto_front(pts) == ["a", "b", "d"]  # c: b is as sparse and more faithful; e: b beats it on both
    assert pareto_front([("x", 0.1, 0.9)]) == ["x"]


def _write_simple(root: Path, run_id: str, l1: float, l0) -> Path:
    import numpy as np

    from sae_report.runlog import RunLogWriter

    run = root / run_id
    steps = np.arange(len(l0))
    with RunLogWriter(run) as w:
        w.write_config({"run_id": run_id, "l1_alpha": l1, "d_in": 16, "d_sae": 64, "total_steps": len(l0),
                        "target_l0": 0.05})
        w.log_metrics({"step": steps, "l0_frac": l0, "loss": np.full(len(l0), 0.1)})
        w.write_summary({"status": "completed", "steps": int(steps[-1])})
    return run


def test_unstable_second_half_is_warned_and_weighted(tmp_path):
    import numpy as np

    steps = np.arange(1000)
    calm = np.where(steps < 500, 0.3, 0.08)
    swing = np.where(steps < 500, 0.3, 0.03 * (1 + 0.9 * np.sin(steps / 9.0)))
    _write_simple(tmp_path, "calm", 0.01, calm)
    _write_simple(tmp_path, "swing", 0.1, swing)
    comp = compare_runs([tmp_path])
    rows = {r.id: r for r in comp.rows}
    assert not rows["calm"].unstable and rows["swing"].unstable
    assert any(w.startswith("swing: L0 not settled: second half swings") and "uncertain" in w for w in comp.warnings)
    assert rows["swing"].l0_noise > rows["calm"].l0_noise
    assert comp.target_source == "config" and comp.recommendation.bracket == ["calm", "swing"]
