"""Retrieval metrics (SPEC §7), vectorised over queries and small enough to check by hand.

- `precision_at_k` / `paper_map_at_k`: what the paper calls "mAP@10" — the fraction of the top-10
  carrying every condition label (precision@10).
- `average_precision_at_k` / `map_at_k`: true mAP@10, AP@10 normalised by min(10, #relevant).
- `tag_jaccard` / `mts_at_k`: mTS@10, the mean Jaccard similarity of tag sets, query vs results;
  `authors_query_tags` gives the query tag sets of quirk `empty-tag-token` (CUB, aPY); tag
  matrices come from src/tags.py.
- `retrieved_similarity`: Jaccard of two top-10 index sets (teacher vs student, paper Table 6).
- `context_preservation`: per label attribute NOT conditioned, the fraction of the top-10 keeping
  the query's class (what λ is meant to preserve).
Label arguments are integer class-id arrays (torch or numpy); results come back as torch tensors
on the indices' device (per query) or floats (means).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from src.errors import SuiteError
from src.tags import split_tags, widen

Labels = Mapping[str, "Tensor | np.ndarray"]


def _t(x, device=None) -> Tensor:
    return torch.as_tensor(x, device=device)


# ---------------------------------------------------------------------------------------------
# Condition labels


def condition_hits(indices, db_labels: Labels, conditions: Labels) -> Tensor:
    """Q×k bool: whether each retrieved database row carries every condition label of its query."""
    idx = _t(indices).long()
    if not conditions:
        raise SuiteError("condition_hits: no condition attribute given")
    hits = torch.ones(idx.shape, dtype=torch.bool, device=idx.device)
    for attr, cond in conditions.items():
        if attr not in db_labels:
            raise SuiteError(f"condition_hits: the database has no labels for {attr!r}")
        labels = _t(db_labels[attr], idx.device).long()
        hits &= labels[idx] == _t(cond, idx.device).long()[:, None]
    return hits


def precision_at_k(hits) -> Tensor:
    """Per query, the fraction of the top-k that are hits (the paper's per-query "mAP@10")."""
    return _t(hits).float().mean(1)


def paper_map_at_k(hits) -> float:
    """The paper's "mAP@10": mean over queries of precision@k."""
    return float(precision_at_k(hits).mean())


class RelevantCounter:
    """How many database rows carry each combination of classes of `attrs`, counted once (one
    bincount over the rows), so that counting a query's relevant rows costs no pass over them —
    one query of the explorer over millions of rows asks it each time."""

    def __init__(self, db_labels: Labels, attrs: list[str]):
        if not attrs:
            raise SuiteError("count_relevant: no condition attribute given")
        self.attrs = attrs
        self.labels = {a: _t(db_labels[a]).long() for a in attrs}
        self.sizes = [int(self.labels[a].max()) + 1 if len(self.labels[a]) else 1 for a in attrs]
        self.table = torch.bincount(self._key(self.labels), minlength=math.prod(self.sizes))

    def _key(self, labels: Labels) -> Tensor:
        """One integer per combination of classes (mixed radix over the database's class counts)."""
        key = None
        for a, size in zip(self.attrs, self.sizes, strict=True):
            lab = _t(labels[a]).long()
            key = lab if key is None else key * size + lab
        return key

    def __call__(self, conditions: Labels, exclude=None) -> Tensor:
        """Per query, the rows carrying every condition label (less the excluded row)."""
        first = _t(conditions[self.attrs[0]])
        dev = first.device
        cond = {a: _t(conditions[a], dev).long() for a in self.attrs}
        known = torch.ones(len(first), dtype=torch.bool, device=dev)
        for a, size in zip(self.attrs, self.sizes, strict=True):
            known &= (cond[a] >= 0) & (cond[a] < size)  # a class no database row carries: none
            cond[a] = cond[a].clamp(0, size - 1)  # (its key is not looked at)
        q_key = self._key(cond)
        counts = torch.where(known, self.table.to(dev)[q_key], 0)
        if exclude is not None:
            ex = _t(exclude, dev).long()
            row = ex.clamp(min=0)
            own = known.clone()
            for a in self.attrs:
                own &= self.labels[a].to(dev)[row] == cond[a]
            counts = counts - ((ex >= 0) & own).long()
        return counts


def count_relevant(db_labels: Labels, conditions: Labels, exclude=None) -> Tensor:
    """Per query, how many database rows carry every condition label (less the excluded row)."""
    return RelevantCounter(db_labels, list(conditions))(conditions, exclude)


def average_precision_at_k(hits, n_relevant) -> Tensor:
    """Per query AP@k = Σ_{i hit} precision@i / min(k, #relevant); 0 when nothing is relevant."""
    h = _t(hits).float()
    k = h.shape[1]
    ranks = torch.arange(1, k + 1, device=h.device, dtype=h.dtype)
    precision_at_i = h.cumsum(1) / ranks
    denom = _t(n_relevant, h.device).clamp(max=k).to(h.dtype)
    ap = (precision_at_i * h).sum(1)
    return torch.where(denom > 0, ap / denom.clamp(min=1), torch.zeros_like(ap))


def map_at_k(hits, n_relevant) -> float:
    """True mAP@k: mean over queries of AP@k."""
    return float(average_precision_at_k(hits, n_relevant).mean())


def context_preservation(
    indices, db_labels: Labels, query_labels: Labels, conditioned: Iterable[str]
) -> dict[str, float]:
    """For each attribute in query_labels that is not conditioned: mean fraction of the top-k
    whose class equals the query's own class."""
    per_query = context_per_query(indices, db_labels, query_labels, conditioned)
    return {attr: float(c.mean()) for attr, c in per_query.items()}


def context_per_query(
    indices, db_labels: Labels, query_labels: Labels, conditioned: Iterable[str]
) -> dict[str, Tensor]:
    """Per attribute not conditioned, per query: the fraction of the top-k keeping the query's
    class (the per-query values behind `context_preservation`, for bootstrap intervals)."""
    idx = _t(indices).long()
    cond = set(conditioned)
    out: dict[str, Tensor] = {}
    for attr, q in query_labels.items():
        if attr not in cond:
            labels = _t(db_labels[attr], idx.device).long()
            out[attr] = (labels[idx] == _t(q, idx.device).long()[:, None]).float().mean(1)
    return out


def retrieved_similarity(indices_a, indices_b) -> Tensor:
    """Per query, Jaccard similarity of two top-k index sets (rows hold distinct indices)."""
    a, b = _t(indices_a).long(), _t(indices_b).long()
    if a.shape[0] != b.shape[0]:
        raise SuiteError("retrieved_similarity: both rankings need the same number of queries")
    b = b.to(a.device)
    inter = (a[:, :, None] == b[:, None, :]).any(2).sum(1)
    union = a.shape[1] + b.shape[1] - inter
    return inter.float() / union.float()


# ---------------------------------------------------------------------------------------------
# Tags


EMPTY_TOKEN = ""  # what splitting ",<class>" on commas leaves in front of the class


def authors_query_tags(
    query_tags: Sequence[Iterable[str] | str | None], own_classes: Sequence[Iterable[str] | str]
) -> list[frozenset[str]]:
    """Query tag sets as the authors' E1 compares them (quirk `empty-tag-token`, CUB and aPY).

    Their E1 builds a query's tag string as '<attributes>,<class>' and splits it on ',' without
    stripping, so a query image with no attributes gets an extra empty token; database strings
    are stripped first and never have one. `own_classes`: per query, the class name(s) its tag
    set holds besides attributes (CUB: the species; aPY: the category). A query whose tags are
    nothing but those gets EMPTY_TOKEN added: one more item in every union it takes part in.
    Feed the result to `tags.tag_matrix` in place of the query tag list.
    """
    if len(query_tags) != len(own_classes):
        raise SuiteError(
            f"authors_query_tags: {len(query_tags)} query tag sets but {len(own_classes)} classes"
        )
    out = []
    for tags, own in zip(query_tags, own_classes, strict=True):
        tags = split_tags(tags) if isinstance(tags, str) or tags is None else frozenset(tags)
        own = {own} if isinstance(own, str) else set(own)
        out.append(tags | {EMPTY_TOKEN} if tags <= own else tags)
    return out


def tag_jaccard(query_tags: sp.csr_matrix, db_tags: sp.csr_matrix, indices) -> np.ndarray:
    """Q×k Jaccard similarity of each query's tag set with each retrieved row's (0 if both empty)."""
    idx = np.asarray(_t(indices).cpu().numpy(), dtype=np.int64)
    n_q, k = idx.shape
    if query_tags.shape[0] != n_q:
        raise SuiteError(f"tag_jaccard: {query_tags.shape[0]} query tag sets for {n_q} queries")
    width = max(query_tags.shape[1], db_tags.shape[1])  # a query may hold tags the database lacks
    query_tags, db_tags = widen(query_tags, width), widen(db_tags, width)
    rows = np.repeat(np.arange(n_q), k)
    cols = idx.ravel()
    inter = np.asarray(query_tags[rows].multiply(db_tags[cols]).sum(1)).ravel()
    union = query_tags.getnnz(1)[rows] + db_tags.getnnz(1)[cols] - inter
    jac = inter / np.maximum(union, 1)  # inter ≤ union: 0 where both sets are empty
    return jac.reshape(n_q, k)


def mts_at_k(query_tags: sp.csr_matrix, db_tags: sp.csr_matrix, indices) -> float:
    """mTS@k: mean over queries of the mean tag Jaccard over the top-k."""
    return float(tag_jaccard(query_tags, db_tags, indices).mean())
