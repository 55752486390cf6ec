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


def test_one_query_is_its_own_interval_and_two_already_spread():
    ci = bootstrap.intervals({"a": [0.3], "b": [0.7]})
    assert ci == {"a": [0.3, 0.3], "b": [0.7, 0.7]}
    lo, hi = bootstrap.intervals({"m": [0.0, 1.0]})["m"]  # two queries are resampled
    assert lo < 0.5 < hi


def test_float32_metrics_are_bootstrapped_in_float64():
    x = np.random.default_rng(5).uniform(size=300).astype(np.float32)
    assert bootstrap.intervals({"m": x}) == bootstrap.intervals({"m": x.astype(np.float64)})


def test_a_constant_nonzero_difference_is_exact_and_as_significant_as_the_resamples_allow():
    d = bootstrap.paired(np.full(500, 0.3), np.full(500, 0.1))
    assert d.low == d.mean == d.high == float(np.mean(np.full(500, 0.3) - 0.1))
    assert d.p == 1 / (1 + bootstrap.RESAMPLES)


def test_two_queries_are_resampled():
    d = bootstrap.paired(np.array([1.0, 0.0]), np.zeros(2))
    assert d.mean == 0.5 and d.low < 0.5 < d.high and d.contains_zero


def test_a_resampled_mean_exactly_as_far_as_zero_counts_as_extreme():
    # d = (1, 0, 0, 0): a resampled mean is k/4, k ~ Binomial(4, 1/4); it lies at least as far
    # from the observed 1/4 as 0 does for every k but 1: p = 1 − 4 · (1/4) · (3/4)³ = 0.578
    d = bootstrap.paired(np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(4))
    assert d.p == pytest.approx(1 - 4 * 0.25 * 0.75**3, abs=0.05)


def test_paired_is_seeded_and_p_is_one_plus_extremes_over_one_plus_resamples():
    rng = np.random.default_rng(6)
    a, b = rng.uniform(size=200), rng.uniform(size=200)
    assert bootstrap.paired(a, b) == bootstrap.paired(a, b)
    assert bootstrap.paired(a, b, seed=1) != bootstrap.paired(a, b, seed=2)
    # far apart: no resampled difference reaches 0, so p is its floor 1/(1 + RESAMPLES)
    assert bootstrap.paired(a + 1, b).p == 1 / (1 + bootstrap.RESAMPLES)


def test_paired_as_dict_names_its_fields():
    assert bootstrap.Paired(0.1, 0.0, 0.2, 0.5).as_dict() == {
        "mean": 0.1, "low": 0.0, "high": 0.2, "p": 0.5
    }  # fmt: skip


def test_a_p_value_of_exactly_0_001_is_shown_as_such():
    assert bootstrap.p_text(0.001) == "0.001" and bootstrap.p_text(0.000999) == "< 0.001"


def test_the_interval_is_the_percentile_interval_of_the_resampled_means():
    # one hit in 20 queries: a resampled mean is k/20, k ~ Binomial(20, 0.05); P(k = 0) = 0.36 >
    # 0.025 and P(k ≤ 2) = 0.92 < 0.975 < P(k ≤ 3) = 0.98, so the percentile interval is [0, 3/20]
    # (BCa, scipy's default, would move it)
    assert bootstrap.intervals({"m": np.array([1.0] + [0.0] * 19)}) == {"m": [0.0, 0.15]}


def test_each_metric_keeps_its_own_mean_and_its_own_constancy():
    rng = np.random.default_rng(7)
    x = {"low": rng.uniform(0.1, 0.3, 300), "high": rng.uniform(0.7, 0.9, 300)}
    x["constant"] = np.full(300, 0.7)  # its mean over 300 rows is not exactly 0.7
    ci = bootstrap.intervals(x)
    for n in ("low", "high"):
        assert x[n].min() < ci[n][0] < x[n].mean() < ci[n][1] < x[n].max(), n
    assert ci["constant"] == [0.7, 0.7]
