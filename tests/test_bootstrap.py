"""Bootstrap intervals over queries and the paired test (src/evaluation/bootstrap.py)."""

from __future__ import annotations

import numpy as np
import pytest

from src.evaluation import bootstrap


def test_interval_of_a_constant_is_the_point():
    ci = bootstrap.intervals({"precision": np.full(1000, 0.7), "zero": np.zeros(1000)})
    assert ci == {"precision": [pytest.approx(0.7), pytest.approx(0.7)], "zero": [0.0, 0.0]}
    assert ci["precision"][0] == ci["precision"][1]


def test_interval_covers_the_mean_at_the_nominal_rate():
    """400 seeded samples of 200 from U(0, 1) (mean 0.5), bootstrapped in one vectorised call."""
    rng = np.random.default_rng(123)
    samples = {f"s{i}": rng.uniform(size=200) for i in range(400)}
    ci = bootstrap.intervals(samples)
    covered = np.mean([lo <= 0.5 <= hi for lo, hi in ci.values()])
    assert 0.91 <= covered <= 0.98
    widths = np.asarray([hi - lo for lo, hi in ci.values()])
    # the width is about 2 · 1.96 · sd/√n = 2 · 1.96 · 0.2887/√200 ≈ 0.080
    assert widths.mean() == pytest.approx(0.080, rel=0.1)


def test_intervals_are_seeded():
    x = {"m": np.random.default_rng(0).uniform(size=300)}
    assert bootstrap.intervals(x) == bootstrap.intervals(x)
    assert bootstrap.intervals(x, seed=1) != bootstrap.intervals(x, seed=2)


def test_paired_test_of_identical_methods_gives_p_1():
    a = np.random.default_rng(0).uniform(size=1000)
    d = bootstrap.paired(a, a.copy())
    assert (d.mean, d.low, d.high, d.p) == (0.0, 0.0, 0.0, 1.0) and d.contains_zero


def test_paired_test_of_noise_around_equal_means_keeps_0_and_a_large_p():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(size=1000), rng.uniform(size=1000)
    b = b - b.mean() + a.mean()  # equal means, different queries
    d = bootstrap.paired(a, b)
    assert d.mean == pytest.approx(0.0, abs=1e-12) and d.contains_zero and d.p > 0.9


def test_paired_test_finds_a_real_difference():
    rng = np.random.default_rng(4)
    b = rng.uniform(size=1000)
    a = b + 0.05 + rng.normal(0, 0.1, size=1000)  # better by 0.05 on average, noisy per query
    d = bootstrap.paired(a, b)
    assert d.low > 0 and not d.contains_zero and d.p < 0.01
    assert d.low < 0.05 < d.high
    assert bootstrap.paired(b, a).high < 0  # and the other way round


def test_paired_needs_the_same_queries():
    with pytest.raises(ValueError, match="one shape"):
        bootstrap.paired(np.zeros(10), np.zeros(9))


def test_p_values_below_the_resamples_resolution_are_shown_as_such():
    assert bootstrap.p_text(1 / (1 + bootstrap.RESAMPLES)) == "< 0.001"
    assert bootstrap.p_text(0.01234) == "0.0123" and bootstrap.p_text(1.0) == "1"
