"""One task, end to end (E1): run and score the chosen methods, test Backward Search against each
over the same queries, Table 2's λ = 0, and optionally the λ and α sweeps and the mTS
calibration, into `TaskResults` that src/report/tables.py writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from src.evaluation import bootstrap
from src.evaluation.methods import (
    BackwardSearches,
    Ranking,
    centroid_shift,
    rank_cosine,
    rank_filtered_knn,
    rank_random,
    student_search,
)
from src.evaluation.scoring import Scores, score
from src.evaluation.space import Queries, SearchSpace
from src.evaluation.sweeps import CALIBRATION_RANGE, calibrate, evaluate_lambda, sweep, sweep_alpha
from src.method import metrics
from src.method.student import Student

log = logging.getLogger(__name__)

PAIRED_METRICS = ("paper_map@10", "mts@10")  # Backward Search vs each method, per query


def paired_tests(scores: dict[str, Scores]) -> dict[str, dict[str, dict[str, float]]]:
    """Backward Search − each other method, per query: paired bootstrap of precision@10, mTS@10."""
    if "backward_search" not in scores:
        return {}
    bs = scores["backward_search"].per_query
    return {
        m: {k: bootstrap.paired(bs[k], s.per_query[k]).as_dict() for k in PAIRED_METRICS}
        for m, s in scores.items()
        if m != "backward_search"
    }


@dataclass
class TaskResults:
    """Everything E1 computed for a task, ready to be written."""

    space: SearchSpace
    queries: Queries
    lam: float
    rankings: dict[str, Ranking]
    scores: dict[str, Scores]
    lambda0: dict[str, Any] | None = None  # Backward Search at λ = 0, scored (Table 2)
    similarity: float | None = None  # teacher vs student (Table 6)
    sweep: pd.DataFrame | None = None
    sweep_alpha: pd.DataFrame | None = None
    calibration: dict[str, Any] | None = None
    student_file: str | None = None  # the student's file name (its λ is in it), when evaluated
    alpha: float = 1.0  # the centroid shift's α
    paired: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # vs BS

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        return {m: s.summary for m, s in self.scores.items()}


def evaluate(
    space: SearchSpace,
    q: Queries,
    methods: Iterable[str],
    lam: float,
    *,
    seed: int = 0,
    student: Student | None = None,
    sweep_lambdas: Iterable[float] | None = None,
    target_mts: float | None = None,
    alpha: float = 1.0,
    sweep_alphas: Iterable[float] | None = None,
) -> TaskResults:
    """Run and score the methods, test Backward Search against each, Table 2's λ = 0; optionally
    the λ and α sweeps and the mTS calibration."""
    methods = list(methods)
    sweep_lambdas = None if sweep_lambdas is None else list(sweep_lambdas)
    searches = BackwardSearches(space, q)  # each λ searched once, whoever asks first
    # every λ known now in one database pass: the reported one, Table 2's 0, the sweep's grid and
    # the calibration's two ends; kNN, the centroid shift and the student in another
    lams = [lam, 0.0] if "backward_search" in methods else []
    lams += [
        *(sweep_lambdas or ()),
        *([2.0**x for x in CALIBRATION_RANGE] if target_mts is not None else []),
    ]
    searches.prefetch(lams)
    cosine = rank_cosine(space, q, _cosine_vectors(space, q, methods, alpha, student, lam))
    rankers: dict[str, Callable[[], Ranking]] = {
        "random": lambda: rank_random(space, q, seed),
        "filtered_knn": lambda: rank_filtered_knn(space, q),
        "backward_search": lambda: searches(lam, single=True, timed=True),
    }
    rankings = {m: cosine[m] if m in cosine else rankers[m]() for m in methods}
    scores = {m: score(space, q, r) for m, r in rankings.items()}
    res = TaskResults(space, q, lam, rankings, scores, alpha=float(alpha))
    res.paired = paired_tests(res.scores)
    if "backward_search" in rankings:
        res.lambda0 = evaluate_lambda(searches, 0.0)
    if "student" in rankings:
        teacher = searches(lam).indices
        sim = metrics.retrieved_similarity(teacher, rankings["student"].indices)
        res.similarity = float(sim.double().mean())
    if sweep_lambdas is not None:
        log.info("λ sweep (Fig 6):")
        res.sweep = sweep(searches, sweep_lambdas)
    if sweep_alphas is not None:
        log.info("α sweep (class-centroid shift):")
        res.sweep_alpha = sweep_alpha(space, q, sweep_alphas)
    if target_mts is not None:
        res.calibration = cal = calibrate(searches, target_mts)
        log.info(
            "calibration: λ=%.4g gives mTS@10 %.3f (target %.3f%s), mAP@10 %.3f",
            cal["lambda"],
            cal["mts@10"],
            target_mts,
            "" if cal["reached"] else ", NOT reached",
            cal["paper_map@10"],
        )
    return res


def _cosine_vectors(
    space: SearchSpace,
    q: Queries,
    methods: list[str],
    alpha: float,
    student: Student | None,
    lam: float,
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The vectors of the chosen methods that rank by plain cosine and need no search."""
    out: dict[str, tuple[Any, dict[str, Any]]] = {}
    if "knn" in methods:
        out["knn"] = (q.z0, {})
    if "centroid_shift" in methods:
        out["centroid_shift"] = (centroid_shift(space, q, alpha), {"alpha": float(alpha)})
    if "student" in methods:
        z, timing = student_search(space, q, student)
        out["student"] = (z, {"timing": timing, "lam": lam})
    return out


def summary_lines(res: TaskResults) -> list[str]:
    """A short human summary: per method the paper's mAP@10, true mAP@10, mTS@10, ms/query."""
    lines = []
    for m, s in res.summary.items():
        ms = s["ms_per_query"]
        lines.append(
            f"  {m:<16} mAP@10 {s['paper_map@10']:.3f}  true mAP@10 {s['map@10']:.3f}  "
            f"mTS@10 {s['mts@10']:.3f}" + (f"  {ms:.4g} ms/query" if ms is not None else "")
        )
    for m, d in res.paired.items():
        p, t = d["paper_map@10"], d["mts@10"]
        lines.append(
            f"  Backward Search − {m:<15} Δ mAP@10 {p['mean']:+.3f} (p {bootstrap.p_text(p['p'])})  "
            f"Δ mTS@10 {t['mean']:+.3f} (p {bootstrap.p_text(t['p'])})"
        )
    if res.similarity is not None:
        lines.append(f"  retrieved similarity (teacher vs student): {res.similarity:.3f}")
    return lines
