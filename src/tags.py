"""Tags: how an image's tag set is stored in one CSV cell, and tag sets as sparse binary matrices
(rows × vocabulary) so that mTS@10's Jaccard similarities are sparse products, not Python sets.

A cell is the tags joined with '|'; an empty cell means no tags; a trailing '|' marks an empty tag
(only the authors' WikiArt cleaning and their query tags leave one).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

TAG_SEP = "|"


def join_tags(tags: Iterable, keep_empty: bool = False) -> str:
    """Tags as one CSV cell: unique, order kept, joined with '|'.

    Empty tags are dropped, unless `keep_empty` (the authors' WikiArt cleaning leaves one): it is
    then written as a trailing '|' ('a|b|' = {a, b, ''}; '|' = {''}), so an empty cell still
    means no tags at all.
    """
    seen: dict[str, None] = {}
    empty = False
    for t in tags:
        t = str(t).strip()
        if not t:
            empty = empty or keep_empty
        elif t not in seen:
            seen[t] = None
    return TAG_SEP.join(seen) + (TAG_SEP if empty else "")


def split_tags(cell) -> frozenset[str]:
    """The set of tags stored in one CSV cell (empty cell → empty set; a trailing '|' → '')."""
    if not isinstance(cell, str) or not cell:
        return frozenset()
    tags = {t for t in cell.split(TAG_SEP) if t}
    if cell.endswith(TAG_SEP):  # join_tags(..., keep_empty=True) kept an empty tag
        tags.add("")
    return frozenset(tags)


def _cells(items: Sequence | pa.Array | pa.ChunkedArray) -> pd.Series | pa.Array:
    """CSV cells from a list of cells, tag sets or None (a set becomes its cell, empty tag kept);
    cells already in an Arrow string array are kept there (no Python object per cell)."""
    if isinstance(items, pa.ChunkedArray):
        items = items.combine_chunks()
    if isinstance(items, pa.Array) and not items.null_count:
        if pa.types.is_string(items.type) or pa.types.is_large_string(items.type):
            return items
    s = pd.Series(list(items), dtype=object)
    other = ~s.map(type).eq(str).to_numpy(dtype=bool)
    if other.any():
        s[other] = ["" if x is None else join_tags(x, keep_empty=True) for x in s[other]]
    return s


def _pairs(cells: pd.Series | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, tag code) of every tag of every cell by split_tags' rule (a tag may repeat within a
    row), and the tags the codes stand for. Split and encoded in Arrow: no Python object per tag."""
    if not isinstance(cells, pa.Array):
        cells = pa.array(cells.to_numpy(dtype=object), type=pa.string())
    arr = cells
    lists = pc.split_pattern(arr, TAG_SEP)  # '' → ['']; 'a|b|' → [a, b, '']
    rows = pc.cast(pc.list_parent_indices(lists), pa.int32()).to_numpy()  # half of int64's memory
    encoded = pc.list_flatten(lists).dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    trailing = pc.ends_with(arr, TAG_SEP).to_numpy(zero_copy_only=False).astype(bool)
    empty = np.flatnonzero(names == "")  # an inner '' is no tag; a trailing one is
    keep = (codes != (empty[0] if len(empty) else -1)) | trailing[rows]
    if keep.all():  # the usual case: no copy of millions of pairs
        return rows, codes, names
    return rows[keep], codes[keep], names


def tag_matrix(
    items: Sequence | pa.Array | pa.ChunkedArray, vocab: pd.Index | None = None
) -> tuple[sp.csr_matrix, pd.Index]:
    """Tag sets as a binary csr matrix (rows × vocabulary) and the vocabulary it used.

    items: CSV cells (a list, or an Arrow string array), tag sets or None. With `vocab` given,
    its columns come first and tags it lacks get new columns after them (the returned vocabulary is `vocab` extended), so a matrix
    made with the database's vocabulary can be compared with the database's (see tag_jaccard).
    """
    cells = _cells(items)
    rows, codes, names = _pairs(cells)
    vocab = pd.Index([], dtype=object) if vocab is None else vocab
    col_of = vocab.get_indexer(names) if len(vocab) else np.full(len(names), -1, dtype=np.int64)
    col_of = col_of.astype(np.int32)  # a column per tag code: the csr matrix's index type
    met = pd.unique(codes)  # the tags present, in first-seen order
    new = met[col_of[met] < 0]
    if len(new):  # the tags the vocabulary lacks get the next columns
        col_of[new] = len(vocab) + np.arange(len(new))
        vocab = vocab.append(pd.Index(names[new], dtype=object))
    indptr = np.zeros(len(cells) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(cells)), out=indptr[1:])
    data = np.ones(len(codes), dtype=np.float32)
    out = sp.csr_matrix((data, col_of[codes], indptr), shape=(len(cells), len(vocab)))
    out.sum_duplicates()  # sorts each row's columns; a tag twice in a cell counts once
    out.data[:] = 1.0
    return out, vocab


def tag_matrices(*tag_lists: Sequence) -> tuple[sp.csr_matrix, ...]:
    """Binary sparse matrices (rows × tags) over one shared vocabulary, one per list of tag sets
    (each item a '|'-joined CSV cell, a set of tags, or None)."""
    sizes = [len(tl) for tl in tag_lists]
    whole, _ = tag_matrix([x for tl in tag_lists for x in tl])
    bounds = np.cumsum([0, *sizes])
    return tuple(whole[bounds[i] : bounds[i + 1]] for i in range(len(sizes)))


def widen(m: sp.csr_matrix, width: int) -> sp.csr_matrix:
    """`m` with empty columns appended up to `width` (no copy of its data)."""
    if m.shape[1] >= width:
        return m
    return sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], width))
