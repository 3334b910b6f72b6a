"""Statistics helpers: t-intervals, comparisons and their words."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.stats import (request_compare, seed_for, t_half_width, verdict_words,
                            welch_compare)


def test_t_half_width_matches_textbook():
    half = t_half_width(np.array([3, 1]), np.array([1.0, np.nan]))
    assert half[0] == pytest.approx(4.302652729911275 / math.sqrt(3))   # t(0.975, 2)
    assert math.isnan(half[1])                                          # one run: no interval


def test_welch_compare():
    c = welch_compare([10.0, 10.5, 9.5], [15.0, 15.5, 14.5])
    assert c.change_pct == pytest.approx(50.0)
    assert c.real is True and c.p_value < 0.01
    assert c.ci_low_pct < 50.0 < c.ci_high_pct
    noise = welch_compare([10.0, 12.0, 8.0], [10.5, 7.5, 12.5])
    assert noise.real is False
    single = welch_compare([10.0], [12.0])
    assert single.real is None and single.change_pct == pytest.approx(20.0)
    zeros = welch_compare([0.0, 0.0], [0.0, 0.0])
    assert zeros.change_pct == 0.0 and zeros.real is False


def test_request_compare_is_seeded_and_sensible():
    rng = np.random.default_rng(1)
    a = [rng.lognormal(np.log(0.1), 0.3, 400) for _ in range(3)]
    b_same = [rng.lognormal(np.log(0.1), 0.3, 400) for _ in range(3)]
    b_fast = [rng.lognormal(np.log(0.07), 0.3, 400) for _ in range(3)]
    c1 = request_compare(a, b_fast, seed=seed_for(0, "x"), n_boot=300)
    c2 = request_compare(a, b_fast, seed=seed_for(0, "x"), n_boot=300)
    assert (c1.ci_low_pct, c1.ci_high_pct) == (c2.ci_low_pct, c2.ci_high_pct)
    assert c1.real is True and -40 < c1.change_pct < -20
    assert c1.ci_low_pct < c1.change_pct < c1.ci_high_pct < 0
    same = request_compare(a, b_same, seed=1, n_boot=300)
    assert same.real is False
    assert request_compare([np.array([])], b_same, seed=1).real is None


def test_verdict_words():
    c = welch_compare([10.0, 10.5, 9.5], [7.0, 6.8, 7.2])
    text = verdict_words("B", "TTFT p50", c, True, "A")
    assert text.startswith("B's TTFT p50 is 30% lower than A's (95% CI ")
    assert text.endswith("real difference (better)")
    noise = welch_compare([10.0, 12.0, 8.0], [10.5, 7.5, 12.5])
    assert verdict_words("B", "TTFT", noise, True, "A").endswith("not distinguishable from noise")
