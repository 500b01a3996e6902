"""Reports: golden Markdown for generated runs, the files written, sections, direction words, root causes.

Golden files live in tests/golden/; regenerate them after an intended change with
``SAE_REPORT_UPDATE_GOLDEN=1 pytest tests/test_report.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from sae_report import __version__
from sae_report.analysis.result import FindingKind
from sae_report.fixtures import write_run
from sae_report.report import render_report, write_report
from sae_report.runlog import read_run
from test_report_support import writeup_analysis, writeup_data

GOLDEN = Path(__file__).parent / "golden"
MANIFEST = ".sae-report-manifest.json"
UPDATE = os.environ.get("SAE_REPORT_UPDATE_GOLDEN") == "1"
COMMAND = "sae-report analyze runs/train_e01c6183"


def _normalise(md: str) -> str:
    return md.replace(f"sae-report {__version__}", "sae-report VERSION")


def _check_golden(name: str, md: str) -> None:
    path = GOLDEN / name
    text = _normalise(md)
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"{path} is missing: run with SAE_REPORT_UPDATE_GOLDEN=1 to create it, then review it")
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file (SAE_REPORT_UPDATE_GOLDEN=1 to accept)"


@pytest.fixture(scope="module")
def writeup(tmp_path_factory):
    return writeup_data(tmp_path_factory.mktemp("run"), rows=500)


def test_golden_markdown_of_the_writeup_run(tmp_path) -> None:
    """The write-up's run beside its two siblings, as `sae-report fixtures demo/` writes them: the
    report reads like the write-up, and every claim in it is true of the run's raw log."""
    from claimcheck import RawLog, check_document
    from sae_report.fixtures import write_siblings
    from sae_report.pipeline import analyze_path

    runs = write_siblings(tmp_path, rows=500)
    run_dir = runs[-1].run_dir
    result = analyze_path(run_dir, formats=())
    assert check_document(json.loads(json.dumps(result.analysis.to_dict())), RawLog.read(run_dir)) == []
    md = render_report(result.analysis, result.data, ("md",), command=COMMAND, comparison=result.comparison,
                       date="2025-11-01")["report.md"].decode()
    _check_golden("report_writeup_analyzed.md", md)
    for text in ("# Training Results Analysis: train_e01c6183", "**Date:** 2025-11-01", "```yaml\n",
                 "| **L0** | 2.18% | 2.22% | 5.0% | 44% (undershoot) | ⚠️ off target |",
                 "| **train_e01c6183** (this run) | 0.065 | 10K | 2.22% | 44% (undershoot) | 2.18% |",
                 "- **Next run:** l1_alpha 0.065 -> 0.0259 (0.017 to 0.0347)",
                 "<- Collapse", "**Phase 1: Initial collapse (Steps 0-", "**Phase 2: Recovery & instability",
                 "**Phase 3: Oscillation with late spike", "## Root Cause Notes", "### 1. Resampling thrash",
                 "## Recommendations", "- **Coincides with:** the resample at step 90,000",
                 "lower l1_alpha -> weaker sparsity penalty -> more active features -> higher L0",
                 "`sae-report analyze runs/train_e01c6183`"):
        assert text in md, text
    assert not re.search(r"raise l1_alpha[^.|]*higher L0", md)
    # Verdict first: the verdict, L0 and fidelity against their targets, the most severe finding and the
    # next config open the report; the key settings are a short table; the full config is the appendix.
    head = md.split("## Results Summary")[0]
    assert head.index("**Verdict: ⚠️ Worth acting on.**") < head.index("**Date:**")
    for line in ("- **L0:** ⚠️ 2.22% settled (second-half median), 2.18% at the end; target 5.0%: 44% of target "
                 "(settled, undershooting)", "- **Fidelity:** explained variance ", "MSE ",
                 "- **Most severe finding:** ⚠️ Collapse, steps 13K-20.3K (L0; finding ",
                 "| l1_alpha | learning_rate | d_in | d_sae | batch_size | total_steps | resample_interval |"):
        assert line in head, line
    assert "```yaml" not in head and md.rindex("## Appendix: Full Configuration") > md.index("## Findings")
    # Findings by severity (fail, warn, info; then step): no info finding before a warn one.
    severities = re.findall(r"^### \d+\. (⚠️|ℹ️|❌) ", md.split("## Findings")[1].split("## Resampling")[0], re.M)
    order = {"❌": 0, "⚠️": 1, "ℹ️": 2}
    assert severities and [order[x] for x in severities] == sorted(order[x] for x in severities)
    # Fidelity in the results table and the step tables, and its chart.
    assert "| **Explained variance** | " in md and "| **MSE** | " in md and "charts/fidelity.svg" in md
    assert "Best performance" not in md


@pytest.mark.parametrize("scenario,expect", [("writeup", "Collapse"), ("dead_000", "Secondary rise")])
def test_golden_markdown_from_the_analyzer(tmp_path, scenario, expect) -> None:
    analysis_mod = pytest.importorskip("sae_report.analysis")
    run = write_run(tmp_path, scenario, seed=0, rows=500)
    data = read_run(run.run_dir)
    analysis = analysis_mod.analyze(data)
    md = render_report(analysis, data, ("md",), command=f"sae-report analyze runs/{data.run_id}",
                       date="2025-11-01")["report.md"].decode()
    _check_golden(f"report_{scenario}_analyzed.md" if scenario != "writeup" else "report_writeup_alone.md", md)
    assert "## Findings" in md and expect in md
    from claimcheck import RawLog, check_document

    assert check_document(json.loads(json.dumps(analysis.to_dict())), RawLog.read(run.run_dir)) == []


def test_write_report_writes_every_format_atomically(writeup, tmp_path) -> None:
    out = tmp_path / "report"
    files = write_report(writeup_analysis(), writeup, out, command=COMMAND, date="2025-11-01")
    names = sorted(p.relative_to(out).as_posix() for p in files)
    assert names == ["analysis.json", "charts/dead.svg", "charts/fidelity.svg", "charts/l0.svg", "charts/loss.svg",
                     "charts/schedules.svg", "report.html", "report.md"]
    # no temp files; the manifest lists what this tool wrote (the only files it will ever remove)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "analysis.json", "charts", "report.html", "report.md"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == names and manifest["dirs"] == ["charts"]
    doc = json.loads((out / "analysis.json").read_text())
    assert doc["run"]["id"] == "train_e01c6183" and doc["schema_version"] == 2
    md = (out / "report.md").read_text()
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / img).is_file(), img
        assert (out / img).read_bytes().startswith(b"<svg")


def test_existing_report_is_replaced_whole(writeup, tmp_path) -> None:
    out = tmp_path / "report"
    data_with_stats = writeup_data(tmp_path / "s", rows=300, with_stats=True)
    write_report(writeup_analysis(), data_with_stats, out, formats=("md",), date="2025-11-01")
    assert (out / "charts" / "input_dims.svg").exists() and (out / "charts" / "feature_freq.svg").exists()
    (out / "charts" / "notes.txt").write_text("mine")  # not ours: kept
    (out / "charts" / "architecture.png").write_bytes(b"\x89PNG mine")  # not ours, though a chart suffix: kept
    (out / ".charts-new-abc123").mkdir()  # not in the manifest: never removed
    write_report(writeup_analysis(), writeup, out, formats=("md",), date="2025-11-01", image_format="png")
    charts = sorted(p.name for p in (out / "charts").iterdir())
    assert charts == ["architecture.png", "dead.png", "fidelity.png", "l0.png", "loss.png", "notes.txt",
                      "schedules.png"]  # stale svgs gone
    assert (out / "charts" / "l0.png").read_bytes().startswith(b"\x89PNG")
    assert "charts/l0.png" in (out / "report.md").read_text()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".charts-new-abc123", MANIFEST]


def test_format_subset_and_unknown_format(writeup, tmp_path) -> None:
    files = write_report(writeup_analysis(), writeup, tmp_path, formats=("json",))
    assert [p.name for p in files] == ["analysis.json"] and not (tmp_path / "charts").exists()
    with pytest.raises(ValueError, match=r"unknown report format\(s\) 'pdf' \(choose from md, html, json\)"):
        write_report(writeup_analysis(), writeup, tmp_path, formats=("md", "pdf"))
    with pytest.raises(ValueError, match=r"unknown image format 'gif'"):
        write_report(writeup_analysis(), writeup, tmp_path, image_format="gif")


def test_optional_sections_are_left_out_cleanly(writeup) -> None:
    a = writeup_analysis(recommendations=False)
    a = replace(a, resampling=[], findings=[], phases=[], input_outliers=[], skipped=[], root_causes=[],
                resampling_summary=[])
    files = render_report(a, writeup, ("md", "html"), date="2025-11-01")
    md, html = files["report.md"].decode(), files["report.html"].decode()
    for gone in ("Comparison to Previous Trainings", "## Recommendations", "Root Cause Notes", "Not Analysed"):
        assert gone not in md and gone not in html
    assert "Nothing out of the ordinary was found." in md and "No resampling events were logged." in md
    assert "No phases were detected. The run at every 10% of its steps:" in md
    assert "\n\n\n\n" not in md


def test_direction_words_are_unambiguous(writeup) -> None:
    md = render_report(writeup_analysis(), writeup, ("md",), date="2025-11-01")["report.md"].decode()
    assert "To raise L0: lower l1_alpha -> weaker sparsity penalty -> more active features -> higher L0." in md
    assert "| `l1_alpha` | 0.065 | **0.045** | 0.04 to 0.047 | lower l1_alpha -> weaker sparsity penalty" in md
    # The write-up's mistake must never be printed: raising l1_alpha never goes with a higher L0.
    assert not re.search(r"raise l1_alpha[^.|]*higher L0", md)
    over = writeup_analysis()
    settled = next(t for t in over.targets if t.metric == "Settled L0")
    over = replace(over, targets=[replace(settled, result=0.1129, percent_of_target=225.8)], recommendations=[])
    md = render_report(over, writeup, ("md",), date="2025-11-01")["report.md"].decode()
    assert ("L0 is above its target (226% of target, settled). To lower L0: raise l1_alpha -> stronger sparsity "
            "penalty -> fewer active features -> lower L0.") in md


def test_root_cause_rules(tmp_path) -> None:
    from sae_report.analysis import analyze

    a = writeup_analysis()
    assert [rc.title for rc in a.root_causes] == ["Resampling thrash"]
    data = writeup_data(tmp_path / "stats", rows=500, with_stats=True)
    causes = analyze(data).root_causes
    assert causes[0].title == "Dead features with outlier input dimensions"
    assert "Input dimensions 17, 301 reach up to 62.3x the typical dimension's largest magnitude" in causes[0].sentence.text
    # A collapse soon after an l1_alpha warm-up ends (read off the l1_alpha column, no event).
    import numpy as np
    import polars as pl
    from sae_report.runlog import RunData

    steps = np.arange(0, 20_001, 10)
    l1 = np.minimum(1.0, (steps + 10) / 2_000) * 0.05
    l0 = np.exp(np.interp(steps, [0, 1_000, 2_000, 3_000, 5_000, 20_000],
                          np.log([0.5, 0.1, 0.06, 0.004, 0.05, 0.05])))
    frame = pl.DataFrame({"step": steps, "l1_alpha": l1, "l0_frac": l0, "loss": np.full(len(steps), 0.01)})
    warm = analyze(RunData(run_id="warm", path=tmp_path, config={"target_l0": 0.05}, metrics=frame, source="csv"))
    titles = [rc.title for rc in warm.root_causes]
    assert "Collapse soon after the l1_alpha warm-up ends" in titles, [f.kind for f in warm.findings]
    text = next(rc.sentence.text for rc in warm.root_causes if "warm-up" in rc.title)
    assert "l1_alpha rose from 0.00025 to 0.05, reaching it at step 1,980" in text


def test_unknown_finding_kind_uses_the_generic_partial(writeup) -> None:
    a = writeup_analysis()
    doc = a.to_dict()
    doc["findings"].append({"kind": "new_kind", "metric": "loss", "step": 5, "end_step": None, "severity": "info",
                            "evidence": {"x": 1}, "coincides_with": None, "explanation": "Something new."})

    class Stub:
        run = a.run

        def to_dict(self):
            return doc

    md = render_report(Stub(), writeup, ("md",), date="2025-11-01")["report.md"].decode()
    assert re.search(r"### \d\. ℹ️ New kind: Step 5 \(loss\)\n\nSomething new\.\n\n- \*\*Coincides with:\*\* no logged or inferred", md)


def test_cli_analyze_writes_the_report_and_replaces_it(tmp_path) -> None:
    from click.testing import CliRunner

    from sae_report.cli import main

    run = write_run(tmp_path, "thrash", seed=0, rows=300, with_stats=True)
    out = tmp_path / "review"
    result = CliRunner().invoke(main, ["analyze", str(run.run_dir), "--out", str(out), "--format", "md,html"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "charts", "report.html", "report.md"]
    md = (out / "report.md").read_text()
    assert md.startswith("# Training Results Analysis: synthetic_thrash\n")
    assert "## Root Cause Notes" in md and "Resampling thrash" in md
    assert sorted(p.name for p in (out / "charts").iterdir()) == [
        "dead.svg", "feature_freq.svg", "fidelity.svg", "input_dims.svg", "l0.svg", "loss.svg", "schedules.svg"]
    html = (out / "report.html").read_text()
    assert html.count("window.vegaEmbed=") == 1 and "<script src" not in html and "https://" not in html.split("<script>")[0]
    # Again into the same folder, Markdown only: the report is replaced, nothing stale or temporary stays.
    result = CliRunner().invoke(main, ["analyze", str(run.run_dir), "--out", str(out), "--format", "md"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.rglob(".*")] == [MANIFEST]


def test_sparse_foreign_log_still_gives_a_report(tmp_path) -> None:
    """A log with only step, loss and an L0 count (no config, no events, no stats)."""
    import numpy as np
    import polars as pl

    from sae_report.analysis.result import Analysis, RunInfo
    from sae_report.runlog import RunData

    steps = np.arange(0, 5_000, 10)
    frame = pl.DataFrame({"step": steps, "loss": np.where(steps > 4_000, np.nan, 1.0 / (steps + 10.0)),
                          "l0": np.where(steps < 100, 0.0, 40.0 + steps / 100)})
    data = RunData(path=tmp_path / "m.csv", run_id="m", config={}, metrics=frame, source="csv")
    a = Analysis(run=RunInfo("m", str(tmp_path / "m.csv"), {}, "csv", frame.height, 0, 4_990, True, None, ["a note"]),
                 summary={}, step_table=[], targets=[], phases=[], findings=[], resampling=[], resampling_summary=[],
                 root_causes=[], interventions=[], verdict=None, input_outliers=[], recommendations=[], skipped=[])
    files = write_report(a, data, tmp_path / "report", date="2025-11-01")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "# no config recorded" in md and "(sampled history: figures are approximate)" in md
    assert "No metrics to summarise." in md and "- Note: a note" in md
    assert sorted(p.name for p in (tmp_path / "report" / "charts").iterdir()) == ["l0.svg", "loss.svg"]
    html = (tmp_path / "report" / "report.html").read_text()
    assert html.count('<script type="application/json"') == 2 and "NaN" not in html.split("<script>")[0]
    assert len(files) == 5


def test_every_finding_kind_has_its_partials() -> None:
    root = Path(__file__).resolve().parents[1] / "templates"
    for kind in FindingKind:
        assert (root / "md" / "finding" / f"{kind.value}.md.j2").is_file(), kind
        assert (root / "html" / "finding" / f"{kind.value}.html.j2").is_file(), kind


def test_a_chart_that_fails_to_render_is_left_out_with_a_note(writeup, monkeypatch) -> None:
    from sae_report.report import render

    real = render.chart_image

    def flaky(spec, image_format="svg"):
        if "dead" in spec.get("datasets", {}):
            raise RuntimeError("renderer broke\nsecond line")
        return real(spec, image_format)

    monkeypatch.setattr(render, "chart_image", flaky)
    files = render_report(writeup_analysis(), writeup, ("md",), date="2025-11-01")
    md = files["report.md"].decode()
    assert "charts/dead.svg" not in md and "charts/dead.svg" not in files and "charts/l0.svg" in files
    assert "- Note: chart dead could not be rendered (RuntimeError: renderer broke)" in md


def test_one_on_target_rule_in_every_table_and_headline() -> None:
    """"(undershoot)" / "(overshoot)" only outside the analyzer's on-target band (AnalyzerConfig's
    target_ok_band, 80% to 125%): the run report's tables and headline, the comparison, the campaign
    and the terminal all format through report.formatting."""
    from sae_report.analysis.config import AnalyzerConfig
    from sae_report.report import formatting as fm

    low, high = AnalyzerConfig().target_ok_band
    assert (low, high) == (0.8, 1.25)
    assert fm.of_target(44.4) == "44% (undershoot)" and fm.of_target(226) == "226% (overshoot)"
    assert fm.of_target(97) == "97%" and fm.of_target(80) == "80%" and fm.of_target(79) == "79% (undershoot)"
    assert fm.of_target(125) == "125%" and fm.of_target(126) == "126% (overshoot)" and fm.of_target(None) == "-"
    assert [fm.target_side(r) for r in (50, 92, 110, 130)] == ["undershoot", "", "", "overshoot"]
    rows = fm.display_rows([{"id": "a", "l1_alpha": 0.02, "pct_of_target": 92.0, "settled_l0": 0.046}])
    assert rows[0]["pct_target"] == "92%" and rows[0]["l1_alpha"] == "0.02"
