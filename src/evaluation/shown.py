"""What people are shown of a ranking, computed here so that the report and the explorer only
draw: per result its database row, its cosine, whether it carries the condition and its tag
similarity to the query (`ShownRow`, one rule for each); E2's result grids (E1's rankings where it
wrote them for these queries, else ranked by the registry's methods), Fig 5's λ rows and an
outside picture's search.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from src.evaluation.methods import rank as rank_vectors
from src.evaluation.methods import search, seen_as
from src.evaluation.registry import (
    BACKWARD_SEARCH,
    KNN,
    METHODS,
    RANDOM,
    STUDENT,
    Setting,
    rank,
)
from src.evaluation.space import (
    Queries,
    SearchSpace,
    file_queries,
    picture_query,
    unreachable_warning,
)
from src.method import metrics

log = logging.getLogger(__name__)


@dataclass
class ShownRow:
    """One method's top-K for one query, as a figure or the explorer shows it."""

    title: str
    rows: np.ndarray  # K database rows, best first
    hits: np.ndarray  # K bools: the result carries every condition class (metrics.condition_hits)
    similarity: np.ndarray | None  # K tag-Jaccard with the query (None: the query has no tags)
    scores: np.ndarray | None = None  # K cosine similarities (None: not shown)


def shown_rows(
    space: SearchSpace, q: Queries, title: str, indices: Tensor, scores: Tensor | None = None
) -> list[ShownRow]:
    """One ShownRow per query of a Q×K ranking."""
    hits = metrics.condition_hits(indices, space.label_ids, q.conditions).cpu().numpy()
    sim = None if q.tags is None else metrics.tag_jaccard(q.tags, space.tags, indices)
    rows = indices.cpu().numpy()
    cos = None if scores is None else scores.cpu().numpy()
    return [
        ShownRow(
            title,
            rows[i],
            hits[i],
            None if sim is None else sim[i],
            None if cos is None else cos[i],
        )
        for i in range(len(rows))
    ]


def e1_ranking(space: SearchSpace, results: Path, method: str, q: Queries) -> Tensor | None:
    """The top-10 database rows E1 wrote for these queries (retrievals_<method>.csv), or None when
    the file, one of the queries or one of the images is missing."""
    path = results / f"retrievals_{method}.csv"
    if not path.exists():
        return None
    df = pd.read_csv(path, dtype=str, keep_default_na=False).set_index("query_id")
    cols = sorted((c for c in df.columns if c.startswith("rank_")), key=lambda c: int(c[5:]))
    wanted = [str(i) for i in q.frame["query_id"]]
    if not cols or not set(wanted) <= set(df.index):
        return None
    rows = space.rows_of(df.loc[wanted, cols].to_numpy().ravel()).reshape(len(wanted), -1)
    return None if (rows < 0).any() else torch.from_numpy(rows)


@dataclass
class QueryResults:
    """One query of the query file and each method's results for it (a result grid)."""

    query: pd.Series  # query_id, image, a class per condition attribute, tags
    rows: list[ShownRow]


def result_grids(
    space: SearchSpace,
    queries: pd.DataFrame,
    lam: float,
    *,
    e1_results: Path | None = None,
    alpha: float = 1.0,
) -> list[QueryResults]:
    """Per query, every method's results but random search's: E1's retrievals_<method>.csv in
    `e1_results` where given (E1 ran at this λ and α) and it holds these queries, else ranked
    here, all queries at once — only the paper's methods (E1 owns the settings of the others),
    the student only where D1 trained one at λ."""
    q = file_queries(space, queries)
    if warning := unreachable_warning(space, q):
        log.warning("%s", warning)
    s = Setting(space, q, lam, alpha=alpha)
    grid = [m for m in METHODS.values() if m.key != RANDOM]  # random pictures say nothing here
    found: dict[str, Tensor] = {}
    for m in grid:
        ranked = e1_ranking(space, e1_results, m.key, q) if e1_results else None
        if ranked is not None:
            found[m.key] = ranked
            log.info("%s: ranking read from E1's retrievals_%s.csv", m.label, m.key)
    todo = [
        m.key
        for m in grid
        if m.key not in found and m.in_paper and (not m.trained or space.student(lam) is not None)
    ]
    found |= {k: r.indices for k, r in rank(s, todo).items()}
    shown = [
        shown_rows(space, q, m.title(s.value(m.knob)), found[m.key]) for m in grid if m.key in found
    ]
    queries = [query for _, query in q.frame.iterrows()]
    return [QueryResults(query, [rows[i] for rows in shown]) for i, query in enumerate(queries)]


@dataclass
class LambdaRows:
    """Fig 5 for one query: its results at each λ (kNN first), and what the t-SNE beside marks."""

    query: pd.Series
    rows: list[ShownRow]
    query_z: np.ndarray  # the query's embedding
    marks: dict[str, np.ndarray]  # row name → mean embedding of the row's top 3
    own: str  # the query image's class of the first condition attribute


def lambda_rows(
    space: SearchSpace, query: pd.Series, lams: Sequence[float | None], top_k: int = 5
) -> LambdaRows:
    """One query's top-k at each λ of `lams` (None = kNN), searched in one batched call."""
    q = file_queries(space, query.to_frame().T)
    searched = [lam for lam in lams if lam is not None]
    zs = {}
    if searched:  # one batched search, λ per row
        z_b = search(space, q.select([0] * len(searched)), torch.tensor(searched)).z
        zs = dict(zip(searched, z_b, strict=True))
    batch = torch.stack([q.z0[0] if lam is None else zs[lam] for lam in lams])
    indices = rank_vectors(space, batch, k=top_k)[1]
    knn, bs = METHODS[KNN], METHODS[BACKWARD_SEARCH]
    names = [knn.label if lam is None else f"{bs.knob.symbol}={lam:g}" for lam in lams]
    top3 = space.vectors(indices[:, :3]).cpu().numpy()  # only those rows read
    marks = {n: z.mean(0) for n, z in zip(names, top3, strict=True)}
    qs = q.select([0] * len(lams))
    titles = [knn.title() if lam is None else bs.title(lam) for lam in lams]
    rows = [shown_rows(space, qs, t, indices)[i] for i, t in enumerate(titles)]
    attr = space.task.conditions[0]
    own = space.labels[attr][int(q.own[attr][0])]
    return LambdaRows(query, rows, q.z0[0].cpu().numpy(), marks, own)


@dataclass
class PictureSearch:
    """What searching an outside picture found: how the encoder sees it and the ranked results."""

    seen_as: dict[str, str]  # attr → the class its head predicts for the picture
    results: pd.DataFrame  # Backward Search's: rank, cosine, image, one column per label, satisfies
    rows: list[ShownRow]  # kNN, Backward Search, the student (when D1 trained one) with cosines


def search_picture(
    space: SearchSpace, z0: Tensor, conditions: Mapping[str, int], lam: float
) -> PictureSearch:
    """Backward Search from a picture's embedding z0 (`embed_image`) towards `conditions`,
    beside kNN and (when D1 trained it for these conditions) the student."""
    q = picture_query(space, z0, conditions)
    if warning := unreachable_warning(space, q):
        log.warning("%s", warning)
    keys = [KNN, BACKWARD_SEARCH]
    student = space.student(lam)
    if student is not None and set(student.num_classes) != set(conditions):
        log.info(
            "the student of %s takes every condition (%s) at once: the picture is searched by "
            "Backward Search alone (give each --condition for the student's row)",
            space.task.name,
            ", ".join(student.num_classes),
        )
    elif student is not None:
        keys.append(STUDENT)
    s = Setting(space, q, lam)
    ranked = rank(s, keys)
    rows = [
        shown_rows(space, q, METHODS[k].title(s.value(METHODS[k].knob)), r.indices, r.scores)[0]
        for k, r in ranked.items()
    ]
    bs = rows[keys.index(BACKWARD_SEARCH)]
    split = ["split"] if space.database != "test" else []  # which split each result is from
    found = space.table_rows(bs.rows)[["image", *space.labels, *split]]
    found.insert(0, "cosine", bs.scores)
    found.insert(0, "rank", np.arange(1, len(found) + 1))
    found["satisfies"] = bs.hits
    return PictureSearch(seen_as(space, q.z0), found, rows)
