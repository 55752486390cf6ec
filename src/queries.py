"""The query protocol (SPEC §3): balanced (query image, condition) pairs drawn from the test split.

A candidate is drawn with probability ∝ 1 / frequency of its class (of its class tuple over the
conditioned attributes); the condition is one uniformly random class per conditioned attribute. A
pair is kept when at least 10 other test images carry every condition label and at least one of
them shares little context with the candidate (tag-Jaccard < 0.1), so a good answer must change
the condition while keeping the context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from src.artifacts import queries_path, read_table
from src.datasets.common import read_labels, read_split
from src.errors import SuiteError
from src.hints import hint
from src.labels import class_ids
from src.paper import QUERIES, QUERY_MAX_JACCARD, QUERY_MIN_TARGETS
from src.tags import tag_matrix
from src.tasks import get_task

DEFAULT_SEED = 777
DRAWS_PER_QUERY = 50  # give up after this many draws per requested query (plus a floor)
MIN_DRAWS = 20_000
SKIPPED = ("no_tags", "duplicate", "few_targets", "no_dissimilar_target")  # why draws were skipped


@dataclass
class QueryDraw:
    """The accepted queries and how many draws each rule rejected."""

    queries: pd.DataFrame
    rows: np.ndarray  # the query images' row numbers in the test split
    draws: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    note: str | None = None  # why there are fewer than the protocol's QUERIES (None: as asked)


def make_queries(
    test: pd.DataFrame,
    labels: dict[str, list[str]],
    conditions: Sequence[str],
    num_queries: int | None = None,
    seed: int = DEFAULT_SEED,
    *,
    max_draws: int | None = None,
) -> QueryDraw:
    """Draw `num_queries` distinct (query, condition) pairs from `test` by the SPEC §3 rules.

    `test` has columns image, <attributes as class names>, tags ('|'-joined); `labels` gives each
    attribute's class names in id order. Fails, saying how many were found, when the test split
    cannot supply `num_queries` pairs within the draw budget. None: the protocol's QUERIES, or
    as many as the split has valid pairs when that is fewer (QueryDraw.note says so).
    """
    if num_queries is not None and num_queries < 1:
        raise SuiteError(f"--num-queries must be at least 1 (got {num_queries})")
    split = _Split(test, labels, list(conditions))
    wanted = QUERIES if num_queries is None else num_queries
    if wanted > split.pairs and num_queries is not None:  # else 50 draws per query go by
        raise SuiteError(
            f"--num-queries {num_queries} is more than the {split.pairs} (test image, condition) "
            f"pairs the test split ({split.n} images) has; lower --num-queries"
        )
    draws, skipped = 0, dict.fromkeys(SKIPPED, 0)
    if wanted <= split.pairs:
        budget = max_draws if max_draws is not None else max(MIN_DRAWS, DRAWS_PER_QUERY * wanted)
        accepted, draws, skipped = split.draw(wanted, seed, budget)
        if len(accepted) == wanted:
            return split.table(accepted, draws, skipped)
        if num_queries is not None:
            raise SuiteError(
                f"found only {len(accepted)} of {num_queries} queries after {draws} draws: the "
                f"test split ({split.n} images) is too small for this task; lower --num-queries"
            )
    return split.every_valid_pair(seed, draws, skipped)


class _Split:
    """A test split prepared for drawing: class-tuple keys, candidate weights, the rules."""

    def __init__(self, test: pd.DataFrame, labels: dict[str, list[str]], conditions: list[str]):
        for a in conditions:
            if a not in test.columns or a not in labels:
                raise SuiteError(f"the test split has no {a!r} labels; re-run A1 for this dataset")
        self.test, self.labels, self.conditions = test, labels, conditions
        self.n = n = len(test)
        if n == 0:
            raise SuiteError("the test split is empty; re-run A1 for this dataset")
        ids = np.stack(
            [class_ids(test[a], a, labels[a], "the test split") for a in conditions], axis=1
        )  # n × m
        self.sizes = [len(labels[a]) for a in conditions]
        self.pairs = n * int(np.prod(self.sizes))  # (query image, condition) pairs there can be
        key = np.ravel_multi_index(ids.T, self.sizes)  # one integer per class tuple
        # candidates: p ∝ 1 / frequency of the candidate's class tuple
        freq = np.bincount(key, minlength=int(np.prod(self.sizes)))
        self.p = 1.0 / freq[key]
        self.p /= self.p.sum()
        self.rules = _Rules(key, freq.size, test["tags"])
        if not self.rules.tagged.any():  # rule 5 measures context by tags: no tags, no query
            raise SuiteError(
                f"none of the {n} test images has tags (the tags column is empty), and a query "
                "needs tags (SPEC §3); re-run A1 with tags for this dataset"
            )

    def draw(self, wanted: int, seed: int, budget: int):
        """The protocol's draws: (accepted pairs, draws, skipped per rule) within `budget`."""
        n, sizes, rules = self.n, self.sizes, self.rules
        rng = np.random.default_rng(seed)
        skipped = dict.fromkeys(SKIPPED, 0)
        seen: set[tuple[int, int]] = set()
        accepted: list[tuple[int, int]] = []
        draws = 0
        while len(accepted) < wanted and draws < budget:
            # draw in chunks (fixed size: the stream depends on the seed only), judge one at a time
            cands = rng.choice(n, size=4096, p=self.p)
            conds = np.stack([rng.integers(0, s, size=4096) for s in sizes])
            for c, k in zip(
                cands.tolist(), np.ravel_multi_index(conds, sizes).tolist(), strict=True
            ):
                if len(accepted) == wanted or draws == budget:
                    break
                draws += 1
                reason = "duplicate" if (c, k) in seen else rules.reject(c, k)
                if reason:
                    skipped[reason] += 1
                else:
                    seen.add((c, k))
                    accepted.append((c, k))
        return accepted, draws, skipped

    def every_valid_pair(self, seed: int, draws: int, skipped: dict[str, int]) -> QueryDraw:
        """Up to QUERIES of the split's valid pairs, each (image, condition) pair judged once.

        Ordered as the protocol's draws would find them: its rejection of invalid pairs and
        duplicates amounts to successive draws ∝ 1/frequency without replacement among the valid
        pairs, which Efraimidis–Spirakis keys u^(1/w), sorted, reproduce in one step.
        """
        n_keys = int(np.prod(self.sizes))
        valid = [(c, k) for k in range(n_keys) for c in self.rules.valid_candidates(k).tolist()]
        if not valid:
            raise SuiteError(
                f"no valid query in the test split ({self.n} images): a condition needs "
                f"{QUERY_MIN_TARGETS} other tagged test images that carry it, one of them with "
                f"tag-Jaccard < {QUERY_MAX_JACCARD} to the query (SPEC §3); give the collection "
                "more test images (labels.csv's split column) or more tags"
            )
        weight = self.p[[c for c, _ in valid]]
        keys = np.log(np.random.default_rng(seed).random(len(valid))) / weight  # log u^(1/w)
        order = np.argsort(-keys, kind="stable")[:QUERIES]
        judged = len(self.rules.tagged) * n_keys
        note = (
            f"{len(order)} queries, not the protocol's {QUERIES}: the test split ({self.n} images) "
            f"has only {len(valid)} valid (image, condition) pairs"
            if len(order) < QUERIES
            else f"the protocol's {QUERIES} queries, drawn among the {len(valid)} valid pairs of "
            f"all {judged} (image, condition) pairs"
        )
        return self.table([valid[i] for i in order], draws, skipped, note)

    def table(self, accepted, draws: int, skipped: dict[str, int], note=None) -> QueryDraw:
        """The query table of the accepted (row, class-tuple key) pairs, in their order."""
        test, m = self.test, len(self.sizes)
        chosen = np.array([c for c, _ in accepted], dtype=np.int64)
        cond_ids = np.array(np.unravel_index([k for _, k in accepted], self.sizes)).T.reshape(-1, m)
        out = pd.DataFrame(
            {"query_id": np.arange(len(accepted)), "image": test["image"].to_numpy()[chosen]}
        )
        for j, a in enumerate(self.conditions):
            out[a] = np.asarray(self.labels[a], dtype=object)[cond_ids[:, j]]
        out["tags"] = test["tags"].to_numpy()[chosen]
        return QueryDraw(out, chosen, draws, skipped, note)


class _Rules:
    """SPEC §3 rules 3 and 5 for one candidate row and one condition (a class-tuple key)."""

    def __init__(self, key: np.ndarray, n_keys: int, tag_cells: pd.Series):
        self.tags, _ = tag_matrix(tag_cells.tolist())  # the cells as they are: no set per row
        self.counts = self.tags.getnnz(1).astype(np.float64)
        self.tagged = self.counts > 0
        self.order = np.argsort(key, kind="stable")
        self.bounds = np.searchsorted(key[self.order], np.arange(n_keys + 1))
        self.onehot = np.zeros(self.tags.shape[1], dtype=np.float32)
        self.cache: dict[int, tuple[np.ndarray, sparse.csr_matrix, np.ndarray]] = {}

    def targets(self, k: int) -> tuple[np.ndarray, sparse.csr_matrix, np.ndarray]:
        """Rows, tag matrix and tag counts of the tagged images carrying class tuple `k`
        (untagged images are not in the retrieval database, so they are no targets)."""
        if k not in self.cache:
            rows = self.order[self.bounds[k] : self.bounds[k + 1]]
            rows = rows[self.tagged[rows]]
            self.cache[k] = (rows, self.tags[rows], self.counts[rows])
        return self.cache[k]

    def valid_candidates(self, k: int) -> np.ndarray:
        """Rows of every candidate that condition `k` accepts (reject(c, k) is None), in order."""
        if len(self.targets(k)[0]) < QUERY_MIN_TARGETS:  # reject() would say few_targets to all
            return np.zeros(0, dtype=np.int64)
        rows = [c for c in np.flatnonzero(self.tagged).tolist() if self.reject(c, k) is None]
        return np.array(rows, dtype=np.int64)

    def reject(self, c: int, k: int) -> str | None:
        """Why candidate `c` with condition `k` is skipped, or None when it is a valid query."""
        if not self.tagged[c]:
            return "no_tags"
        rows, sub, counts = self.targets(k)
        others = rows != c
        if int(others.sum()) < QUERY_MIN_TARGETS:
            return "few_targets"
        own = self.tags.indices[self.tags.indptr[c] : self.tags.indptr[c + 1]]
        self.onehot[own] = 1.0
        inter = sub @ self.onehot  # |tags(c) ∩ tags(t)| for every target t
        self.onehot[own] = 0.0
        union = counts + self.counts[c] - inter
        if not np.any((inter < QUERY_MAX_JACCARD * union) & others):  # Jaccard < 0.1, exactly
            return "no_dissimilar_target"
        return None


def read_queries(data_root: str | Path, task: str) -> pd.DataFrame:
    """The query file of `task` (query_id int, every other column str), checked against the task:
    its columns, integer ids, and no query image of the train split (class names: by the reader)."""
    spec = get_task(task, data_root)
    path = queries_path(data_root, spec.dataset, task)
    a2 = hint("A2", "--task", task)
    df = read_table(path, ["query_id", "image", *spec.conditions, "tags"], a2)
    ids = pd.to_numeric(df["query_id"], errors="coerce")
    if ids.isna().any() or (ids != ids.round()).any() or (ids < 0).any() or (ids >= 2**53).any():
        raise SuiteError(f"{path} has a query_id that is not an integer ≥ 0; re-run {a2}")
    if ids.duplicated().any():  # E2 --query-id and the retrievals name queries by their id
        raise SuiteError(
            f"{path} has query_id {int(ids[ids.duplicated()].iloc[0])} twice; re-run {a2}"
        )
    df["query_id"] = ids.astype(np.int64)
    train = read_split(data_root, spec.dataset, "train")
    test = read_split(data_root, spec.dataset, "test")
    # membership against the few query images (isin builds its table from its argument)
    asked = df["image"].unique()
    in_train = train["image"][train["image"].isin(asked)]
    in_test = test["image"][test["image"].isin(asked)]
    stray = df["image"].isin(in_train) & ~df["image"].isin(in_test)
    if stray.any():  # queries come from the test split (SPEC §3); A1 was re-run with another split
        raise SuiteError(
            f"{path} has {int(stray.sum())} query image(s) of the train split (e.g. "
            f"{df.loc[stray, 'image'].iloc[0]}); re-run {a2}"
        )
    return df


def load_test_split(data_root: str | Path, task: str) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """The test split and label vocabularies of the task's dataset (A1 must have run)."""
    spec = get_task(task, data_root)
    labels = read_labels(data_root, spec.dataset)
    return read_split(data_root, spec.dataset, "test"), labels
