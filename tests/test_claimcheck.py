"""The claim checker (``tests/claimcheck.py``) can pass and can fail.

A small run is written by hand (two parts, the second a resume that supersedes, a duplicate step,
a stale CSV next to its parquet, a CSV cut short, NaN/inf cells, ``lr`` at another cadence, only
``l0`` counts), an analysis-like document with true claims of every statistic is checked clean,
and each kind of wrong number is then planted and must be reported at its location.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import polars as pl
import pytest
import yaml

from claimcheck import RawLog, check_claim, check_document
from sae_report.fixtures import generate, write_run

N = None
NAN, INF = math.nan, math.inf
# part 0 (parquet): step 5 twice (the last row wins); 9 and 10 are stale (the resumed part starts at 9)
PART0 = {"step": [1, 2, 3, 4, 5, 5, 6, 7, 8, 9, 10],
         "loss": [5.0, 4.0, 3.0, 2.5, 9.9, 2.0, 1.8, 1.5, 1.4, 99.0, 98.0],
         "l0": [50.0, 40, 30, 20, 99, 15, 12, 10, 8, 1, 1],
         "lr": [1e-3, N, N, 1e-3, N, N, N, 1e-3, N, N, 1e-3],
         "dead_frac": [0.0, 0.1, 0.2, 0.3, 0.9, 0.4, 0.4, 0.5, 0.5, 0.9, 0.9]}
PART1_CSV = ("step,loss,l0,lr,dead_frac\n9,1.3,9,0.0005,0.5\n10,1.2,7,,0.45\n11,1.1,6,,0.45\n12,nan,5,,0.4\n"
             "13,inf,4,0.0005,0.35\n14,1.0,3,,\n15,0.9,3,,0.3\n16,NaN,4,,0.3\n17,0.1,1,,0.1")  # 17: cut short
LOSS = [5.0, 4.0, 3.0, 2.5, 2.0, 1.8, 1.5, 1.4, 1.3, 1.2, 1.1, NAN, INF, 1.0, 0.9, NAN]
L0 = [50.0, 40, 30, 20, 15, 12, 10, 8, 9, 7, 6, 5, 4, 3, 3, 4]
EVENTS = [{"step": 0, "kind": "start"}, {"step": 4, "kind": "resample", "n": 3},
          {"step": 9, "kind": "resample", "n": 2}, "{not json", {"step": 8, "kind": "resume"},
          {"step": 12, "kind": "resample", "n": 1}, {"step": 13, "kind": "lr_change", "value": 5e-4},
          {"step": 16, "kind": "end", "status": "completed"}]
CONFIG = {"schema_version": 1, "run_id": "hand", "d_sae": 100, "l1_alpha": 0.05, "learning_rate": 1e-3}


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "hand"
    (d / "metrics").mkdir(parents=True)
    pl.DataFrame(PART0, schema={"step": pl.Int64, **{k: pl.Float64 for k in PART0 if k != "step"}}) \
        .write_parquet(d / "metrics" / "part-000000.parquet")
    (d / "metrics" / "part-000000.csv").write_text("step,loss\n1,7.7\n2,7.7\n")  # stale: the parquet wins
    (d / "metrics" / "part-000001.csv").write_text(PART1_CSV)
    (d / "events.ndjson").write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in EVENTS))
    (d / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return d


def C(metric, stat, value, step=None, start=None, end=None, threshold=None, event=None, of=(), unit=""):
    return {"metric": metric, "stat": stat, "value": value, "step": step, "start_step": start, "end_step": end,
            "threshold": threshold, "event": event, "of": list(of), "unit": unit}


def good_doc() -> dict:
    """A document whose every number is true of the hand-written run (computed by hand)."""
    claims = {
        "trough": C("l0_frac", "min", 0.03, step=14, start=1, end=16),
        "peak": C("loss", "max", 5.0, step=1, start=1, end=16),
        "med": C("l0_frac", "median", 0.09, start=5, end=11),
        "mean": C("loss", "mean", 1.1, start=9, end=15),
        "std": C("loss", "std", math.sqrt(0.02), start=9, end=15),
        "dead_med": C("dead", "median", 15.0, start=1, end=4),
        "nonfinite": C("loss", "count_nonfinite", 3, start=1, end=16),
        "below": C("l0_frac", "first_step_below", 8, start=1, end=16, threshold=0.1),
        "above_none": C("loss", "first_step_above", None, start=12, end=16, threshold=1.0),
        "above": C("dead", "first_step_above", 10, start=10, end=16, threshold=42),
        "blowup": C("loss", "first_step_nonfinite", 12, start=1, end=16),
        "resamples": C("events", "count_events", 2, start=0, end=16, event="resample"),
        "lr_at": C("lr", "value", 5e-4, step=13),
        "lr_gap": C("lr", "value", None, step=12),
        "loss_inf": C("loss", "value", "inf", step=13),
        "lr_first": C("lr", "first", 1e-3, step=1),
        "lr_last": C("lr", "last", 5e-4, step=13),
        "loss_last": C("loss", "last", "nan", step=16),
        "alpha": C("l1_alpha", "config", 0.05),
        "ratio": C("", "ratio", 5.0 / 1.1, of=("peak", "mean")),
        "diff": C("loss", "difference", 3.9, of=("peak", "mean")),
        "medof": C("", "median_of", 3.05, of=("peak", "mean", "lr_gap")),
        "countof": C("", "count_of", 3, of=("peak", "mean", "lr_gap")),
        "nonnull": C("", "count_nonnull_of", 2, of=("peak", "mean", "lr_gap")),
    }
    sentence_claims = {"rs": claims["resamples"], "b": claims["blowup"]}
    return {
        "schema_version": 2,
        "run": {"id": "hand", "config": {**CONFIG, "l1_alpha": 0.05}, "d_sae": 100},
        "findings": [{"kind": "collapse", "claims": claims, "evidence": {"trough": 0.03, "peak": 5.0, "from": [1]},
                      "template": "L0 fell to {trough} at step {trough.step}; loss peaked at {peak} ({ratio} the mean).",
                      "explanation": "L0 fell to 3.00% at step 14; loss peaked at 5 (4.5x the mean)."}],
        "summary": {
            "loss": {"metric": "loss", "final": "nan", "second_half_mean": 1.1, "claims": {
                "final": C("loss", "last", "nan", step=16),
                "second_half_mean": C("loss", "mean", 1.1, start=9, end=16)}},
            "l0_frac": {"final": 0.04, "claims": {"final": C("l0_frac", "last", 0.04, step=16)}},
            "lr": {"final": 5e-4}},
        "step_table": [{"step": 1, "values": {"loss": 5.0, "l0_frac": 0.5, "lr": 1e-3, "dead": 0.0}},
                       {"step": 12, "values": {"loss": "nan", "l0_frac": 0.05, "lr": None, "dead": 40.0}},
                       {"step": 13, "values": {"loss": "inf", "lr": 5e-4, "dead_frac": 0.35}},
                       {"step": 14, "values": {"dead_frac": None, "l0": 3.0}}],
        "targets": [{"metric": "Final L0", "result": 0.04, "claim": C("l0_frac", "last", 0.04, step=16)}],
        "phases": [{"name": "Collapse", "claims": {"level": C("l0_frac", "median", 0.09, start=5, end=11)}}],
        "verdict": {"sentences": [{"template": "{rs} resamples; the loss blew up at step {b}.",
                                   "text": "2 resamples; the loss blew up at step 12.", "claims": sentence_claims}]},
    }


def test_reader_applies_the_run_format_rules(run_dir):
    raw = RawLog.read(run_dir)
    assert raw.steps.to_list() == list(range(1, 17))  # 17 was cut short, 9/10 superseded, 5 once
    st, v = raw.column("loss")
    assert st.tolist() == list(range(1, 17))
    np.testing.assert_array_equal(v, np.array(LOSS))  # NaN == NaN here
    st, v = raw.column("lr")
    assert st.tolist() == [1, 4, 7, 9, 13] and v.tolist() == [1e-3, 1e-3, 1e-3, 5e-4, 5e-4]
    assert raw.column("l0_frac", 100)[1].tolist() == [x / 100 for x in L0]
    assert raw.column("dead", 100)[0].tolist() == [s for s in range(1, 17) if s != 14]
    assert raw.cell("dead", 12, 100) == 0.4 * 100 and raw.cell("lr", 12) is None
    assert [(e["kind"], e["step"]) for e in raw.events] == [
        ("start", 0), ("resample", 4), ("resume", 8), ("resample", 12), ("lr_change", 13), ("end", 16)]
    assert raw.config["d_sae"] == 100


def test_single_file_log(tmp_path):
    (tmp_path / "m.csv").write_text("step,loss\n2,1.0\n1,3.0\n2,2.0\n3,\n")
    raw = RawLog.read(tmp_path / "m.csv")
    assert raw.column("loss")[0].tolist() == [1, 2] and raw.column("loss")[1].tolist() == [3.0, 2.0]
    assert raw.config == {} and raw.has_step(3)


def test_true_document_passes(run_dir):
    assert check_document(good_doc(), RawLog.read(run_dir)) == []


def _set(doc, path, value):
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value


def _wrong(v):
    if v is None or isinstance(v, str):
        return 1.0
    return v + 1 if float(v).is_integer() else v * 1.01


@pytest.mark.parametrize("name", list(good_doc()["findings"][0]["claims"]))
def test_each_wrong_claim_value_is_reported(run_dir, name):
    doc = good_doc()
    claim = doc["findings"][0]["claims"][name]
    claim["value"] = _wrong(claim["value"])
    problems = check_document(doc, RawLog.read(run_dir))
    assert any(p.startswith(f"findings[0].claims.{name}: ") for p in problems), problems


CORRUPTIONS = {
    "value off by 1%": (("findings", 0, "claims", "med", "value"), 0.09 * 1.01, "findings[0].claims.med: "),
    "wrong step of a min": (("findings", 0, "claims", "trough", "step"), 15, "findings[0].claims.trough: "),
    "wrong step of a max": (("findings", 0, "claims", "peak", "step"), 2, "findings[0].claims.peak: "),
    "wrong span": (("findings", 0, "claims", "med", "start_step"), 4, "findings[0].claims.med: "),
    "wrong last step": (("findings", 0, "claims", "lr_last", "step"), 12, "findings[0].claims.lr_last: "),
    "wrong threshold": (("findings", 0, "claims", "below", "threshold"), 0.05, "findings[0].claims.below: "),
    "wrong event kind": (("findings", 0, "claims", "resamples", "event"), "end", "findings[0].claims.resamples: "),
    "step on a median": (("findings", 0, "claims", "med", "step"), 7, "findings[0].claims.med: "),
    "derived names a stranger": (("findings", 0, "claims", "ratio", "of"), ["peak", "nope"],
                                 "findings[0].claims.ratio: "),
    "template with a literal digit": (("findings", 0, "template"), "L0 fell to {trough} at step 14.",
                                      "findings[0].template: "),
    "placeholder names no claim": (("verdict", "sentences", 0, "template"), "{rs} resamples; {nope}.",
                                   "verdict.sentences[0].template: "),
    "malformed placeholder": (("verdict", "sentences", 0, "template"), "{rs:kg} resamples.",
                              "verdict.sentences[0].template: "),
    "text not the rendering": (("findings", 0, "explanation"),
                               "L0 fell to 3.01% at step 14; loss peaked at 5 (4.5x the mean).",
                               "findings[0].explanation: "),
    "step_table row with another step's values": (("step_table", 1, "step"), 11, "step_table[1].values.loss: "),
    "step_table step not logged": (("step_table", 0, "step"), 17, "step_table[0].step: "),
    "step_table finite for a NaN": (("step_table", 1, "values", "loss"), 1.1, "step_table[1].values.loss: "),
    "step_table value where none logged": (("step_table", 1, "values", "lr"), 5e-4, "step_table[1].values.lr: "),
    "summary.final not the last NaN": (("summary", "loss", "final"), 0.9, "summary.loss.final: "),
    "summary field differs from its claim": (("summary", "loss", "second_half_mean"), 1.2,
                                             "summary.loss.second_half_mean: "),
    "second half span": (("summary", "loss", "claims", "second_half_mean", "start_step"), 8,
                         "summary.loss.claims.second_half_mean: "),
    "evidence differs from its claim": (("findings", 0, "evidence", "trough"), 0.031, "findings[0].evidence.trough: "),
    "target result not its claim": (("targets", 0, "result"), 0.05, "targets[0].result: "),
    "target claim wrong": (("targets", 0, "claim", "value"), 0.05, "targets[0].claim: "),
    "config claim vs run.config": (("run", "config", "l1_alpha"), 0.06, "findings[0].claims.alpha: "),
    "phase level": (("phases", 0, "claims", "level", "end_step"), 16, "phases[0].claims.level: "),
    "schema version": (("schema_version",), 1, "schema_version: "),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_each_kind_of_wrong_number_is_reported(run_dir, case):
    path, value, where = CORRUPTIONS[case]
    doc = good_doc()
    _set(doc, path, value)
    problems = check_document(doc, RawLog.read(run_dir))
    assert any(p.startswith(where) for p in problems), problems


def test_message_names_metric_span_and_both_values(run_dir):
    doc = good_doc()
    doc["findings"][0]["claims"]["med"]["value"] = 0.0905
    (msg,) = check_document(doc, RawLog.read(run_dir))
    assert msg == "findings[0].claims.med: median of l0_frac over [5, 11] is 0.09, analysis says 0.0905"


def test_tolerance_and_nan(run_dir):
    raw, doc = RawLog.read(run_dir), good_doc()
    c = copy.deepcopy(doc["findings"][0]["claims"]["mean"])
    c["value"] = 1.1 * (1 + 5e-7)
    assert check_claim(c, raw, doc, {}) is None
    c["value"] = 1.1 * (1 + 5e-6)
    assert check_claim(c, raw, doc, {}) is not None
    c = C("loss", "value", "nan", step=12)
    assert check_claim(c, raw, doc, {}) is None
    c["value"] = "inf"
    assert "is nan, analysis says inf" in check_claim(c, raw, doc, {})
    nonfinite = C("loss", "count_nonfinite", 3.0000001, start=1, end=16)
    assert check_claim(nonfinite, raw, doc, {}) is not None  # counts are exact


def test_superseded_and_stale_values_are_not_the_log(run_dir):
    raw, doc = RawLog.read(run_dir), good_doc()
    for claim in (C("loss", "value", 99.0, step=9),   # the crashed segment's row, superseded by the resume
                  C("loss", "value", 9.9, step=5),    # the first row of a duplicated step
                  C("loss", "value", 7.7, step=1),    # the stale CSV twin of the parquet part
                  C("loss", "value", 0.1, step=17),   # the CSV line cut short
                  C("events", "count_events", 3, start=0, end=16, event="resample")):  # dropped by the resume
        assert check_claim(claim, raw, doc, {}) is not None, claim


def test_run_written_by_the_package(tmp_path):
    """The reader agrees with the package's own writer on real files (a resumed run, parquet + csv)."""
    run = write_run(tmp_path, "writeup", steps=20000, rows=500, resume_at=0.5, part_rows=150)
    parts = sorted((run.run_dir / "metrics").iterdir())
    assert len(parts) >= 4 and {p.suffix for p in parts} == {".parquet"}
    raw = RawLog.read(run.run_dir)
    truth = generate("writeup", 20000, 0, rows=500).columns  # what was logged, before the crash's rerun
    step, loss, l0f = truth["step"], truth["loss"], truth["l0_frac"]
    assert raw.steps.to_list() == step.tolist()
    np.testing.assert_array_equal(raw.column("loss")[1], loss)
    half = (step >= 10000) & (step <= 20000)
    span = (step >= 9000) & (step <= 12000)
    k = int(np.argmax(loss[span]))
    claims = {
        "final": C("loss", "last", float(loss[-1]), step=int(step[-1])),
        "late_l0": C("l0_frac", "median", float(np.median(l0f[half])), start=10000, end=20000),
        "peak": C("loss", "max", float(loss[span][k]), step=int(step[span][k]), start=9000, end=12000),
        "at": C("loss", "value", float(loss[step == 10400][0]), step=10400),
        "mean_dead": C("dead", "mean", float(np.mean(truth["dead"][half])), start=10000, end=20000),
        "resamples": C("events", "count_events", 9, start=0, end=20000, event="resample"),
        "resumes": C("events", "count_events", 1, start=0, end=20000, event="resume"),
    }
    doc = {"schema_version": 2, "run": {"config": run.config, "d_sae": run.config["d_sae"]},
           "findings": [{"claims": claims}],
           "step_table": [{"step": 10400, "values": {"loss": float(loss[step == 10400][0])}}]}
    assert check_document(doc, raw) == []
    tail = pl.read_parquet(parts[-1])  # the last part as a live writer's CSV tail, cut mid-line
    parts[-1].unlink()
    parts[-1].with_suffix(".csv").write_text(tail.write_csv(float_precision=None) + "1,2")
    raw = RawLog.read(run.run_dir)
    assert raw.steps.to_list() == step.tolist()
    assert check_document(doc, raw) == []
    claims["at"]["value"] *= 1.5  # the crashed segment's value at that step
    assert [p.split(":")[0] for p in check_document(doc, raw)] == ["findings[0].claims.at"]
