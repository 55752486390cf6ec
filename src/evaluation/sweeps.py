"""Backward Search along λ and the centroid shift along α: the λ sweep (paper Fig 6), the α sweep
(the trade-off plane) and Table 3's calibration of λ to a target mTS@10. Every λ is searched once
(`BackwardSearches`), whichever of them asks for it first; the λ values known in advance (a
sweep's grid, the calibration's two ends) and the α grid are each ranked in one database pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pandas as pd

from src.evaluation.methods import BackwardSearches, rank_centroid_shifts
from src.evaluation.scoring import score
from src.evaluation.space import Queries, SearchSpace

log = logging.getLogger(__name__)

CALIBRATION_RANGE = (-8.0, 8.0)  # log2 λ bracketed by Table 3's bisection


def evaluate_lambda(searches: BackwardSearches, lam: float) -> dict[str, Any]:
    """Backward Search at λ, scored: the one function the sweep and the calibration share."""
    return score(searches.space, searches.q, searches(lam)).summary


def _sweep_row(key: str, value: float, s: dict[str, Any]) -> dict[str, Any]:
    """One sweep.csv / sweep_alpha.csv row: the step and the metrics at it."""
    return {
        key: value,
        "paper_map@10": s["paper_map@10"],
        "map@10": s["map@10"],
        "mts@10": s["mts@10"],
        **{f"context_{a}": v for a, v in s["context_preservation"].items()},
    }


def sweep(searches: BackwardSearches, lambdas: Iterable[float]) -> pd.DataFrame:
    """Fig 6: the metrics of Backward Search along a λ grid, one row per λ."""
    lambdas = list(lambdas)
    searches.prefetch(lambdas)
    rows = []
    for lam in lambdas:
        s = evaluate_lambda(searches, lam)
        rows.append(_sweep_row("lambda", lam, s) | {"iterations_mean": s["iterations_mean"]})
        log.info("  λ=%-7g mAP@10 %.3f  mTS@10 %.3f", lam, s["paper_map@10"], s["mts@10"])
    return pd.DataFrame(rows)


def sweep_alpha(space: SearchSpace, q: Queries, alphas: Iterable[float]) -> pd.DataFrame:
    """The trade-off curve of the class-centroid shift: its metrics along an α grid."""
    alphas = list(alphas)
    rows = []
    for alpha, ranking in zip(alphas, rank_centroid_shifts(space, q, alphas), strict=True):
        s = score(space, q, ranking).summary
        rows.append(_sweep_row("alpha", alpha, s))
        log.info("  α=%-7g mAP@10 %.3f  mTS@10 %.3f", alpha, s["paper_map@10"], s["mts@10"])
    return pd.DataFrame(rows)


def calibrate(
    searches: BackwardSearches,
    target_mts: float,
    *,
    log2_range: tuple[float, float] = CALIBRATION_RANGE,
    tolerance: float = 0.005,
    max_steps: int = 12,
) -> dict[str, Any]:
    """Table 3 protocol: bisection on log2 λ for mTS@10 ≈ target; the closest λ evaluated wins.

    If the target is outside the mTS@10 reached at both ends of the range, the nearer end is
    returned with "reached": false.
    """
    steps: list[dict[str, Any]] = []

    def at(x: float) -> float:
        lam = 2.0**x
        s = evaluate_lambda(searches, lam)
        steps.append(
            {
                "lambda": lam,
                "paper_map@10": s["paper_map@10"],
                "map@10": s["map@10"],
                "mts@10": s["mts@10"],
                "mts@10_ci": s["ci"]["mts@10"],
                "paper_map@10_ci": s["ci"]["paper_map@10"],
            }
        )
        return s["mts@10"] - target_mts

    lo, hi = log2_range
    searches.prefetch([2.0**lo, 2.0**hi])  # both ends in one database pass
    f_lo, f_hi = at(lo), at(hi)
    reached = f_lo * f_hi <= 0
    if reached:
        for _ in range(max_steps):
            if min(abs(s["mts@10"] - target_mts) for s in steps) <= tolerance:
                break
            mid = (lo + hi) / 2
            f_mid = at(mid)
            if (f_mid <= 0) == (f_lo <= 0):
                lo, f_lo = mid, f_mid
            else:
                hi, f_hi = mid, f_mid
    best = min(steps, key=lambda s: abs(s["mts@10"] - target_mts))
    reached = reached and abs(best["mts@10"] - target_mts) <= tolerance
    return {
        "target_mts": target_mts,
        "lambda": best["lambda"],
        "paper_map@10": best["paper_map@10"],
        "map@10": best["map@10"],
        "mts@10": best["mts@10"],
        "mts@10_ci": best["mts@10_ci"],
        "paper_map@10_ci": best["paper_map@10_ci"],
        "reached": reached,
        "tolerance": tolerance,
        "steps": steps,
    }
