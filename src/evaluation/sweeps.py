"""A method along its knob: E1 --sweep's metrics at every step of a grid (Backward Search's λ
sweep is paper Fig 6; the class-centroid shift's α sweep draws the trade-off plane; the registry
says how each is ranked along its grid), and Table 3's calibration of λ to a target mTS@10. Every
λ is searched once (`BackwardSearches`), whichever of them asks for it first; the λ values known
in advance (a sweep's grid, the calibration's two ends) are ranked in one database pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from src.evaluation.methods import BackwardSearches, Ranking
from src.evaluation.scoring import score
from src.evaluation.space import Queries, SearchSpace

log = logging.getLogger(__name__)

CALIBRATION_RANGE = (-8.0, 8.0)  # log2 λ bracketed by Table 3's bisection


def evaluate_lambda(searches: BackwardSearches, lam: float) -> dict[str, Any]:
    """Backward Search at λ, scored: the one function the sweep and the calibration share."""
    return score(searches.space, searches.q, searches(lam)).summary


def sweep(
    space: SearchSpace,
    q: Queries,
    knob: tuple[str, str],
    steps: Sequence[float],
    rankings: Iterable[Ranking],
) -> pd.DataFrame:
    """A method's metrics along its knob (`knob`: its column and symbol, e.g. ("lambda", "λ")),
    one row per step: the step, the metrics at it and, for a search, its mean iterations."""
    key, symbol = knob
    rows = []
    for value, ranking in zip(steps, rankings, strict=True):
        s = score(space, q, ranking).summary
        row = {
            key: value,
            "paper_map@10": s["paper_map@10"],
            "map@10": s["map@10"],
            "mts@10": s["mts@10"],
            **{f"context_{a}": v for a, v in s["context_preservation"].items()},
        }
        if s["iterations_mean"] is not None:
            row["iterations_mean"] = s["iterations_mean"]
        rows.append(row)
        log.info(
            "  %s=%-7g mAP@10 %.3f  mTS@10 %.3f", symbol, value, s["paper_map@10"], s["mts@10"]
        )
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
