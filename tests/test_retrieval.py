"""Cosine top-k retrieval: hand-checked rankings, exclusion, tiles and the bfloat16 screen against
the whole score matrix, the BLAS property the screen rests on, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from src.errors import SuiteError
from src.method.retrieval import MARGIN, MIN_ROWS, Boost, cosine_topk, screens, tiles

# Database of five 2-D vectors at known angles; lengths differ to show only direction counts.
DB = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0], [1.0, 1.0], [5.0, 0.5]])


def test_ranks_by_cosine_not_by_length():
    q = torch.tensor([[2.0, 0.0], [0.0, 0.1]])
    scores, idx = cosine_topk(q, DB, k=3)
    # query 0 along +x: rows 0 (cos 1), 4 (cos 0.995), 3 (cos 0.707)
    assert idx.tolist() == [[0, 4, 3], [1, 3, 4]]
    expected = torch.tensor([[1.0, 5 / 25.25**0.5, 2**-0.5], [1.0, 2**-0.5, 0.5 / 25.25**0.5]])
    torch.testing.assert_close(scores, expected)


def test_exclude_drops_one_row_per_query():
    q = torch.tensor([[2.0, 0.0], [0.0, 0.1], [1.0, 0.0]])
    _, idx = cosine_topk(q, DB, k=2, exclude=torch.tensor([0, -1, 4]))
    assert idx.tolist() == [[4, 3], [1, 3], [0, 3]]


def clustered(n_q: int, n_db: int, dim: int, seed: int = 0):
    """Queries and a database in tight clusters with exact duplicate rows: many near-ties, the
    hard case for a screen that skips rows."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, dim, generator=g)
    db = centres[torch.randint(5, (n_db,), generator=g)] + 0.05 * torch.randn(
        n_db, dim, generator=g
    )
    db[1::7] = db[0::7][: len(db[1::7])]  # duplicates: equal scores
    q = centres[torch.randint(5, (n_q,), generator=g)] + 0.05 * torch.randn(n_q, dim, generator=g)
    ex = torch.randint(-1, n_db, (n_q,), generator=g)
    return q, db, ex


def score_matrix(q, db, ex=None, boost=None):
    """The whole float32 score matrix at once."""
    s = F.normalize(q, dim=1) @ F.normalize(db, dim=1).T
    if boost is not None:
        s = s + boost.amount * (boost.db_key[None, :] == boost.query_key[:, None])
    if ex is not None:
        s[torch.arange(len(q))[ex >= 0], ex[ex >= 0]] = float("-inf")
    return s


def same_up_to_ties(got, matrix, k=10):
    """The top-k of the whole matrix, scores bit for bit; rows differ only where two rows have
    exactly equal scores (duplicates: either may come first, or be the k-th)."""
    want_s, want_i = matrix.topk(k, dim=1)
    assert torch.equal(got[0], want_s)
    rows = torch.arange(len(matrix))[:, None]
    assert torch.equal(matrix[rows, got[1]], want_s)  # each returned row has that very score
    assert all(len(set(r)) == k for r in got[1].tolist())  # no row twice


@pytest.mark.parametrize("screen", [True, False])
@pytest.mark.parametrize("tile_rows, query_block", [(8192, 256), (48, 16), (100, 32)])
def test_tiles_and_screen_give_the_whole_matrix_answer(screen, tile_rows, query_block):
    q, db, ex = clustered(70, 1000, 32)
    got = cosine_topk(
        q, db, k=10, exclude=ex, screen=screen, tile_rows=tile_rows, query_block=query_block
    )
    same_up_to_ties(got, score_matrix(q, db, ex))
    assert not (got[1] == ex[:, None]).any()


def test_the_screen_scores_few_rows_in_float32(monkeypatch):
    g = torch.Generator().manual_seed(5)
    q, db = torch.randn(64, 48, generator=g), torch.randn(6000, 48, generator=g)
    products = []  # elements of the float32 re-scoring products
    bmm = torch.bmm
    monkeypatch.setattr(
        torch,
        "bmm",
        lambda a, b: products.append(a.shape[0] * a.shape[1] * b.shape[2]) or bmm(a, b),
    )
    got = cosine_topk(q, db, k=10, tile_rows=512, screen=True)
    same_up_to_ties(got, score_matrix(q, db))
    assert products and sum(products) < 0.2 * 64 * (6000 - 512)


def test_queries_whose_best_scores_are_negative():
    g = torch.Generator().manual_seed(6)
    db = torch.rand(3000, 24, generator=g)  # all in the positive orthant
    q = -torch.rand(40, 24, generator=g)  # every score < 0: bfloat16 bits do not order them
    got = cosine_topk(q, db, k=10, tile_rows=256, screen=True)
    assert (got[0] < 0).all()
    same_up_to_ties(got, score_matrix(q, db))


def test_a_boost_key_with_fewer_rows_than_k():
    q, db, ex = clustered(32, 2000, 16, seed=7)
    key = torch.zeros(2000, dtype=torch.long)
    key[[5, 900, 1500]] = 1  # key 1: three rows only, the rest follow by plain score
    boost = Boost(key, torch.ones(32, dtype=torch.long), 3.0)
    got = cosine_topk(q, db, k=10, exclude=ex, boost=boost, screen=True, tile_rows=256)
    same_up_to_ties(got, score_matrix(q, db, ex, boost))


def test_boost_ranks_matching_rows_first():
    q, db, ex = clustered(40, 600, 16, seed=1)
    g = torch.Generator().manual_seed(2)
    boost = Boost(torch.randint(3, (600,), generator=g), torch.randint(3, (40,), generator=g), 3.0)
    for screen in (True, False):
        got = cosine_topk(q, db, k=10, exclude=ex, boost=boost, screen=screen, tile_rows=64)
        same_up_to_ties(got, score_matrix(q, db, ex, boost))
        assert (boost.db_key[got[1]] == boost.query_key[:, None]).all()


def test_a_query_gets_the_same_bits_alone_or_among_many():
    q, db, _ = clustered(50, 700, 64, seed=3)
    many = cosine_topk(q, db, k=10, tile_rows=128)
    for i in (0, 7, 49):
        one = cosine_topk(q[i : i + 1], db, k=10, tile_rows=128)
        assert torch.equal(one[0][0], many[0][i]) and torch.equal(one[1][0], many[1][i])


@pytest.mark.parametrize("dim", [64, 256])
def test_blas_entries_do_not_depend_on_the_rest_of_the_matrix(dim):
    """What the screen's exactness rests on: with ≥ MIN_ROWS rows and columns, one entry of a
    float32 product is the same bits whatever else is multiplied with it (tiles, gathers, bmm)."""
    g = torch.Generator().manual_seed(dim)
    a, b = torch.randn(300, dim, generator=g), torch.randn(900, dim, generator=g)
    full = a @ b.T
    cols = torch.randperm(900, generator=g)[:40]
    assert torch.equal(a[5 : 5 + MIN_ROWS] @ b[100:600].T, full[5 : 5 + MIN_ROWS, 100:600])
    assert torch.equal(a[:64] @ b[cols].T, full[:64][:, cols])
    batched = torch.bmm(a[:32].view(2, 16, dim), b[cols].view(2, 20, dim).transpose(1, 2))
    assert torch.equal(batched[1], full[16:32][:, cols[20:]])


def test_bfloat16_scores_stay_within_the_margin():
    g = torch.Generator().manual_seed(4)
    worst = torch.cat([torch.ones(1, 256), torch.randn(200, 256, generator=g)])  # equal components
    unit = F.normalize(worst, dim=1)
    exact = unit @ unit.T
    screened = (unit.bfloat16() @ unit.bfloat16().T).float()
    assert (screened - exact).abs().max() <= MARGIN * 0.8


def test_the_last_tile_is_never_short():
    assert tiles(8200, 8192) == [(0, 8200)]
    assert tiles(8300, 8192) == [(0, 8192), (8192, 8300)]
    assert tiles(10, 8192) == [(0, 10)]


def test_the_screen_runs_only_on_a_cpu_in_float32():
    assert not screens(torch.device("cuda"), torch.float32)
    assert not screens(torch.device("cpu"), torch.float64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"k": 6}, "k=6"),
        ({"k": 5, "exclude": torch.tensor([0])}, "k=5"),
        ({"k": 2, "exclude": torch.tensor([0, 1])}, "shape"),
        ({"k": 2, "exclude": torch.tensor([5])}, "database size"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(SuiteError, match=message):
        cosine_topk(torch.tensor([[1.0, 0.0]]), DB, **kwargs)


def test_dimension_mismatch():
    with pytest.raises(SuiteError, match="same E"):
        cosine_topk(torch.ones(2, 3), DB)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_inputs_device():
    g = torch.Generator().manual_seed(1)
    q, db = torch.randn(50, 16, generator=g), torch.randn(300, 16, generator=g)
    s, i = cosine_topk(q.cuda(), db.cuda(), k=10)
    assert i.is_cuda
    assert torch.equal(i.cpu(), cosine_topk(q, db, k=10)[1])
