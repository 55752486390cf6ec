"""Every metric of SPEC §7 on examples small enough to compute by hand, plus brute-force checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.errors import SuiteError
from src.method.metrics import (
    EMPTY_TOKEN,
    authors_query_tags,
    average_precision_at_k,
    condition_hits,
    context_per_query,
    context_preservation,
    count_relevant,
    map_at_k,
    mts_at_k,
    paper_map_at_k,
    precision_at_k,
    retrieved_similarity,
    tag_jaccard,
)
from src.tags import tag_matrices

# A database of six rows with two label attributes.
DB = {"style": torch.tensor([0, 1, 0, 2, 0, 1]), "genre": torch.tensor([0, 0, 1, 1, 0, 1])}
# Two queries, top-3 each (k = 3 keeps the arithmetic short; nothing depends on k = 10).
TOP = torch.tensor([[0, 1, 2], [3, 5, 1]])
COND = {"style": torch.tensor([0, 1])}


def test_hits_and_paper_map():
    hits = condition_hits(TOP, DB, COND)
    assert hits.tolist() == [[True, False, True], [False, True, True]]
    assert precision_at_k(hits).tolist() == pytest.approx([2 / 3, 2 / 3])
    assert paper_map_at_k(hits) == pytest.approx(2 / 3)


def test_true_map_normalised_by_relevant_count():
    hits = condition_hits(TOP, DB, COND)
    n_rel = count_relevant(DB, COND)
    assert n_rel.tolist() == [3, 2]  # style 0: rows 0, 2, 4; style 1: rows 1, 5
    # query 0: hits at ranks 1, 3 → (1/1 + 2/3) / min(3, 3); query 1: ranks 2, 3 → (1/2 + 2/3) / 2
    ap = average_precision_at_k(hits, n_rel)
    assert ap.tolist() == pytest.approx([(1 + 2 / 3) / 3, (1 / 2 + 2 / 3) / 2])
    assert map_at_k(hits, n_rel) == pytest.approx(((1 + 2 / 3) / 3 + (1 / 2 + 2 / 3) / 2) / 2)
    # precision@k and AP@k differ: the paper's "mAP@10" is the former
    assert paper_map_at_k(hits) != pytest.approx(map_at_k(hits, n_rel))


def test_two_conditions_need_both_labels():
    cond = {"style": torch.tensor([0]), "genre": torch.tensor([1])}
    top = torch.tensor([[2, 0, 4]])
    hits = condition_hits(top, DB, cond)
    assert hits.tolist() == [[True, False, False]]
    n_rel = count_relevant(DB, cond)
    assert n_rel.tolist() == [1]  # only row 2 is (style 0, genre 1)
    assert average_precision_at_k(hits, n_rel).tolist() == pytest.approx([1.0])
    assert precision_at_k(hits).tolist() == pytest.approx([1 / 3])


def test_count_relevant_leaves_out_the_excluded_row():
    # query 0 excludes row 2 (relevant), query 1 excludes row 0 (not style 1)
    assert count_relevant(DB, COND, exclude=torch.tensor([2, 0])).tolist() == [2, 2]
    assert count_relevant(DB, COND, exclude=torch.tensor([-1, 5])).tolist() == [3, 1]


def test_count_relevant_can_leave_out_row_zero():
    # row 0 (style 0) is relevant to query 0: excluding it leaves rows 2 and 4; -1 excludes nothing
    assert count_relevant(DB, COND, exclude=torch.tensor([0, -1])).tolist() == [2, 2]


def test_count_relevant_tells_apart_combinations_beyond_float32():
    # Four attributes of 100 classes: the combined key reaches 10^8, where float32 steps by 8, so
    # a key held in float32 would make (99, 99, 99, 98) and (99, 99, 99, 99) one combination.
    db = {a: torch.full((3,), 99) for a in "abcd"}
    db["d"] = torch.tensor([98, 99, 0])
    cond = {a: torch.tensor([99, 99]) for a in "abcd"}
    cond["d"] = torch.tensor([99, 98])
    assert count_relevant(db, cond).tolist() == [1, 1]


def test_no_relevant_item_gives_zero_ap():
    hits = torch.zeros(2, 3, dtype=torch.bool)
    assert average_precision_at_k(hits, torch.tensor([0, 4])).tolist() == [0.0, 0.0]
    # nothing relevant once the query's own row is left out, though the ranking found that row
    assert average_precision_at_k(torch.tensor([[True, False, False]]), [0]).tolist() == [0.0]


def test_against_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    n, q, k = 300, 40, 10
    db = {
        "a": torch.from_numpy(rng.integers(0, 4, n)),
        "b": torch.from_numpy(rng.integers(0, 3, n)),
    }
    cond = {
        "a": torch.from_numpy(rng.integers(0, 4, q)),
        "b": torch.from_numpy(rng.integers(0, 3, q)),
    }
    top = torch.from_numpy(np.stack([rng.choice(n, k, replace=False) for _ in range(q)]))
    exclude = torch.from_numpy(rng.integers(-1, n, q))
    hits = condition_hits(top, db, cond)
    n_rel = count_relevant(db, cond, exclude=exclude)
    ap = average_precision_at_k(hits, n_rel)
    for i in range(q):
        rel = [
            j
            for j in range(n)
            if j != int(exclude[i]) and db["a"][j] == cond["a"][i] and db["b"][j] == cond["b"][i]
        ]
        assert int(n_rel[i]) == len(rel)
        found, total = 0, 0.0
        for r, j in enumerate(top[i].tolist(), start=1):
            if j in rel:
                found += 1
                total += found / r
        assert float(ap[i]) == pytest.approx(total / min(k, len(rel)) if rel else 0.0)


def test_context_preservation_counts_only_unconditioned_attributes():
    query_labels = {"style": torch.tensor([0, 1]), "genre": torch.tensor([1, 1])}
    out = context_preservation(TOP, DB, query_labels, conditioned=["style"])
    # genre of query 0's results [0, 0, 1] vs 1 → 1/3; query 1's [1, 1, 0] vs 1 → 2/3
    assert out == {"genre": pytest.approx(0.5)}
    both = context_preservation(TOP, DB, query_labels, conditioned=[])
    # style of query 0's results [0, 1, 0] vs 0 → 2/3; query 1's [2, 1, 1] vs 1 → 2/3
    assert both["style"] == pytest.approx(2 / 3)


def test_context_per_query_gives_each_querys_fraction():
    query_labels = {"style": torch.tensor([0, 1]), "genre": torch.tensor([1, 1])}
    out = context_per_query(TOP, DB, query_labels, conditioned=["style"])
    assert list(out) == ["genre"]
    assert out["genre"].tolist() == pytest.approx([1 / 3, 2 / 3])  # as in the test above


def test_results_come_back_on_the_indices_device():
    # Rankings on an accelerator, labels as numpy arrays or CPU tensors: every per-query result is
    # on the rankings' device. The "meta" device stands in for a GPU: it holds no data, and mixing
    # it with a CPU tensor raises, as mixing a CUDA tensor with one does.
    meta = torch.device("meta")
    top = TOP.to(meta)
    db = {"style": DB["style"].numpy(), "genre": DB["genre"]}
    cond = {"style": np.array([0, 1]), "genre": torch.tensor([0, 1])}
    hits = condition_hits(top, db, cond)
    assert hits.device == meta and hits.shape == (2, 3) and hits.dtype == torch.bool
    ap = average_precision_at_k(hits, np.array([3, 2]))
    assert ap.device == meta and ap.shape == (2,)
    context = context_per_query(top, db, cond, conditioned=["style"])
    assert context["genre"].device == meta and context["genre"].shape == (2,)
    assert retrieved_similarity(top, TOP).device == meta
    # count_relevant follows its first condition's device, whatever the others are on
    on_meta = {"style": torch.tensor([0, 1], device=meta), "genre": np.array([0, 1])}
    counts = count_relevant(db, on_meta, exclude=np.array([0, -1]))
    assert counts.device == meta and counts.shape == (2,)


def test_tag_similarity_is_mean_jaccard():
    db_tags = [{"a", "b"}, "b|c", "", ["a"], {"d"}, {"a", "b", "c", "d"}]
    query_tags = [{"a", "b"}, {"e"}]
    qm, dm = tag_matrices(query_tags, db_tags)
    assert qm.shape[1] == dm.shape[1] == 5  # one vocabulary: a b c d e
    jac = tag_jaccard(qm, dm, TOP)
    # query 0 {a,b} vs {a,b}=1, {b,c}=1/3, {}=0; query 1 {e} vs {a}, {a,b,c,d}, {b,c} = 0
    np.testing.assert_allclose(jac, [[1, 1 / 3, 0], [0, 0, 0]])
    assert mts_at_k(qm, dm, TOP) == pytest.approx((1 + 1 / 3) / 6)
    jac2 = tag_jaccard(qm, dm, torch.tensor([[5, 3, 4], [4, 4, 4]]))
    np.testing.assert_allclose(jac2, [[2 / 4, 1 / 2, 0], [0, 0, 0]])


# Quirk empty-tag-token: query 0 has no attributes (only its class "wren"), query 1 has one.
QUIRK_DB = [{"wren"}, {"wing", "wren"}, "beak|wing|gull"]  # as sets and as a CSV cell
QUIRK_QUERIES = ["wren", {"wing", "wren"}]
QUIRK_TOP = torch.tensor([[0, 1, 2], [0, 1, 2]])


def test_tag_jaccard_without_the_empty_token():
    qm, dm = tag_matrices(QUIRK_QUERIES, QUIRK_DB)
    jac = tag_jaccard(qm, dm, QUIRK_TOP)
    # {wren} vs {wren}, {wing, wren}, {beak, wing, gull}; {wing, wren} vs the same three
    np.testing.assert_allclose(jac, [[1, 1 / 2, 0], [1 / 2, 1, 1 / 4]])
    assert mts_at_k(qm, dm, QUIRK_TOP) == pytest.approx(
        ((1 + 1 / 2) / 3 + (1 / 2 + 1 + 1 / 4) / 3) / 2
    )


def test_authors_empty_tag_token_lowers_the_jaccard_of_attributeless_queries():
    tags = authors_query_tags(QUIRK_QUERIES, ["wren", "wren"])
    assert tags == [frozenset({"wren", EMPTY_TOKEN}), frozenset({"wing", "wren"})]
    qm, dm = tag_matrices(tags, QUIRK_DB)
    jac = tag_jaccard(qm, dm, QUIRK_TOP)
    # {"", wren} vs {wren}: 1/2; vs {wing, wren}: 1/3; vs {beak, wing, gull}: 0 / 5. Query 1 as before.
    np.testing.assert_allclose(jac, [[1 / 2, 1 / 3, 0], [1 / 2, 1, 1 / 4]])
    assert mts_at_k(qm, dm, QUIRK_TOP) == pytest.approx(
        ((1 / 2 + 1 / 3) / 3 + (1 / 2 + 1 + 1 / 4) / 3) / 2
    )


def test_authors_query_tags_checks_lengths_and_takes_class_sets():
    assert authors_query_tags(["a|b"], [("a", "b")]) == [frozenset({"a", "b", EMPTY_TOKEN})]
    with pytest.raises(SuiteError, match="2 query tag sets but 1 classes"):
        authors_query_tags(["a", "b"], ["a"])


def test_empty_tag_sets_score_zero():
    qm, dm = tag_matrices([set()], [set(), {"x"}])
    np.testing.assert_allclose(tag_jaccard(qm, dm, torch.tensor([[0, 1]])), [[0.0, 0.0]])


def test_retrieved_similarity_is_jaccard_of_index_sets():
    a = torch.tensor([[0, 1, 2], [3, 5, 1], [7, 8, 9]])
    b = torch.tensor([[2, 0, 5], [4, 6, 7], [9, 8, 7]])
    assert retrieved_similarity(a, b).tolist() == pytest.approx([2 / 4, 0.0, 1.0])
    # top-k lists of different lengths: {0, 1} vs {2, 0, 5} share 1 of 4 indices, {7, 8} vs {9, 8, 7} 2 of 3
    assert retrieved_similarity(a[:, :2], b).tolist() == pytest.approx([1 / 4, 0.0, 2 / 3])


def test_retrieved_similarity_needs_the_same_queries():
    a = torch.tensor([[0, 1, 2], [3, 5, 1]])
    b = torch.tensor([[2, 0, 5], [4, 6, 7], [9, 8, 7]])
    message = "^retrieved_similarity: both rankings need the same number of queries$"
    with pytest.raises(SuiteError, match=message):
        retrieved_similarity(a, b)
    with pytest.raises(SuiteError, match=message):
        retrieved_similarity(b, a)


def test_bad_inputs():
    with pytest.raises(SuiteError, match="no labels for 'mood'"):
        condition_hits(TOP, DB, {"mood": torch.tensor([0, 0])})
    with pytest.raises(SuiteError, match="^condition_hits: no condition attribute given$"):
        condition_hits(TOP, DB, {})
    with pytest.raises(SuiteError, match="^count_relevant: no condition attribute given$"):
        count_relevant(DB, {})
    qm, dm = tag_matrices([{"a", "b", "c"}], [{"a"}] * 6)  # 1 query, 3 tags
    with pytest.raises(SuiteError, match="^tag_jaccard: 1 query tag sets for 2 queries$"):
        tag_jaccard(qm, dm, TOP)


def test_count_relevant_matches_a_brute_force_count_with_unseen_classes_and_exclusions():
    """RelevantCounter's bincount table against counting row by row: a class no row carries
    (beyond the database's largest id, which would alias another combination) counts 0, and an
    excluded row is subtracted only when it carries the condition."""
    rng = np.random.default_rng(3)
    db = {
        "a": torch.from_numpy(rng.integers(0, 4, 300)),
        "b": torch.from_numpy(rng.integers(0, 3, 300)),
    }
    cond = {"a": torch.tensor([0, 3, 4, 1, 2, 7]), "b": torch.tensor([0, 2, 0, 3, 1, 1])}
    exclude = torch.tensor(
        [5, -1, 9, 12, int(np.flatnonzero((db["a"] == 2) & (db["b"] == 1))[0]), 0]
    )
    got = count_relevant(db, cond, exclude).tolist()
    want = []
    for i in range(6):
        n = sum(
            int(db["a"][r]) == int(cond["a"][i]) and int(db["b"][r]) == int(cond["b"][i])
            for r in range(300)
            if r != int(exclude[i])
        )
        want.append(n)
    assert got == want and want[2] == 0 and want[3] == 0
