"""The ranking methods, one function each, shared by E1, E2 and the explorer: random search, kNN,
Backward Search and the student (the paper's), and two baselines that are not in the paper
(head-filtered kNN and the class-centroid shift), each giving the top-K database rows per query.

Everything is batched on the space's device: one `backward_search` call for all queries, one
cosine top-k (`rank`) against the database. A query keeps its own image in the database unless
its `exclude` row says otherwise (the clean protocol, E1 --exclude-query).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from src.evaluation.space import Queries, SearchSpace
from src.evaluation.timing import Timing, time_repeated
from src.method.backward_search import SearchResult, StopRule, _EvalMode, backward_search
from src.method.retrieval import SCORE_BUDGET, cosine_topk
from src.method.student import Student
from src.paper import TOP_K as K

ALPHAS = tuple(i / 4 for i in range(9))  # the α sweep of the centroid shift: 0, 0.25, …, 2


@dataclass
class Ranking:
    """A method's top-K per query and what produced it."""

    method: str
    indices: Tensor  # Q×K database rows
    scores: Tensor | None = None  # Q×K cosine similarities (None: random search)
    z: Tensor | None = None  # Q×E the vectors that were ranked (None: random, filtered kNN)
    timing: Timing | None = None  # the timing pass (median, min, max)
    search: SearchResult | None = None
    lam: float | None = None
    single: SearchResult | None = None  # the same queries under StopRule.SINGLE (Table 5 only)
    alpha: float | None = None  # the centroid shift's step


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, Timing]:
    """fn's result and its Timing: a warm-up call, then the median of repeats (src/timing.py)."""
    return time_repeated(fn, torch.cuda.synchronize if device.type == "cuda" else (lambda: None))


def rank(
    space: SearchSpace, vectors: Tensor, exclude: Tensor | None = None, k: int = K
) -> tuple[Tensor, Tensor]:
    """The one cosine ranking: (scores Q×k, database rows Q×k) of each vector against the space."""
    with torch.no_grad():
        return cosine_topk(vectors.detach().to(space.device), space.z, k, exclude=exclude)


def _ranked(method: str, space: SearchSpace, q: Queries, z: Tensor, **kw: Any) -> Ranking:
    scores, indices = rank(space, z, q.exclude)
    return Ranking(method, indices, scores, z, **kw)


def rank_random(space: SearchSpace, q: Queries, seed: int) -> Ranking:
    """K distinct random database items per query (seeded; the excluded row never drawn).

    The top-K of i.i.d. uniform keys is a uniformly random K-subset, drawn for all queries at once.
    """
    keys = torch.rand(len(q), len(space), generator=torch.Generator().manual_seed(seed))
    if q.exclude is not None:
        ex = q.exclude.cpu()
        has = ex >= 0
        keys[has.nonzero().flatten(), ex[has]] = -1.0
    return Ranking("random", keys.topk(K, dim=1).indices.to(space.device))


def rank_knn(space: SearchSpace, q: Queries) -> Ranking:
    """k-nearest search: the query's own embedding, unchanged."""
    return _ranked("knn", space, q, q.z0)


def head_predictions(space: SearchSpace, z: Tensor) -> dict[str, Tensor]:
    """Per conditioned attribute, the frozen heads' predicted class of each row of z."""
    heads = {a: space.heads[a] for a in space.task.conditions}
    with torch.no_grad(), _EvalMode(heads):
        return {a: h(z).argmax(1) for a, h in heads.items()}


def rank_filtered_knn(space: SearchSpace, q: Queries) -> Ranking:
    """kNN among the database images whose heads predict every condition class; the rest follow
    in similarity order when fewer than K qualify. No optimisation at all."""
    db_pred = head_predictions(space, space.z)
    db = F.normalize(space.z, dim=1)
    z0 = F.normalize(q.z0, dim=1)
    n_q, n_db = z0.shape[0], db.shape[0]
    out = torch.empty(n_q, K, dtype=torch.long, device=z0.device)
    chunk = max(1, SCORE_BUDGET // max(n_db, 1))
    for start in range(0, n_q, chunk):
        stop = min(start + chunk, n_q)
        sim = z0[start:stop] @ db.T
        keep = torch.ones_like(sim, dtype=torch.bool)
        for a, pred in db_pred.items():
            keep &= pred[None, :] == q.conditions[a][start:stop, None]
        sim = sim + 3.0 * keep  # cosine lies in [-1, 1]: every kept row outranks every other
        if q.exclude is not None:
            ex = q.exclude[start:stop]
            rows = (ex >= 0).nonzero().flatten()
            sim[rows, ex[rows]] = float("-inf")
        out[start:stop] = sim.topk(K, dim=1).indices
    return Ranking("filtered_knn", out)


def centroid_shift(space: SearchSpace, q: Queries, alpha: float) -> Tensor:
    """z = z0 + α · Σ_attr (μ_attr[condition] − μ_attr[predicted class of z0]) for every query."""
    pred = head_predictions(space, q.z0)
    shift = torch.zeros_like(q.z0)
    for a, cond in q.conditions.items():
        mu = space.centroids[a]
        shift += mu[cond] - mu[pred[a]]
    return q.z0 + alpha * shift


def rank_centroid_shift(space: SearchSpace, q: Queries, alpha: float) -> Ranking:
    """The class-centroid shift at α, ranked by cosine: one vector addition per query."""
    return _ranked("centroid_shift", space, q, centroid_shift(space, q, alpha), alpha=float(alpha))


def search(
    space: SearchSpace,
    q: Queries,
    lam: float | Tensor,
    rule: StopRule = StopRule.BATCH,
    *,
    trace: bool = False,
) -> SearchResult:
    """Backward Search of every query at once (λ a float, or one per query); `trace` keeps each
    query's walk of iterates (the explorer's map)."""
    if isinstance(lam, Tensor):
        lam = lam.to(space.device, q.z0.dtype)
    with torch.no_grad():
        return backward_search(space.heads, q.z0, q.conditions, lam, rule=rule, trace=trace)


def rank_backward_search(
    space: SearchSpace,
    q: Queries,
    lam: float,
    *,
    single: bool = False,
    timed: bool = False,
    trace: bool = False,
) -> Ranking:
    """Backward Search at λ for every query in one call.

    timed: also run the timing pass (src/timing.py) — only the reported λ needs it. single: also
    count the iterations of the authors' single-query rule (StopRule.SINGLE) on the same queries,
    for Table 5; its z is not used (every retrieval number is the batched rule's). trace: keep
    each query's walk in `ranking.search.trace` (the same answer; the explorer draws it).
    """
    lam = float(lam)
    result, timing = (
        _timed(lambda: search(space, q, lam, trace=trace), space.device)
        if timed
        else (search(space, q, lam, trace=trace), None)
    )
    ranking = _ranked("backward_search", space, q, result.z, timing=timing, search=result, lam=lam)
    if single:
        ranking.single = search(space, q, lam, rule=StopRule.SINGLE)
    return ranking


def rank_student(space: SearchSpace, q: Queries, student: Student, lam: float) -> Ranking:
    """The distilled student: one forward pass for all queries."""
    student = student.to(space.device).eval()
    with torch.no_grad():
        z, timing = _timed(lambda: student.search(q.z0, q.conditions), space.device)
    return _ranked("student", space, q, z, timing=timing, lam=lam)


class BackwardSearches:
    """Backward Search rankings of one query set, each λ searched once: the reported λ, Table 2's
    λ = 0, the sweep and the calibration share them."""

    def __init__(self, space: SearchSpace, q: Queries):
        self.space, self.q = space, q
        self.done: dict[float, Ranking] = {}

    def __call__(self, lam: float, *, single: bool = False, timed: bool = False) -> Ranking:
        lam = float(lam)
        have = self.done.get(lam)
        if have is None or (timed and have.timing is None):
            have = rank_backward_search(self.space, self.q, lam, timed=timed)
            self.done[lam] = have
        if single and have.single is None:
            have.single = search(self.space, self.q, lam, rule=StopRule.SINGLE)
        return have
