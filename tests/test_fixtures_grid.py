"""The scenario grid, and the ground-truth checker itself (``Truth.problems`` / ``phase_problems``)
on hand-made analyses: no analyzer runs here."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace as NS

import numpy as np
import pytest

from sae_report.analysis.result import FindingKind
from sae_report.fixtures import SCENARIOS, Expect, GridCase, Truth, TruthPhase, generate, grid, write_case
from sae_report.fixtures.grid import LENGTHS, NOISES, ROWS
from sae_report.runlog import read_run

K = FindingKind


# --- the grid ------------------------------------------------------------------------------------


def test_quick_grid_has_every_scenario_twice_with_unique_ids() -> None:
    cases = grid("quick")
    per = Counter(c.scenario for c in cases)
    assert set(per) == set(SCENARIOS) and min(per.values()) >= 2 and len(cases) <= 70
    assert len({c.id for c in cases}) == len(cases)
    assert {c.seed for c in cases} == {0, 1} and {c.noise for c in cases} <= set(NOISES)
    assert GridCase("writeup", 100_000, 2000, 0, 1.0).id == "writeup-100K-r2000-s0-n1"
    assert GridCase("jitter", 200_000_000, 200, 3, 0.5).id == "jitter-200M-r200-s3-n0.5"


def test_full_grid_crosses_lengths_rows_seeds_and_noise() -> None:
    cases = grid("full")
    assert len({c.id for c in cases}) == len(cases)
    for name in SCENARIOS:
        mine = [c for c in cases if c.scenario == name]
        assert {c.noise for c in mine} == set(NOISES) and {c.seed for c in mine} == set(range(10))
        if name == "sparse_logging":
            assert {(c.steps, c.rows) for c in mine} == {(100_000, 100)}
        else:
            assert {c.steps for c in mine} == set(LENGTHS)
            assert {(c.steps, c.rows) for c in mine} == {(n, r) for n in LENGTHS for r in ROWS if r <= n}
    with pytest.raises(ValueError, match="quick"):
        grid("huge")  # type: ignore[arg-type]


def test_quick_grid_writes_and_reads_back_in_seconds(tmp_path: Path) -> None:
    start = time.perf_counter()
    for case in grid("quick"):
        run = write_case(tmp_path, case)
        data = read_run(run.run_dir)
        assert run.run_dir.name == case.id and run.scenario == case.scenario and run.steps == case.steps
        step = data.metrics["step"]
        assert step.n_unique() == data.metrics.height <= min(case.rows, case.steps) + 2
        assert step[-1] == (case.steps if case.scenario != "diverged" else round(0.72 * case.steps))
    assert time.perf_counter() - start < 30


def test_a_case_is_written_the_same_way_twice(tmp_path: Path) -> None:
    case = GridCase("healthy_noisy", 100_000, 2000, 7, 2.0)
    a = read_run(write_case(tmp_path / "a", case).run_dir).metrics
    b = read_run(write_case(tmp_path / "b", case).run_dir).metrics
    assert a.equals(b)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_noise_zero_is_noiseless_and_the_noise_level_scales_it(name: str) -> None:
    quiet = [generate(name, steps=20_000, seed=s, noise=0.0).columns for s in (0, 1)]
    for k in quiet[0]:
        assert np.array_equal(quiet[0][k], quiet[1][k], equal_nan=True), k
    if name in ("healthy_noisy", "writeup", "clean"):
        sd = [np.std(np.diff(np.log(generate(name, steps=20_000, seed=0, noise=n).columns["l0_frac"][1000:])))
              for n in (0.5, 2.0)]
        assert sd[1] == pytest.approx(4 * sd[0], rel=0.25)


# --- the truth checker on hand-made analyses ------------------------------------------------------


def _f(kind: K, metric: str, step: int, end: int | None = None, severity: str = "warn", link=None) -> NS:
    return NS(kind=kind, metric=metric, step=step, end_step=end, severity=severity, coincides_with=link)


def _a(findings=(), phases=(), first: int = 0, last: int = 1000) -> NS:
    return NS(findings=list(findings), phases=[NS(name=n, metric=m, start_step=a, end_step=b) for n, m, a, b in phases],
              run=NS(first_step=first, last_step=last))


def test_problems_checks_presence_window_start_end_and_severity() -> None:
    t = Truth(phases=(), must=(Expect(K.COLLAPSE, "l0_frac", 100, 200, starts=(0, 150), ends=(900, 1000),
                                      severity="fail"),), must_not=frozenset({K.SPARSIFICATION}))
    assert t.problems(_a([_f(K.COLLAPSE, "l0_frac", 120, 1000, "fail")])) == []
    assert t.problems(_a())[0].startswith("missing collapse in l0_frac overlapping [100, 200]")
    assert "expected a start in [0, 150]" in t.problems(_a([_f(K.COLLAPSE, "l0_frac", 180, 1000, "fail")]))[0]
    assert "expected an end in [900, 1000]" in t.problems(_a([_f(K.COLLAPSE, "l0_frac", 120, 400, "fail")]))[0]
    assert "severity ['warn'], expected fail" in t.problems(_a([_f(K.COLLAPSE, "l0_frac", 120, 1000)]))[0]
    assert t.problems(_a([_f(K.COLLAPSE, "l0_frac", 120, 1000, "fail"), _f(K.SPARSIFICATION, "l0_frac", 0, 90)])) == [
        "unexpected sparsification in l0_frac at 0"]


def test_problems_checks_the_linked_intervention_kind_inferred_flag_and_step() -> None:
    e = Expect(K.SECONDARY_RISE, "dead_frac", 800, 900, coincides_with="lr_change", inferred=True, at_step=790,
               at_tol=10)
    t = Truth(phases=(), must=(e,), must_not=frozenset())
    iv = lambda kind="lr_change", step=795, inferred=True: NS(kind=kind, step=step, inferred=inferred)  # noqa: E731
    ok = _f(K.SECONDARY_RISE, "dead_frac", 850, 1000, link=iv())
    assert t.problems(_a([ok])) == []
    assert "names nothing" in t.problems(_a([_f(K.SECONDARY_RISE, "dead_frac", 850, 1000)]))[0]
    assert "names the inferred resample" in t.problems(_a([_f(K.SECONDARY_RISE, "dead_frac", 850, 1000,
                                                              link=iv(kind="resample"))]))[0]
    assert "expected one inferred from the logged columns" in t.problems(_a([_f(
        K.SECONDARY_RISE, "dead_frac", 850, 1000, link=iv(inferred=False))]))[0]
    assert "expected the lr_change at 790 (+-10)" in t.problems(_a([_f(
        K.SECONDARY_RISE, "dead_frac", 850, 1000, link=iv(step=850))]))[0]
    several = Truth(phases=(), must=(Expect(K.RESAMPLE_THRASH, None, 0, 1000, coincides_with="resample",
                                            inferred=True, at_step=(100, 200, 300), at_tol=5),), must_not=frozenset())
    assert several.problems(_a([_f(K.RESAMPLE_THRASH, "dead_frac", 100, 1000, link=iv("resample", 203))])) == []
    either = Truth(phases=(), must=(Expect(K.COLLAPSE, ("l0_frac", "l0"), 0, 1000),), must_not=frozenset())
    assert either.problems(_a([_f(K.COLLAPSE, "l0", 10, 1000)])) == []
    assert either.problems(_a([_f(K.COLLAPSE, "dead_frac", 10, 1000)]))[0].startswith(
        "missing collapse in l0_frac or l0 overlapping [0, 1000]")
    with pytest.raises(ValueError, match="need coincides_with"):
        Expect(K.COLLAPSE, None, 0, 1, inferred=True)


def test_no_alarm_and_must_not_in_a_span() -> None:
    t = Truth(phases=(), must=(), must_not=frozenset(), no_alarm=True,
              must_not_in=(Expect(K.PLATEAU, None, 600, 1000),))
    assert t.problems(_a([_f(K.PLATEAU, "l0_frac", 100, 599, "info")])) == []
    assert t.problems(_a([_f(K.PLATEAU, "dead_frac", 500, 1000, "info")])) == [
        "unexpected plateau in dead_frac at 500-1000 (none may overlap [600, 1000])"]
    assert t.problems(_a([_f(K.LATE_SPIKE, "l0_frac", 900, 910)])) == [
        "alarm on a clean run: late_spike (warn) in l0_frac at 900"]


def test_phase_problems_match_names_by_overlap_and_boundaries_within_tolerance() -> None:
    t = Truth(phases=(TruthPhase("Sparsification", 0, 100),
                      TruthPhase("Settled", 150, 1000, names=("Settled", "Plateau")),
                      TruthPhase("Dormancy", 0, 60, "dead_frac"),
                      TruthPhase("Rapid accumulation", 60, 500, "dead_frac")),
              must=(), must_not=frozenset())
    good = [("Sparsification", "l0_frac", 0, 120), ("Plateau", "l0_frac", 120, 1000),
            ("Dormancy", "dead_frac", 0, 70), ("Rapid accumulation", "dead_frac", 70, 480),
            ("Settled", "dead_frac", 480, 1000)]
    assert t.all_problems(_a(phases=good)) == []
    off = [("Sparsification", "l0_frac", 0, 230), ("Slow decay (not converged)", "l0_frac", 230, 1000)]
    probs = t.phase_problems(_a(phases=off))
    assert any(p.startswith("phase 'Settled' on l0_frac [150, 1000] (accepts ['Settled', 'Plateau']) not found")
               for p in probs)
    assert any(p.startswith("no phase boundary on l0_frac between 'Sparsification' and 'Settled' within [50, 200]")
               for p in probs)
    assert "no phases on dead_frac (expected ['Dormancy', 'Rapid accumulation'])" in probs
    slow = Truth(phases=(TruthPhase("Slow decay", 0, 1000),), must=(), must_not=frozenset())
    assert slow.phase_problems(_a(phases=[("Slow decay (not converged)", "l0_frac", 0, 1000)])) == []
    with pytest.raises(ValueError, match="vocabulary"):
        TruthPhase("Resample thrash", 0, 10)


def test_every_scenario_truth_uses_the_phase_vocabulary_and_real_steps() -> None:
    for name in SCENARIOS:
        g = generate(name, steps=10_000, rows=500)
        assert g.truth.phases, name
        for p in g.truth.phases:
            assert p.end_step <= 10_000 and p.names[0] == p.name
        for e in g.truth.must:
            if e.at_step is not None:
                steps = set(g.columns["step"].tolist())
                targets = e.at_step if isinstance(e.at_step, tuple) else (e.at_step,)
                assert all(s in steps or any(ev["step"] == s for ev in g.events) for s in targets), (name, e)
