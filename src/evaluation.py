"""E1: run the methods of a task (random, kNN, Backward Search, student) and score them; the λ
sweep and the mTS calibration. Inputs come from src/eval_data.py, tables and files from src/tables.py.

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
from torch import Tensor

from src import metrics
from src.backward_search import SearchResult, StopRule, backward_search
from src.cli import LOGGER
from src.eval_data import EvalData, K
from src.retrieval import cosine_topk
from src.student import Student
from src.timing import Timing, per_query_ms, time_repeated

log = logging.getLogger(LOGGER)

METHODS = ("random", "knn", "backward_search", "student")
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


def rank_backward_search(data: EvalData, lam: float, single: bool = False) -> Ranking:
    """Backward Search at λ for every query in one call (cached per λ).

    single: also count the iterations of the authors' single-query rule (StopRule.SINGLE) on the
    same queries, for Table 5; its z is not used (every retrieval number is the batched rule's).
    """
    lam = float(lam)
    if lam not in data.cache:

        def search(z0: Tensor, cond: dict[str, Tensor]) -> SearchResult:
            return backward_search(data.heads, z0, cond, lam)

        with torch.no_grad():
            result, timing = _timed(lambda: search(data.z0, data.conditions), data.device)
        data.cache[lam] = Ranking("backward_search", rank(data, result.z), timing, result, lam)
    ranking = data.cache[lam]
    if single and ranking.single is None:
        with torch.no_grad():
            ranking.single = backward_search(
                data.heads, data.z0, data.conditions, lam, rule=StopRule.SINGLE
            )
    return ranking


def rank_student(data: EvalData, student: Student, lam: float) -> Ranking:
    """The distilled student: one forward pass for all queries."""
    student = student.to(data.device).eval()

    def search(z0: Tensor, cond: dict[str, Tensor]) -> Tensor:
        return student.search(z0, cond)

    with torch.no_grad():
        z, timing = _timed(lambda: search(data.z0, data.conditions), data.device)
    return Ranking("student", rank(data, z), timing, None, lam)


# ---------------------------------------------------------------------------------------------
# Scores


@dataclass
class Scores:
    """A method's summary (one metrics.json entry) and its per-query precision and tag similarity."""

    summary: dict[str, Any]
    precision: np.ndarray
    tag_similarity: np.ndarray


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def score(data: EvalData, ranking: Ranking) -> Scores:
    """The metrics of one ranking (SPEC §7), vectorised over queries."""
    idx = ranking.indices
    hits = metrics.condition_hits(idx, data.db_labels, data.conditions)
    precision = metrics.precision_at_k(hits)
    ap = metrics.average_precision_at_k(hits, data.n_relevant)
    jac = metrics.tag_jaccard(data.query_tags, data.db_tags, idx)
    context = metrics.context_preservation(
        idx, data.db_labels, data.query_labels, data.task.conditions
    )
    n_q = idx.shape[0]
    summary: dict[str, Any] = {
        "paper_map@10": float(precision.double().mean()),
        "map@10": float(ap.double().mean()),
        "mts@10": float(jac.mean()),
        "context_preservation": context,
        "iterations_mean": None,
        "iterations_sd": None,
        "single_iterations_mean": None,
        "single_iterations_sd": None,
        "satisfied_at_mean": None,
        "satisfied_fraction": None,
        "ms_per_query": None,
        "queries_per_s": None,
        "lambda": ranking.lam,
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
    return Scores(summary, precision.cpu().numpy(), jac.mean(1))


def evaluate_lambda(data: EvalData, lam: float) -> dict[str, Any]:
    """Backward Search at λ, scored: the one function the sweep and the calibration share."""
    return score(data, rank_backward_search(data, lam)).summary


def sweep(data: EvalData, lambdas: Iterable[float]) -> pd.DataFrame:
    """Fig 6: the metrics of Backward Search along a λ grid, one row per λ."""
    rows = []
    for lam in lambdas:
        s = evaluate_lambda(data, lam)
        rows.append(
            {
                "lambda": lam,
                "paper_map@10": s["paper_map@10"],
                "map@10": s["map@10"],
                "mts@10": s["mts@10"],
                **{f"context_{a}": v for a, v in s["context_preservation"].items()},
                "iterations_mean": s["iterations_mean"],
            }
        )
        log.info("  λ=%-7g mAP@10 %.3f  mTS@10 %.3f", lam, s["paper_map@10"], s["mts@10"])
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


# ---------------------------------------------------------------------------------------------
# One task, end to end


@dataclass
class TaskResults:
    """Everything E1 computed for a task, ready to be written."""

    data: EvalData
    lam: float
    rankings: dict[str, Ranking]
    scores: dict[str, Scores]
    similarity: float | None = None  # teacher vs student (Table 6)
    sweep: pd.DataFrame | None = None
    calibration: dict[str, Any] | None = None
    student_file: str | None = None  # the student's file name (its λ is in it), when evaluated

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        return {m: s.summary for m, s in self.scores.items()}


def evaluate(
    data: EvalData,
    methods: Iterable[str],
    lam: float,
    *,
    seed: int = 0,
    student: Student | None = None,
    sweep_lambdas: Iterable[float] | None = None,
    target_mts: float | None = None,
) -> TaskResults:
    """Run and score the methods; optionally the λ sweep and the mTS calibration."""
    rankers: dict[str, Callable[[], Ranking]] = {
        "random": lambda: rank_random(data, seed),
        "knn": lambda: rank_knn(data),
        "backward_search": lambda: rank_backward_search(data, lam, single=True),
        "student": lambda: rank_student(data, student, lam),
    }
    rankings = {m: rankers[m]() for m in methods}
    res = TaskResults(data, lam, rankings, {m: score(data, r) for m, r in rankings.items()})
    if "student" in rankings:
        teacher = rank_backward_search(data, lam).indices
        sim = metrics.retrieved_similarity(teacher, rankings["student"].indices)
        res.similarity = float(sim.double().mean())
    if sweep_lambdas is not None:
        log.info("λ sweep (Fig 6):")
        res.sweep = sweep(data, sweep_lambdas)
    if target_mts is not None:
        res.calibration = cal = calibrate(data, target_mts)
        log.info(
            "calibration: λ=%.4g gives mTS@10 %.3f (target %.3f%s), mAP@10 %.3f",
            cal["lambda"],
            cal["mts@10"],
            target_mts,
            "" if cal["reached"] else ", NOT reached",
            cal["paper_map@10"],
        )
    return res


def summary_lines(res: TaskResults) -> list[str]:
    """A short human summary: per method the paper's mAP@10, true mAP@10, mTS@10, ms/query."""
    lines = []
    for m, s in res.summary.items():
        ms = s["ms_per_query"]
        lines.append(
            f"  {m:<16} mAP@10 {s['paper_map@10']:.3f}  true mAP@10 {s['map@10']:.3f}  "
            f"mTS@10 {s['mts@10']:.3f}" + (f"  {ms:.4g} ms/query" if ms is not None else "")
        )
    if res.similarity is not None:
        lines.append(f"  retrieved similarity (teacher vs student): {res.similarity:.3f}")
    return lines
