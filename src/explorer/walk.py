"""The walk: what a method ranks for one query and the way its query vector went there.

Backward Search walks from z0 through every iterate to its answer z (paper Fig. 1: t_o → t_i →
t_n); a method that ranks another vector (the student, the class-centroid shift) jumps from z0 to
it in one step; one that ranks z0 itself or no vector at all does not move. Every ranking comes
from the registry of methods E1 and E2 use (src/evaluation/registry.py), so the explorer shows
their answers, not look-alikes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from src.errors import SuiteError
from src.evaluation.methods import Ranking
from src.evaluation.registry import Setting, method, rank
from src.evaluation.space import Queries, SearchSpace


@dataclass
class Walked:
    """A method's top-10 for one query and the vectors its query passed through (z0 first)."""

    ranking: Ranking
    path: Tensor  # T×E: z0, …, the vector that was ranked (T = 1: the query did not move)
    iterations: int | None = None  # Backward Search: Adam steps until its answer was final
    satisfied_at: int | None = None  # Backward Search: first iterate meeting the condition, -1


def walk(space: SearchSpace, q: Queries, key: str, lam: float, alpha: float) -> Walked:
    """Rank the one query `q` with the method `key` (at λ and α, where it has that knob) and
    return its walk."""
    if len(q) != 1:
        raise SuiteError(f"the explorer walks one query at a time, not {len(q)}")
    r = rank(Setting(space, q, lam, alpha=alpha, trace=True), [method(key).key])[key]
    if r.search is not None:  # a search: every iterate
        s = r.search
        return Walked(r, s.trace[0], int(s.iterations[0]), int(s.satisfied_at[0]))
    z0 = q.z0
    moved = r.z is not None and not torch.equal(r.z.to(z0.dtype), z0)
    return Walked(r, torch.cat([z0, r.z.to(z0.dtype)]) if moved else z0)
