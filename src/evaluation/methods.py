"""The ranking functions, shared by E1, E2 and the explorer through the registry of methods
(src/evaluation/registry.py): random search, kNN, Backward Search and the student (the paper's),
and two baselines that are not in the paper (head-filtered kNN and the class-centroid shift), each
giving the top-K database rows per query.

Everything is batched on the space's device: one `backward_search` call for all queries of a λ,
one pass over the database (`rank_cosine`) for every set of vectors known at the time (E1 ranks
kNN, the centroid shift and the student together, the λ values of its sweep together, the α values
together). A query keeps its own image in the database unless its `exclude` row says otherwise
(the clean protocol, E1 --exclude-query).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from src.errors import SuiteError
from src.evaluation.space import Queries, SearchSpace, stage_hint
from src.evaluation.timing import Timing, time_repeated
from src.method.backward_search import SearchResult, StopRule, _EvalMode, backward_search
from src.method.retrieval import Boost
from src.method.student import Student
from src.paper import TOP_K as K
from src.threads import search_threads

RANDOM_BUDGET = 1 << 24  # random keys drawn at once (64 MiB), whatever the database size
HEAD_ROWS = 1 << 16  # rows through the heads at once (head_predictions)
FILTER_BONUS = 3.0  # head-filtered kNN: cosine lies in [-1, 1], so every kept row outranks the rest


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
    """fn's result and Timing: a warm-up, then the median of repeats (src/evaluation/timing.py)."""
    return time_repeated(fn, torch.cuda.synchronize if device.type == "cuda" else (lambda: None))


def rank(
    space: SearchSpace, vectors: Tensor, exclude: Tensor | None = None, k: int = K
) -> tuple[Tensor, Tensor]:
    """The one cosine ranking: (scores Q×k, database rows Q×k) of each vector against the space
    (its searcher: exact by default, tile by tile over the partitions)."""
    with torch.no_grad():
        return space.searcher.search(vectors.detach().to(space.device), k, exclude)


def rank_cosine(
    space: SearchSpace, q: Queries, vectors: Mapping[str, tuple[Tensor, dict[str, Any]]]
) -> dict[str, Ranking]:
    """Rankings of several Q×E vector sets for the queries `q`, in one pass over the database:
    method name → (vectors, the Ranking's other fields). A query's vectors go side by side (they
    tend to share neighbours, so the float32 re-scoring of the screen stays small)."""
    if not vectors:
        return {}
    n_sets, n = len(vectors), len(q)
    z = torch.stack([z for z, _ in vectors.values()], 1).flatten(0, 1)  # query-major
    ex = None if q.exclude is None else q.exclude.repeat_interleave(n_sets)
    scores, indices = (x.view(n, n_sets, -1) for x in rank(space, z, ex))
    return {
        m: Ranking(m, indices[:, i].contiguous(), scores[:, i].contiguous(), z_m, **kw)
        for i, (m, (z_m, kw)) in enumerate(vectors.items())
    }


def _ranked(method: str, space: SearchSpace, q: Queries, z: Tensor, **kw: Any) -> Ranking:
    return rank_cosine(space, q, {method: (z, kw)})[method]


def rank_random(space: SearchSpace, q: Queries, seed: int) -> Ranking:
    """K distinct random database items per query (seeded; the excluded row never drawn).

    The top-K of i.i.d. uniform keys is a uniformly random K-subset. The keys are drawn a few
    queries at a time (RANDOM_BUDGET) into one buffer: one generator stream, so the same keys as
    one Q×N draw (torch.rand(Q, N)).
    """
    gen = torch.Generator().manual_seed(seed)
    n_q, n_db = len(q), len(space)
    ex = None if q.exclude is None else q.exclude.cpu()
    step = max(1, RANDOM_BUDGET // max(n_db, 1))
    out = torch.empty(n_q, K, dtype=torch.long)
    buf = torch.empty(min(step, n_q), n_db)  # filled in place: no new pages per chunk
    for start in range(0, n_q, step):
        stop = min(start + step, n_q)
        keys = buf[: stop - start].uniform_(generator=gen)
        if ex is not None:
            has = ex[start:stop] >= 0
            keys[has.nonzero().flatten(), ex[start:stop][has]] = -1.0
        out[start:stop] = keys.topk(K, dim=1).indices
    return Ranking("random", out.to(space.device))


def head_predictions(
    space: SearchSpace, z: Tensor, attrs: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """Per attribute (default: the conditioned ones), the frozen heads' predicted class of each
    row of z (a database of a million rows goes through in slices: the heads' hidden layers would
    take GBs)."""
    heads = {a: space.heads[a] for a in (space.task.conditions if attrs is None else attrs)}
    with torch.no_grad(), _EvalMode(heads):
        return {
            a: torch.cat(
                [h(z[s : s + HEAD_ROWS]).argmax(1) for s in range(0, max(len(z), 1), HEAD_ROWS)]
            )
            for a, h in heads.items()
        }


def database_predictions(space: SearchSpace) -> dict[str, Tensor]:
    """`head_predictions` of every database row, read tile by tile from the partitions."""
    parts = [
        head_predictions(space, torch.from_numpy(z).to(space.device)) for _, z in space.db.tiles()
    ]
    return {a: torch.cat([p[a] for p in parts]) for a in space.task.conditions}


def seen_as(space: SearchSpace, z: Tensor) -> dict[str, str]:
    """How the encoder's heads see one vector (1×E): the class name it predicts for every
    attribute it has a head for (an outside picture in E2 and the explorer, a walk's answer)."""
    pred = head_predictions(space, z.to(space.device), space.heads)
    return {a: space.labels[a][int(p[0])] for a, p in pred.items()}


def class_key(classes: Mapping[str, Tensor], sizes: Mapping[str, int]) -> Tensor:
    """One integer per combination of classes over the attributes of `sizes` (in its order)."""
    key = None
    for a, n in sizes.items():
        key = classes[a].long() if key is None else key * n + classes[a].long()
    return key


def rank_filtered_knn(space: SearchSpace, q: Queries) -> Ranking:
    """kNN among the database images whose heads predict every condition class; the rest follow
    in similarity order when fewer than K qualify. No optimisation at all."""
    sizes = {a: len(space.labels[a]) for a in space.task.conditions}
    db_key = class_key(database_predictions(space), sizes)
    boost = Boost(db_key, class_key(q.conditions, sizes), FILTER_BONUS)
    with torch.no_grad():
        _, rows = space.searcher.search(q.z0, K, q.exclude, boost)
    return Ranking("filtered_knn", rows)


def centroids_missing(space: SearchSpace) -> str | None:
    """Why the centroid shift cannot run on `space`, or None: without train embeddings there are
    no class centroids (each μ would be one mean, the shift kNN itself)."""
    if space.centroids:
        return None
    return (
        f"needs the train split's class centroids, and {space.weights / 'embeddings.npz'} holds "
        f"no train embeddings: re-run {stage_hint('C1', space.task, space.run)}"
    )


def centroid_shift(space: SearchSpace, q: Queries, alpha: float) -> Tensor:
    """z = z0 + α · Σ_attr (μ_attr[condition] − μ_attr[predicted class of z0]) for every query."""
    missing = centroids_missing(space)
    if missing:
        raise SuiteError(f"the class-centroid shift {missing}")
    pred = head_predictions(space, q.z0)
    shift = torch.zeros_like(q.z0)
    for a, cond in q.conditions.items():
        mu = space.centroids[a]
        shift += mu[cond] - mu[pred[a]]
    return q.z0 + alpha * shift


def rank_centroid_shifts(space: SearchSpace, q: Queries, alphas: Iterable[float]) -> list[Ranking]:
    """The centroid shift at each α, ranked in one pass over the database."""
    vectors = {
        f"α={a!r}": (centroid_shift(space, q, a), {"alpha": float(a)})
        for a in dict.fromkeys(alphas)
    }
    ranked = {r.alpha: r for r in rank_cosine(space, q, vectors).values()}
    for r in ranked.values():
        r.method = "centroid_shift"
    return [ranked[float(a)] for a in alphas]


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
    with torch.no_grad(), search_threads():
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

    timed: also the timing pass (src/evaluation/timing.py), only the reported λ needs it. single:
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


def student_search(space: SearchSpace, q: Queries, student: Student) -> tuple[Tensor, Timing]:
    """The distilled student's vectors (one forward pass for all queries) and their timing."""
    student = student.to(space.device).eval()
    with torch.no_grad():
        return _timed(lambda: student.search(q.z0, q.conditions), space.device)


class BackwardSearches:
    """Backward Search rankings of one query set, each λ searched once: the reported λ, Table 2's
    λ = 0, the sweep and the calibration share them; `trace` keeps each query's walk."""

    def __init__(self, space: SearchSpace, q: Queries, *, trace: bool = False):
        self.space, self.q, self.trace = space, q, trace
        self.done: dict[float, Ranking] = {}

    def __call__(self, lam: float, *, single: bool = False, timed: bool = False) -> Ranking:
        lam = float(lam)
        have = self.done.get(lam)
        if have is None:
            have = rank_backward_search(self.space, self.q, lam, timed=timed, trace=self.trace)
            self.done[lam] = have
        elif timed and have.timing is None:  # searched already: only the timing pass is missing
            have.timing = _timed(lambda: search(self.space, self.q, lam), self.space.device)[1]
        if single and have.single is None:
            have.single = search(self.space, self.q, lam, rule=StopRule.SINGLE)
        return have

    def prefetch(self, lams: Iterable[float]) -> None:
        """Search every λ not searched yet (one `backward_search` call each: a call's z does not
        depend on the others) and rank them all in one pass over the database."""
        todo = [lam for lam in dict.fromkeys(map(float, lams)) if lam not in self.done]
        found = {
            f"λ={lam!r}": (search(self.space, self.q, lam, trace=self.trace), lam) for lam in todo
        }
        vectors = {k: (r.z, {"search": r, "lam": lam}) for k, (r, lam) in found.items()}
        for r in rank_cosine(self.space, self.q, vectors).values():
            r.method = "backward_search"
            self.done[r.lam] = r
