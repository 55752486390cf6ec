"""The walk: what a method ranks for one query and the way its query vector went there.

Backward Search walks from z0 through every iterate to its answer z (paper Fig. 1: t_o → t_i →
t_n); the student and the class-centroid shift jump from z0 to their vector in one step; kNN and
head-filtered kNN do not move. Every ranking comes from the methods E1 and E2 use
(src/evaluation/methods.py), so the explorer shows their answers, not look-alikes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from src.errors import SuiteError
from src.evaluation.methods import (
    Ranking,
    rank_backward_search,
    rank_centroid_shift,
    rank_filtered_knn,
    rank_knn,
    rank_student,
)
from src.evaluation.space import Queries, SearchSpace

# The page's method switch, in its order: the paper's method first, then its student, the two
# baselines that are not in the paper, and plain kNN.
METHODS = {
    "backward_search": "Backward Search",
    "student": "student",
    "centroid_shift": "class-centroid shift (not in the paper)",
    "filtered_knn": "head-filtered kNN (not in the paper)",
    "knn": "k-nearest (kNN)",
}


@dataclass
class Walked:
    """A method's top-10 for one query and the vectors its query passed through (z0 first)."""

    ranking: Ranking
    path: Tensor  # T×E: z0, …, the vector that was ranked (T = 1: the query did not move)
    iterations: int | None = None  # Backward Search: Adam steps until its answer was final
    satisfied_at: int | None = None  # Backward Search: first iterate meeting the condition, -1


def walk(space: SearchSpace, q: Queries, method: str, lam: float, alpha: float) -> Walked:
    """Rank the one query `q` with `method` (λ for Backward Search and the student, α for the
    centroid shift) and return its walk."""
    if len(q) != 1:
        raise SuiteError(f"the explorer walks one query at a time, not {len(q)}")
    z0 = q.z0
    if method == "backward_search":
        r = rank_backward_search(space, q, lam, trace=True)
        return Walked(
            r, r.search.trace[0], int(r.search.iterations[0]), int(r.search.satisfied_at[0])
        )
    if method == "student":
        student = space.student(lam)
        if student is None:
            raise SuiteError(
                f"no student of {space.task.name} at λ = {lam:g}: D1 distils one per λ "
                f"(D1_train_distill.py --task {space.task.name} --lambda {lam:g})"
            )
        r = rank_student(space, q, student, lam)
    elif method == "centroid_shift":
        r = rank_centroid_shift(space, q, alpha)
    elif method == "filtered_knn":
        r = rank_filtered_knn(space, q)
    elif method == "knn":
        r = rank_knn(space, q)
    else:
        raise SuiteError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")
    moved = r.z is not None and method != "knn"  # kNN ranks z0 itself
    return Walked(r, torch.cat([z0, r.z.to(z0.dtype)]) if moved else z0)
