"""Cosine top-k retrieval: hand-checked rankings, exclusion, chunking, bad input."""

from __future__ import annotations

import pytest
import torch

from src.errors import SuiteError
from src.method.retrieval import cosine_topk

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


def test_chunked_equals_unchunked():
    g = torch.Generator().manual_seed(0)
    q, db = torch.randn(37, 8, generator=g), torch.randn(200, 8, generator=g)
    ex = torch.randint(-1, 200, (37,), generator=g)
    s1, i1 = cosine_topk(q, db, k=10, exclude=ex)
    s2, i2 = cosine_topk(q, db, k=10, exclude=ex, chunk_size=5)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(s1, s2)
    # and it agrees with the plain full computation
    full = torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(db, dim=1).T
    full[torch.arange(37)[ex >= 0], ex[ex >= 0]] = -2
    assert torch.equal(i1, full.topk(10, dim=1).indices)
    assert not (i1 == ex[:, None]).any()


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
