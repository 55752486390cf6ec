"""A ranking's scores (SPEC §7), vectorised over queries: the paper's mAP@10 (precision@10), true
mAP@10, mTS@10 and context preservation, each with its 95 % bootstrap interval over queries, and
the search's iterations and timing when the method searched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from src.evaluation import bootstrap
from src.evaluation.methods import Ranking
from src.evaluation.space import Queries, SearchSpace
from src.evaluation.timing import per_query_ms
from src.method import metrics


@dataclass
class Scores:
    """A method's summary (one metrics.json entry, with 95 % bootstrap intervals under "ci") and
    its per-query values: precision, tag similarity, and every metric the summary averages."""

    summary: dict[str, Any]
    precision: np.ndarray
    tag_similarity: np.ndarray
    per_query: dict[str, np.ndarray]  # "paper_map@10", "map@10", "mts@10", "context_<attr>"


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def score(space: SearchSpace, q: Queries, ranking: Ranking) -> Scores:
    """The metrics of one ranking (SPEC §7), vectorised over queries."""
    idx = ranking.indices
    hits = metrics.condition_hits(idx, space.label_ids, q.conditions)
    precision = metrics.precision_at_k(hits)
    ap = metrics.average_precision_at_k(hits, q.n_relevant)
    jac = metrics.tag_jaccard(q.tags, space.tags, idx)
    context = metrics.context_per_query(idx, space.label_ids, q.own, space.task.conditions)
    n_q = idx.shape[0]
    per_query = {
        "paper_map@10": precision.double().cpu().numpy(),
        "map@10": ap.double().cpu().numpy(),
        "mts@10": jac.mean(1),
        **{f"context_{a}": c.double().cpu().numpy() for a, c in context.items()},
    }
    ci = bootstrap.intervals(per_query)
    summary: dict[str, Any] = {
        "paper_map@10": float(per_query["paper_map@10"].mean()),
        "map@10": float(per_query["map@10"].mean()),
        "mts@10": float(per_query["mts@10"].mean()),
        "context_preservation": {a: float(c.double().mean()) for a, c in context.items()},
        "ci": {
            "paper_map@10": ci["paper_map@10"],
            "map@10": ci["map@10"],
            "mts@10": ci["mts@10"],
            "context_preservation": {a: ci[f"context_{a}"] for a in context},
        },
        "iterations_mean": None,
        "iterations_sd": None,
        "single_iterations_mean": None,
        "single_iterations_sd": None,
        "satisfied_at_mean": None,
        "satisfied_fraction": None,
        "ms_per_query": None,
        "queries_per_s": None,
        "lambda": ranking.lam,
        "alpha": ranking.alpha,
    }
    if ranking.search is not None:
        it = ranking.search.iterations.double()
        sat = ranking.search.satisfied_at
        ok = sat >= 0
        summary.update(
            iterations_mean=float(it.mean()),
            iterations_sd=_finite(float(it.std())) if n_q > 1 else 0.0,
            satisfied_at_mean=float(sat[ok].double().mean()) if bool(ok.any()) else None,
            satisfied_fraction=float(ok.double().mean()),
        )
    if ranking.single is not None:
        it = ranking.single.iterations.double()
        summary.update(
            single_iterations_mean=float(it.mean()),
            single_iterations_sd=_finite(float(it.std())) if n_q > 1 else 0.0,
        )
    if ranking.timing is not None and n_q:
        summary.update(per_query_ms(ranking.timing, n_q))
        median = ranking.timing.median
        summary["queries_per_s"] = n_q / median if median > 0 else None
    return Scores(summary, precision.cpu().numpy(), jac.mean(1), per_query)
