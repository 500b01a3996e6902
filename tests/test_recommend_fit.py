"""The l1_alpha fit: direction, bracketing, extrapolation, one run, saturation, settled levels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sae_report.recommend import (DEFAULT_ELASTICITY, MAX_STEP_FACTOR, RunPoint, recommend_l1, settled_level)
from sae_report.recommend.curve import pava_decreasing

WRITEUP = [RunPoint("train_0314574b", 0.005, 0.1129), RunPoint("train_05555a4b", 0.05, 0.0419),
           RunPoint("train_e01c6183", 0.065, 0.0218)]


def test_writeup_runs_land_between_0005_and_005_near_the_field_note_range():
    rec = recommend_l1(WRITEUP, 0.05)
    assert 0.005 < rec.low <= rec.l1_alpha <= rec.high < 0.05
    # log-log interpolation 0.005..0.05 gives ~0.033, the local slope 0.05..0.065 ~0.047
    assert rec.candidates["log-log interpolation"] == pytest.approx(0.0332, rel=0.01)
    assert rec.candidates["local slope at 0.05"] == pytest.approx(0.0466, rel=0.01)
    assert 0.033 <= rec.l1_alpha <= 0.047
    assert rec.low <= 0.034 and rec.high >= 0.046
    assert rec.direction == "lower"
    assert rec.bracket == ["train_0314574b", "train_05555a4b"]
    assert "lower l1_alpha -> weaker sparsity penalty -> more active features -> higher L0" in rec.explanation
    assert "raise" not in rec.explanation.lower().replace("raise l1_alpha", "")


def test_json_has_the_documented_keys():
    doc = recommend_l1(WRITEUP, 0.05).to_dict()
    assert list(doc)[:7] == ["l1_alpha", "low", "high", "predicted_l0", "basis", "direction", "explanation"]
    assert set(doc["basis"]) == {r.run_id for r in WRITEUP}
    assert doc["direction"] in ("raise", "lower")


def test_not_bracketed_extrapolates_with_warning_and_wider_interval():
    above = [RunPoint("a", 0.001, 0.20), RunPoint("b", 0.003, 0.12)]
    rec = recommend_l1(above, 0.05)
    assert rec.method == "extrapolate" and rec.direction == "raise"
    assert rec.l1_alpha > 0.003 and rec.low >= 0.003
    assert any("No run brackets the target" in w for w in rec.warnings)
    assert "raise l1_alpha -> stronger sparsity penalty -> fewer active features -> lower L0" in rec.explanation
    # raising beyond the tested range: the local slope (0.46 here) is used no flatter than the
    # default elasticity, since L0 falls faster the higher l1_alpha goes
    k = math.log(0.20 / 0.12) / math.log(3)
    assert k < DEFAULT_ELASTICITY
    assert rec.candidates["local slope"] == pytest.approx(0.003 * (0.12 / 0.05) ** (1 / DEFAULT_ELASTICITY), rel=1e-6)
    steep = recommend_l1([RunPoint("a", 0.001, 0.40), RunPoint("b", 0.003, 0.12)], 0.05)
    k2 = math.log(0.40 / 0.12) / math.log(3)
    assert steep.candidates["local slope"] == pytest.approx(0.003 * (0.12 / 0.05) ** (1 / k2), rel=1e-6)
    # lowering: the fitted local slope is used as it is
    low = recommend_l1([RunPoint("a", 0.1, 0.03), RunPoint("b", 0.3, 0.01)], 0.05)
    k3 = math.log(3) / math.log(3)
    assert low.direction == "lower" and low.candidates["local slope"] == pytest.approx(0.1 * (0.03 / 0.05) ** (1 / k3), rel=1e-6)
    bracketed = recommend_l1([RunPoint("a", 0.001, 0.20), RunPoint("b", 0.01, 0.02)], 0.05)
    assert math.log(rec.high / rec.low) > math.log(bracketed.high / bracketed.low)


def test_one_run_uses_the_default_elasticity():
    rec = recommend_l1([RunPoint("only", 0.05, 0.0419)], 0.05)
    assert rec.method == "single_run" and rec.direction == "lower"
    assert rec.l1_alpha == pytest.approx(0.05 * (0.0419 / 0.05) ** (1 / DEFAULT_ELASTICITY), rel=0.005)
    assert rec.low < rec.l1_alpha < rec.high <= 0.05
    assert any("default elasticity" in w for w in rec.warnings)


def test_saturated_response_is_stated_and_step_is_capped():
    flat = [RunPoint("a", 1.0, 0.0032), RunPoint("b", 10.0, 0.0031), RunPoint("c", 100.0, 0.00315)]
    rec = recommend_l1(flat, 0.05)
    assert rec.saturated
    assert any("Saturated response" in w and "SAELens #719" in w for w in rec.warnings)
    assert rec.direction == "lower" and rec.l1_alpha < 1.0
    assert rec.l1_alpha >= 1.0 / MAX_STEP_FACTOR * 0.999


def test_non_monotone_runs_are_pooled_with_a_warning():
    runs = [RunPoint("a", 0.01, 0.08), RunPoint("b", 0.02, 0.09), RunPoint("c", 0.05, 0.02)]
    rec = recommend_l1(runs, 0.05)
    assert any("contradict the monotone response" in w for w in rec.warnings)
    assert 0.02 < rec.l1_alpha < 0.05


def test_invalid_points_raise_value_error():
    with pytest.raises(ValueError, match="settled L0 must be a positive number"):
        recommend_l1([RunPoint("z", 0.01, 0.0)], 0.05)
    with pytest.raises(ValueError, match="target L0 must be a fraction"):
        recommend_l1(WRITEUP, 5.0)


def test_pava_pools_violators():
    out = pava_decreasing(np.array([3.0, 1.0, 2.0, 0.0]), np.ones(4))
    assert out.tolist() == [3.0, 1.5, 1.5, 0.0]


# ------------------------------------------------------------------------------- properties

@st.composite
def monotone_runs(draw):
    n = draw(st.integers(1, 6))
    logs = sorted(set(draw(st.lists(st.floats(-9, 1), min_size=n, max_size=n))))
    assume(all(b - a > 0.05 for a, b in zip(logs, logs[1:])))
    l0_start = draw(st.floats(-6, -0.2))
    drops = draw(st.lists(st.floats(0.02, 2.0), min_size=len(logs), max_size=len(logs)))
    ys = l0_start - np.cumsum([0.0] + drops[1:])
    noise = draw(st.floats(0, 0.3))
    return [RunPoint(f"r{i}", math.exp(x), math.exp(y), noise) for i, (x, y) in enumerate(zip(logs, ys))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(monotone_runs(), st.floats(-7, -0.1))
def test_direction_is_always_right_and_inside_the_bracket(runs, log_target):
    target = math.exp(log_target)
    assume(all(abs(math.log(r.l0) - log_target) > 1e-6 for r in runs))
    rec = recommend_l1(runs, target)
    for r in runs:
        if r.l0 > target:  # too many active features at this l1_alpha: go higher
            assert rec.l1_alpha > r.l1_alpha, (r, rec)
            assert rec.low >= r.l1_alpha * (1 - 1e-9)
        else:  # too few: go lower
            assert rec.l1_alpha < r.l1_alpha, (r, rec)
            assert rec.high <= r.l1_alpha * (1 + 1e-9)
    assert rec.low <= rec.l1_alpha <= rec.high
    ref = next(r for r in runs if r.run_id == rec.reference)
    assert rec.direction == ("raise" if ref.l0 > target else "lower")
    words = ("raise l1_alpha -> stronger sparsity penalty" if rec.direction == "raise"
             else "lower l1_alpha -> weaker sparsity penalty")
    assert words in rec.explanation
    above = [r for r in runs if r.l0 > target]
    below = [r for r in runs if r.l0 < target]
    if above and below:
        assert rec.method == "interpolate"
        assert max(r.l1_alpha for r in above) < rec.l1_alpha < min(r.l1_alpha for r in below)


# ------------------------------------------------------------------------------- settled level

def test_settled_level_is_the_second_half_median_not_the_last_point():
    steps = np.arange(0, 1001, 10)
    l0 = np.where(steps < 500, 0.3, 0.0225)
    l0 = l0.astype(float)
    l0[-1] = 0.0218
    l0[steps == 900] = 0.0466  # the write-up's late spike
    s = settled_level(steps, l0)
    assert s.median == pytest.approx(0.0225)
    assert s.final == pytest.approx(0.0218)
    assert not s.unstable


def test_unstable_second_half_is_flagged():
    steps = np.arange(0, 2000)
    l0 = 0.03 * np.exp(np.linspace(0, 1.2, 2000))  # drifting upward 3.3x
    s = settled_level(steps, l0)
    assert s.unstable and "still drifting" in s.reason
    swing = 0.03 * (1 + 0.9 * np.sign(np.sin(steps / 7.0)))
    s2 = settled_level(steps, swing)
    assert s2.unstable and "swings" in s2.reason


def test_settled_level_needs_points():
    assert settled_level(np.array([0, 1]), np.array([0.1, 0.1])) is None


def test_a_second_half_still_falling_steadily_is_drifting():
    # like the tune issue's run (6.04% -> 4.39%, 0.73x): a steady fall inside DRIFT_RATIO 1.5 is a trend
    rng = np.random.default_rng(0)
    steps = np.arange(1, 601)
    l0 = 0.04 + 0.06 * np.exp(-steps / 200) + rng.normal(0, 0.001, len(steps))
    s = settled_level(steps, l0)
    assert s.drifting and s.unstable and s.reason.startswith("still drifting (falling): the second half moved from")
    assert s.first_block > s.last_block
    flat = 0.05 * (1 + rng.normal(0, 0.05, len(steps)))  # noise around a level: no trend
    s = settled_level(steps, flat)
    assert not s.drifting and not s.unstable
