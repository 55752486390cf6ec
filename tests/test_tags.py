"""Tag cells → sparse tag matrices: the same sets as split_tags cell by cell, first-seen vocabulary
order, a given vocabulary extended, tag sets and None accepted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.tags import split_tags, tag_matrices, tag_matrix

CELLS = ["a|b", "", "b|a|b", "|", "c||d|", "d", "a|", "||", "e|e|"]


def as_sets(m, vocab) -> list[set[str]]:
    names = np.asarray(vocab, dtype=object)
    return [set(names[m.indices[m.indptr[i] : m.indptr[i + 1]]]) for i in range(m.shape[0])]


def test_rows_hold_split_tags_sets_once_each():
    m, vocab = tag_matrix(CELLS)
    assert as_sets(m, vocab) == [set(split_tags(c)) for c in CELLS]
    assert (m.data == 1).all() and m.has_sorted_indices


def test_vocabulary_in_first_seen_order_and_extended_after_a_given_one():
    _, vocab = tag_matrix(CELLS)
    assert list(vocab) == ["a", "b", "", "c", "d", "e"]  # '' first met in '|' (row 3)
    m, ext = tag_matrix(["x|a", "y|x"], pd.Index(["a", "q"], dtype=object))
    assert list(ext) == ["a", "q", "x", "y"]
    assert as_sets(m, ext) == [{"x", "a"}, {"y", "x"}]


def test_an_inner_empty_tag_alone_adds_no_column():
    _, vocab = tag_matrix(["a||b"])
    assert list(vocab) == ["a", "b"]


def test_sets_and_none_as_cells():
    qm, dm = tag_matrices([{"a", ""}, None], ["a|b", "b"])
    assert qm.shape[1] == dm.shape[1] == 3
    assert qm.getnnz(1).tolist() == [2, 0] and dm.getnnz(1).tolist() == [2, 1]


def test_many_random_cells_match_the_plain_reading():
    rng = np.random.default_rng(0)
    words = np.array(["w1", "w2", "w3", "", "w4"], dtype=object)
    cells = ["|".join(rng.choice(words, size=rng.integers(0, 6))) for _ in range(500)]
    m, vocab = tag_matrix(cells)
    assert as_sets(m, vocab) == [set(split_tags(c)) for c in cells]
