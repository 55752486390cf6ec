"""E1's methods (random, kNN, Backward Search, student, and two baselines that are not in the
paper: head-filtered kNN and the class-centroid shift), their scores with bootstrap intervals, the
λ and α sweeps and the mTS calibration. src/task_eval.py runs them for one task; inputs come from
src/eval_data.py, tables and files from src/tables.py.

Everything is batched on one device: one `backward_search` call for all queries, one `cosine_topk`,
vectorised metrics. The database is the test split without untagged images (SPEC §7); a query
keeps its own image in the database unless `exclude_query` (the clean protocol) is asked for.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from src import bootstrap, metrics
from src.backward_search import SearchResult, StopRule, _EvalMode, backward_search
from src.cli import LOGGER
from src.eval_data import EvalData, K
from src.retrieval import SCORE_BUDGET, cosine_topk
from src.student import Student
from src.timing import Timing, per_query_ms, time_repeated

log = logging.getLogger(LOGGER)

METHODS = ("random", "knn", "filtered_knn", "centroid_shift", "backward_search", "student")
# baselines a reviewer would ask for, using only what Backward Search uses (heads, embeddings)
NOT_IN_PAPER = {
    "filtered_knn": "head-filtered kNN",
    "centroid_shift": "class-centroid shift",
}
ALPHAS = tuple(i / 4 for i in range(9))  # the α sweep of the centroid shift: 0, 0.25, …, 2
# ---------------------------------------------------------------------------------------------
# Methods: each gives a ranking (top-K database rows per query) and, where it searches, its time


@dataclass
class Ranking:
    """A method's top-K per query, the search time (None for no search) and its search result."""

    method: str
    indices: Tensor  # Q×K database rows
    timing: Timing | None = None  # the timing pass (median, min, max)
    search: SearchResult | None = None
    lam: float | None = None
    single: SearchResult | None = None  # the same queries under StopRule.SINGLE (Table 5 only)
    alpha: float | None = None  # the centroid shift's step


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, Timing]:
    """fn's result and its Timing: a warm-up call, then the median of repeats (src/timing.py)."""
    return time_repeated(fn, torch.cuda.synchronize if device.type == "cuda" else (lambda: None))


def rank(data: EvalData, vectors: Tensor) -> Tensor:
    """Top-K database rows by cosine similarity to each query vector."""
    return cosine_topk(vectors, data.db_z, K, exclude=data.exclude)[1]


def rank_random(data: EvalData, seed: int) -> Ranking:
    """K distinct random database items per query (seeded; the excluded row never drawn).

    The top-K of i.i.d. uniform keys is a uniformly random K-subset, drawn for all queries at once.
    """
    n_q, n_db = data.z0.shape[0], data.db_z.shape[0]
    keys = torch.rand(n_q, n_db, generator=torch.Generator().manual_seed(seed))
    if data.exclude is not None:
        ex = data.exclude.cpu()
        has = ex >= 0
        keys[has.nonzero().flatten(), ex[has]] = -1.0
    return Ranking("random", keys.topk(K, dim=1).indices.to(data.device))


def rank_knn(data: EvalData) -> Ranking:
    """k-nearest search: the query's own embedding, unchanged."""
    return Ranking("knn", rank(data, data.z0))


def head_predictions(data: EvalData, z: Tensor) -> dict[str, Tensor]:
    """Per conditioned attribute, the frozen heads' predicted class of each row of z."""
    heads = {a: data.heads[a] for a in data.task.conditions}
    with torch.no_grad(), _EvalMode(heads):
        return {a: h(z).argmax(1) for a, h in heads.items()}


def rank_filtered_knn(data: EvalData) -> Ranking:
    """kNN among the database images whose heads predict every condition class; the rest follow
    in similarity order when fewer than K qualify. No optimisation at all."""
    db_pred = head_predictions(data, data.db_z)
    db = F.normalize(data.db_z, dim=1)
    q = F.normalize(data.z0, dim=1)
    n_q, n_db = q.shape[0], db.shape[0]
    out = torch.empty(n_q, K, dtype=torch.long, device=q.device)
    chunk = max(1, SCORE_BUDGET // max(n_db, 1))
    for start in range(0, n_q, chunk):
        stop = min(start + chunk, n_q)
        sim = q[start:stop] @ db.T
        keep = torch.ones_like(sim, dtype=torch.bool)
        for a, pred in db_pred.items():
            keep &= pred[None, :] == data.conditions[a][start:stop, None]
        sim = sim + 3.0 * keep  # cosine lies in [-1, 1]: every kept row outranks every other
        if data.exclude is not None:
            ex = data.exclude[start:stop]
            rows = (ex >= 0).nonzero().flatten()
            sim[rows, ex[rows]] = float("-inf")
        out[start:stop] = sim.topk(K, dim=1).indices
    return Ranking("filtered_knn", out)


def centroid_shift(data: EvalData, alpha: float) -> Tensor:
    """z = z0 + α · Σ_attr (μ_attr[condition] − μ_attr[predicted class of z0]) for every query."""
    pred = head_predictions(data, data.z0)
    shift = torch.zeros_like(data.z0)
    for a, cond in data.conditions.items():
        mu = data.centroids[a]
        shift += mu[cond] - mu[pred[a]]
    return data.z0 + alpha * shift


def rank_centroid_shift(data: EvalData, alpha: float) -> Ranking:
    """The class-centroid shift at α, ranked by cosine: one vector addition per query."""
    ranking = Ranking("centroid_shift", rank(data, centroid_shift(data, alpha)))
    ranking.alpha = float(alpha)
    return ranking


def rank_backward_search(
    data: EvalData, lam: float, single: bool = False, timed: bool = False
) -> Ranking:
    """Backward Search at λ for every query in one call (cached per λ).

    timed: also run the timing pass (src/timing.py) — only the reported λ needs it; the sweeps
    and the calibration search once per λ. single: also count the iterations of the authors'
    single-query rule (StopRule.SINGLE) on the same queries, for Table 5; its z is not used
    (every retrieval number is the batched rule's).
    """
    lam = float(lam)

    def search() -> SearchResult:
        return backward_search(data.heads, data.z0, data.conditions, lam)

    ranking = data.cache.get(lam)
    if ranking is None or (timed and ranking.timing is None):
        with torch.no_grad():
            result, timing = _timed(search, data.device) if timed else (search(), None)
        ranking = Ranking("backward_search", rank(data, result.z), timing, result, lam)
        data.cache[lam] = ranking
    if single and ranking.single is None:
        with torch.no_grad():
            ranking.single = backward_search(
                data.heads, data.z0, data.conditions, lam, rule=StopRule.SINGLE
            )
    return ranking


def rank_student(data: EvalData, student: Student, lam: float) -> Ranking:
    """The distilled student: one forward pass for all queries."""
    student = student.to(data.device).eval()
    with torch.no_grad():
        z, timing = _timed(lambda: student.search(data.z0, data.conditions), data.device)
    return Ranking("student", rank(data, z), timing, None, lam)


# ---------------------------------------------------------------------------------------------
# Scores


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


def score(data: EvalData, ranking: Ranking) -> Scores:
    """The metrics of one ranking (SPEC §7), vectorised over queries."""
    idx = ranking.indices
    hits = metrics.condition_hits(idx, data.db_labels, data.conditions)
    precision = metrics.precision_at_k(hits)
    ap = metrics.average_precision_at_k(hits, data.n_relevant)
    jac = metrics.tag_jaccard(data.query_tags, data.db_tags, idx)
    context = metrics.context_per_query(
        idx, data.db_labels, data.query_labels, data.task.conditions
    )
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


def evaluate_lambda(data: EvalData, lam: float) -> dict[str, Any]:
    """Backward Search at λ, scored: the one function the sweep and the calibration share."""
    return score(data, rank_backward_search(data, lam)).summary


def _sweep_row(key: str, value: float, s: dict[str, Any]) -> dict[str, Any]:
    """One sweep.csv / sweep_alpha.csv row: the step and the metrics at it."""
    return {
        key: value,
        "paper_map@10": s["paper_map@10"],
        "map@10": s["map@10"],
        "mts@10": s["mts@10"],
        **{f"context_{a}": v for a, v in s["context_preservation"].items()},
    }


def sweep(data: EvalData, lambdas: Iterable[float]) -> pd.DataFrame:
    """Fig 6: the metrics of Backward Search along a λ grid, one row per λ."""
    rows = []
    for lam in lambdas:
        s = evaluate_lambda(data, lam)
        rows.append(_sweep_row("lambda", lam, s) | {"iterations_mean": s["iterations_mean"]})
        log.info("  λ=%-7g mAP@10 %.3f  mTS@10 %.3f", lam, s["paper_map@10"], s["mts@10"])
    return pd.DataFrame(rows)


def sweep_alpha(data: EvalData, alphas: Iterable[float]) -> pd.DataFrame:
    """The trade-off curve of the class-centroid shift: its metrics along an α grid."""
    rows = []
    for alpha in alphas:
        s = score(data, rank_centroid_shift(data, alpha)).summary
        rows.append(_sweep_row("alpha", alpha, s))
        log.info("  α=%-7g mAP@10 %.3f  mTS@10 %.3f", alpha, s["paper_map@10"], s["mts@10"])
    return pd.DataFrame(rows)


def calibrate(
    data: EvalData,
    target_mts: float,
    *,
    log2_range: tuple[float, float] = (-8.0, 8.0),
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
        s = evaluate_lambda(data, lam)
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


def retrievals_frame(data: EvalData, ranking: Ranking, scores: Scores) -> pd.DataFrame:
    """retrievals_<method>.csv: per query its condition, the ranked image keys and its scores."""
    q = data.queries
    out = pd.DataFrame({"query_id": q["query_id"].to_numpy(), "image": q["image"].to_numpy()})
    for a in data.task.conditions:
        out[a] = q[a].to_numpy()
    ranked = data.db_images[ranking.indices.cpu().numpy()]
    for r in range(K):
        out[f"rank_{r + 1}"] = ranked[:, r]
    out["precision"] = scores.precision
    out["tag_similarity"] = scores.tag_similarity
    return out
