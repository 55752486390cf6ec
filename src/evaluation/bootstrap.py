"""Uncertainty over queries: 95 % bootstrap intervals of per-query metric means, and the paired
bootstrap of one method against another on the same queries (mean difference, interval, p-value).

1,000 queries are a sample: a difference of 0.01 in precision@10 may be noise. Both use
`scipy.stats.bootstrap` (vectorised: all resamples in one array), percentile intervals (BCa is
undefined on constant data, where the percentile interval is the point itself), a fixed seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import bootstrap

RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0  # the bootstrap's own seed: the intervals of a run never change between E1 calls


def _resample_means(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bootstrap the mean of each row of x (M×Q, queries along the last axis): low, high, the
    resampled means (M×RESAMPLES)."""
    res = bootstrap(
        (x,),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        vectorized=True,
        axis=-1,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return np.atleast_1d(ci.low), np.atleast_1d(ci.high), np.atleast_2d(res.bootstrap_distribution)


def intervals(per_query: Mapping[str, np.ndarray], seed: int = SEED) -> dict[str, list[float]]:
    """Per metric, the 95 % bootstrap interval [low, high] of its mean over queries (one call)."""
    names = list(per_query)
    if not names:
        return {}
    x = np.stack([np.asarray(per_query[n], dtype=np.float64) for n in names])
    if x.shape[1] < 2:  # one query: no spread to resample
        return {n: [float(v[0]), float(v[0])] for n, v in zip(names, x, strict=True)}
    low, high = _resample_means(x, seed)[:2]
    mean = x.mean(1)
    # a metric with no spread has the exact point interval (resampled means differ by an ulp)
    const = (x == x[:, :1]).all(1)
    lo = np.where(const, x[:, 0], np.minimum(low, mean))
    hi = np.where(const, x[:, 0], np.maximum(high, mean))
    return {n: [float(a), float(b)] for n, a, b in zip(names, lo, hi, strict=True)}


@dataclass
class Paired:
    """Method A − method B on the same queries: mean difference, its 95 % interval, p-value."""

    mean: float
    low: float
    high: float
    p: float

    @property
    def contains_zero(self) -> bool:
        """Whether the interval cannot tell the two methods apart."""
        return self.low <= 0.0 <= self.high

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def p_text(p: float) -> str:
    """A p-value as shown: 3 significant digits, '< 0.001' at the resolution of the resamples."""
    return "< 0.001" if p < 1e-3 else f"{p:.3g}"


def paired(a: np.ndarray, b: np.ndarray, seed: int = SEED) -> Paired:
    """Paired bootstrap of the per-query differences a − b (same queries, same order).

    Two-sided p-value: the share of resampled mean differences, centred on the observed mean (the
    null of no difference), at least as far from 0 as the observed mean; (1 + count)/(1 + n) so
    that it is never 0, and exactly 1 when the methods agree on every query.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired: per-query arrays of one shape needed, got {a.shape}, {b.shape}")
    d = a - b
    mean = float(d.mean())
    if d.size < 2 or not np.any(d != d[0]):  # no spread: the difference is exact
        return Paired(mean, mean, mean, 1.0 if mean == 0 else 1 / (1 + RESAMPLES))
    low, high, dist = _resample_means(d[None], seed)
    extreme = np.abs(dist[0] - mean) >= abs(mean) - 1e-12
    p = (1 + int(extreme.sum())) / (1 + dist.shape[1])
    return Paired(mean, float(min(low[0], mean)), float(max(high[0], mean)), p)
