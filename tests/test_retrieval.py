"""Cosine top-k retrieval: hand-checked rankings, exclusion, tiles and the bfloat16 screen against
the whole score matrix, the screen's error bound on its constructed worst case, where the screen
runs, feeding the database tile by tile, a prepared database, the properties the exactness rests
on, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from src.errors import SuiteError
from src.method import retrieval
from src.method.retrieval import (
    MIN_ROWS,
    SCREEN_ENV,
    Boost,
    RunningTopK,
    cosine_topk,
    prepare,
    screen_rows,
    screens,
    tiles,
)

# Database of five 2-D vectors at known angles; lengths differ to show only direction counts.
DB = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0], [1.0, 1.0], [5.0, 0.5]])
CPU = torch.device("cpu")


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
@pytest.mark.parametrize("tile_rows, query_block", [(16384, 1024), (48, 16), (100, 32)])
def test_tiles_and_screen_give_the_whole_matrix_answer(screen, tile_rows, query_block):
    q, db, ex = clustered(70, 1000, 32)
    got = cosine_topk(
        q, db, k=10, exclude=ex, screen=screen, tile_rows=tile_rows, query_block=query_block
    )
    same_up_to_ties(got, score_matrix(q, db, ex))
    assert not (got[1] == ex[:, None]).any()


@pytest.mark.parametrize("screen", [True, False])
def test_parts_of_a_tile_give_the_whole_matrix_answer(monkeypatch, screen):
    """Tiles scored in parts (float32 rows, screen rows, chunks of a row's scores) smaller than
    the tile, groups of rows cut short at a tile's end (1,000 = 3·256 + 232 rows), a part's
    short rest joined to the part before it (a BLAS call of one row gives other bits)."""
    monkeypatch.setattr(retrieval, "DENSE_ROWS", 85)  # 256 = 85 + 85 + 86: no part of 1 row
    monkeypatch.setattr(retrieval, "SCREEN_ROWS", 80)
    monkeypatch.setattr(retrieval, "CHUNK", 17)  # 5 chunks of an 85-row part
    q, db, ex = clustered(40, 1000, 256, seed=9)
    g = torch.Generator().manual_seed(9)
    q = torch.cat([q, torch.randn(40, 256, generator=g)])  # beside the clusters: few rows each
    q = torch.cat([q, db[255::256] + 1e-3 * torch.randn(3, 256, generator=g)])  # a rest's row
    ex = torch.cat([ex, torch.full((43,), -1)])
    got = cosine_topk(q, db, k=10, exclude=ex, screen=screen, tile_rows=256, query_block=48)
    same_up_to_ties(got, score_matrix(q, db, ex))


@pytest.mark.parametrize("screen", [True, False])
def test_k_beyond_a_part_of_the_first_tile(monkeypatch, screen):
    """k = 100 with float32 parts of 85 rows: the first part holds fewer than k rows."""
    monkeypatch.setattr(retrieval, "DENSE_ROWS", 85)
    q, db, ex = clustered(40, 1000, 32, seed=4)
    got = cosine_topk(q, db, k=100, exclude=ex, screen=screen, tile_rows=256)
    same_up_to_ties(got, score_matrix(q, db, ex), k=100)


def test_the_last_rows_of_a_tile_short_of_a_group_are_screened(monkeypatch):
    """A tile of 232 rows: its last 8 rows are a group of their own (groups of MIN_ROWS)."""
    monkeypatch.setattr(retrieval, "SCREEN_ROWS", 80)
    g = torch.Generator().manual_seed(14)
    db = torch.randn(1000, 24, generator=g)
    q = db[:16] + 0.01 * torch.randn(16, 24, generator=g)  # their best in the first tile
    db[995] = q[5]  # better still, in the last group
    got = cosine_topk(q, db, k=1, tile_rows=256, screen=True)
    assert int(got[1][5, 0]) == 995
    same_up_to_ties(got, score_matrix(q, db), k=1)


@pytest.mark.parametrize("boosted", [False, True])
def test_the_screen_scores_few_rows_in_float32(boosted):
    """After the first tile, a fraction of the scores in float32 (with a boost of 27 keys too:
    the boost folded into the screen's product)."""
    g = torch.Generator().manual_seed(5)
    q, db = torch.randn(64, 48, generator=g), torch.randn(6000, 48, generator=g)
    boost = None
    if boosted:
        boost = Boost(
            torch.randint(27, (6000,), generator=g), torch.randint(27, (64,), generator=g), 3.0
        )
    top = RunningTopK(q, 10, boost=boost, screen=True)
    for a, b in tiles(len(db), 2000):
        top.add(db[a:b])
    same_up_to_ties(top.result(), score_matrix(q, db, boost=boost))
    assert 0 < top.scored < 0.2 * 64 * (6000 - 2000)


def rounds_down(dim: int = 256) -> torch.Tensor:
    """The screen's worst case: a float32 unit row whose every component rounds down to bfloat16
    by almost 2⁻⁸ of itself (253 components just below 2⁻⁴·(1 + 2⁻⁸), the rounding midpoint; one
    more makes the norm 1; the rest 0)."""
    a = 2.0**-4 * (1 + 2.0**-8 - 2.0**-20)
    v = torch.zeros(dim, dtype=torch.float64)
    v[:253] = a
    v[253] = (1 - 253 * a * a) ** 0.5
    return F.normalize(v.float()[None], dim=1)[0]


def test_the_worst_case_rounds_down_by_2_to_the_minus_7():
    v = rounds_down()
    nz = v != 0
    assert (v.bfloat16().float()[nz] < v[nz]).all()
    assert float((v.bfloat16().float() @ v.bfloat16().float()).bfloat16()) == 0.9921875
    assert abs(float(v @ v) - 1) < 1e-6


def screen_value(q, d, amount: float = 0.0, folded: bool = False, precise: bool = False):
    """The screen's bfloat16 product of queries q (unit, ≥ MIN_ROWS) against rows d (unit), with
    each query's threshold at its float32 score against the row of the same index: a row exactly
    at the threshold, which the screen must let through (product ≥ 0). amount: a boost of that
    row (the threshold that much higher), folded into the product as a key column or not.
    precise: the queries' rounding corrected by a second product."""
    exact = (q @ d.T).diagonal()
    lift = torch.full((len(q),), amount)
    keys = torch.full((len(q), 16), 0.0).bfloat16()
    keys[:, 3] = amount  # every query's key and every row's: 3
    scr = retrieval._Screen(q, lift, keys if folded else None)
    scr.precise = precise
    scr.thresholds(exact + amount)
    rows = screen_rows(d)
    if folded:
        rows = torch.cat([rows, torch.zeros(len(d), 16).bfloat16()], 1)
        rows[:, -16 + 3] = 1.0
    out = torch.empty(len(d) * len(q), dtype=torch.bfloat16)
    at, who = scr.needed(rows, out)  # the (row, query) pairs let through
    passed = torch.zeros(len(d), len(q), dtype=torch.bool)
    passed[at, who] = True
    product = out.view(len(d), len(q)).float()
    assert torch.equal(passed, product >= 0)
    return product.diagonal()


def test_the_screen_lets_its_worst_case_through_and_needs_the_whole_bound(monkeypatch):
    v = rounds_down()[None].expand(MIN_ROWS, -1).contiguous()
    assert (screen_value(v, v) >= 0).all()
    assert (screen_value(v, v, precise=True) >= 0).all()
    for folded in (False, True):
        assert (screen_value(v, v, 3.0, folded) >= 0).all()
        assert (screen_value(v, v, 3.1, folded) >= 0).all()  # 3.1: 3.09375 in bfloat16
    # the bound is tight: 90 % of it and the worst case would be screened out (80 % of the
    # rows' half alone, with the queries' rounding corrected: the slack is 5·10⁻⁴ of 4·10⁻³)
    monkeypatch.setattr(retrieval, "ROUNDING", 0.9)
    assert (screen_value(v, v) < 0).all()
    monkeypatch.setattr(retrieval, "ROUNDING", 0.8)
    assert (screen_value(v, v, precise=True) < 0).all()


def test_a_product_of_exactly_zero_is_needed():
    """The screen's rule on its product's bits: ≥ 0 (a row exactly at the threshold) passes,
    < 0 does not, in groups of MIN_ROWS rows and in a short last group."""
    q = torch.zeros(MIN_ROWS, 16)
    q[:, 0] = 1.0
    scr = retrieval._Screen(q, torch.zeros(MIN_ROWS))
    scr.cols[:, 16:] = 0
    scr.cols[:, 16] = -0.5  # −t: every query's threshold 0.5, exactly
    rows = torch.zeros(40, scr.cols.shape[1], dtype=torch.bfloat16)
    rows[:, 0] = 0.25  # product −0.25: not needed
    rows[[3, 17, 38], 0] = 0.5  # product exactly 0, in each group (the last one short)
    rows[:, 16] = 1.0
    at, who = scr.needed(rows, torch.empty(40 * MIN_ROWS, dtype=torch.bfloat16))
    assert sorted(zip(at.tolist(), who.tolist(), strict=True)) == [
        (r, i) for r in (3, 17, 38) for i in range(16)
    ]


@pytest.mark.parametrize("dim", [64, 128, 256])
def test_the_screen_lets_rows_at_the_threshold_through(dim):
    """Random rows, rows with equal components, negative and boosted thresholds: a row whose
    float32 score equals the query's threshold always passes."""
    g = torch.Generator().manual_seed(dim)
    x = torch.randn(4 * 64, dim, generator=g)
    x[:16] = 1.0  # equal components
    x[16:32] = x[16:32].abs() ** 3  # a few large components
    unit = F.normalize(x, dim=1)
    for d in (unit, unit.roll(1, 0), -unit.roll(7, 0)):  # self, other, negative scores
        for amount, folded in ((0.0, False), (3.0, False), (3.1, True), (1000.0, True)):
            for precise in (False, True):
                assert (screen_value(unit, d, amount, folded, precise) >= 0).all()


@pytest.mark.parametrize("dim", [64, 256])
def test_the_screen_lets_rows_through_that_bfloat16_holds_exactly(dim):
    """Rows exact in bfloat16 (nothing to round: only the float32 sums' rounding and the split
    of the threshold remain, which the slack covers), of widely different magnitudes."""
    g = torch.Generator().manual_seed(dim)
    x = torch.randn(2048, dim, generator=g) * 2.0 ** torch.randint(-14, 1, (2048, dim), generator=g)
    x = x.bfloat16().float()
    x = x / 2.0 ** x.norm(dim=1, keepdim=True).log2().round()  # near unit, still exact
    assert torch.equal(x.bfloat16().float(), x)
    assert (screen_value(x, x) >= 0).all()


def test_a_row_that_rounds_down_is_found_behind_ten_close_rows():
    """The worst-case row in the second tile, behind ten rows at cos 0.998 in the first: its
    bfloat16 score (0.9921875) is below them, its float32 score (1.0) above."""
    g = torch.Generator().manual_seed(11)
    v = rounds_down()
    other = torch.randn(200, 256, generator=g)
    other -= (other @ v)[:, None] * v  # orthogonal to v
    other = F.normalize(other, dim=1)
    close = 0.998 * v + (1 - 0.998**2) ** 0.5 * other[:10]
    db = torch.cat([close, other[10:64], other[64:70], v[None], other[70:127]])
    assert int((F.normalize(db, dim=1) @ v).argmax()) == 70  # in the second tile of 64 rows
    q = v.expand(MIN_ROWS, -1)  # one sub-block of queries, all needing only that row
    got = cosine_topk(q, db, k=10, tile_rows=64, screen=True)
    assert (got[1][:, 0] == 70).all()
    same_up_to_ties(got, score_matrix(q, db))


@pytest.mark.parametrize("noise, spread", [(0.001, "within"), (0.3, "beyond")])
def test_queries_whose_scores_are_all_negative(noise, spread):
    """Every score near −0.9: within the bound of each other (the screen passes every row), or
    spread well beyond it (the screen decides on negative thresholds)."""
    g = torch.Generator().manual_seed(6)
    base = F.normalize(torch.randn(256, generator=g), dim=0)
    db = base + noise * torch.randn(3000, 256, generator=g) / 16
    u = torch.randn(40, 256, generator=g)
    u = F.normalize(u - (u @ base)[:, None] * base, dim=1)
    q = -0.9 * base + 0.19**0.5 * u
    matrix = score_matrix(q, db)
    assert (matrix < -0.8).all()
    width = float((matrix.amax(1) - matrix.amin(1)).min())
    assert width < 2.0**-8 if spread == "within" else width > 2.0**-5
    got = cosine_topk(q, db, k=10, tile_rows=256, screen=True)
    same_up_to_ties(got, matrix)


def test_queries_whose_best_scores_are_negative():
    g = torch.Generator().manual_seed(6)
    db = torch.rand(3000, 24, generator=g)  # all in the positive orthant
    q = -torch.rand(40, 24, generator=g)  # every score < 0
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


@pytest.mark.parametrize("offset", [0, retrieval.KEYS, -5])  # folded into the product, or not
@pytest.mark.parametrize("amount", [3.0, 3.1])  # 3.1: not a bfloat16 number (3.09375 is)
def test_boosted_rows_pointing_away_are_found_by_the_screen(offset, amount):
    """Matching rows whose plain scores are far below the others' (cos < 0), in tiles after the
    first, and a boost whose amount bfloat16 holds only to 2⁻⁹: found only if the screen
    accounts for the boost (keys as columns of its product, or thresholds lowered by it)."""
    g = torch.Generator().manual_seed(12)
    q = torch.randn(32, 64, generator=g)
    db = torch.randn(3000, 64, generator=g)
    key = torch.randint(3, (3000,), generator=g) + 1
    late = torch.arange(1000, 3000, 97)
    db[late] = -q[torch.arange(len(late)) % 32] + 0.1 * torch.randn(len(late), 64, generator=g)
    key[late] = 0
    boost = Boost(key + offset, torch.cat([torch.zeros(24), torch.ones(8)]).long() + offset, amount)
    got = cosine_topk(q, db, k=10, boost=boost, screen=True, tile_rows=256)
    same_up_to_ties(got, score_matrix(q, db, boost=boost))


def test_a_query_gets_the_same_bits_alone_or_among_many():
    q, db, _ = clustered(50, 700, 64, seed=3)
    for screen in (True, False):
        many = cosine_topk(q, db, k=10, tile_rows=128, screen=screen)
        for i in (0, 7, 49):
            one = cosine_topk(q[i : i + 1], db, k=10, tile_rows=128, screen=screen)
            assert torch.equal(one[0][0], many[0][i]) and torch.equal(one[1][0], many[1][i])


def test_a_database_where_the_screen_pays_only_later(monkeypatch):
    """Every tile better than the last for every query (rows ordered by score), then rows far
    below: the exact answer; the screen skipped for tiles after tiles where it did not pay, and
    back where it pays again."""
    g = torch.Generator().manual_seed(13)
    centre = F.normalize(torch.randn(32, generator=g), dim=0)
    q = centre + 0.01 * torch.randn(16, 32, generator=g)
    db = centre + 0.5 * torch.randn(8192, 32, generator=g)
    db = db[(F.normalize(db, dim=1) @ centre).argsort()]  # increasing score
    db = torch.cat([db, -centre + 0.5 * torch.randn(8192, 32, generator=g)])
    needed = []
    real = retrieval._Screen.needed
    monkeypatch.setattr(retrieval._Screen, "needed", lambda s, *a: needed.append(1) or real(s, *a))
    top = RunningTopK(q, 10, screen=True)
    for start, stop in tiles(len(db), 256):
        top.add(db[start:stop])
        if stop == 8192:
            assert len(needed) < 31 // 3  # of the 31 tiles after the first
            before = len(needed)
    same_up_to_ties(top.result(), score_matrix(q, db))
    assert len(needed) - before >= 32 - retrieval.SKIPS - 1  # of the next 32


def test_near_duplicates_turn_the_precise_screen_on():
    """Dense clusters of near-duplicates (rows within the bfloat16 rounding of each other):
    the screen corrects the queries' rounding to let fewer rows through; the answer is exact."""
    g = torch.Generator().manual_seed(15)
    base = torch.randn(40, 64, generator=g)
    db = base[torch.arange(8000) % 40] + 0.15 * torch.randn(8000, 64, generator=g)
    q = db[torch.randint(8000, (64,), generator=g)]
    top = RunningTopK(q, 10, screen=True)
    for a, b in tiles(len(db), 1024):
        top.add(db[a:b])
    same_up_to_ties(top.result(), score_matrix(q, db))
    assert top.screens[0].precise


def test_the_database_fed_tile_by_tile():
    """`RunningTopK.add` in tiles of any size (its own screen copies or prepared ones) gives what
    cosine_topk gives."""
    q, db, ex = clustered(30, 1500, 32, seed=4)
    want = cosine_topk(q, db, k=10, exclude=ex)
    copy = screen_rows(F.normalize(db, dim=1))
    for screen in (True, False):
        top = RunningTopK(q, 10, ex, screen=screen)
        bounds = [0, 300, 317, 900, 1500]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            top.add(db[a:b], screen=copy[a:b] if a % 2 else None)
        same_up_to_ties(top.result(), score_matrix(q, db, ex))
        assert torch.equal(top.result()[0], want[0])


def test_a_prepared_database_is_the_tensor_with_its_screen_copy():
    q, db, ex = clustered(30, 1500, 32, seed=8)
    prepared = prepare(db)
    assert type(prepared + 0) is torch.Tensor and torch.equal(prepared, db)
    assert prepared.shape == db.shape and type(prepared[:5]) is torch.Tensor
    for screen in (True, False):
        got = cosine_topk(q, prepared, k=10, exclude=ex, screen=screen, tile_rows=256)
        assert torch.equal(got[0], cosine_topk(q, db, k=10, exclude=ex, tile_rows=256)[0])
    prepared[3] = -prepared[3]  # changed in place: the copy made before no longer counts
    got = cosine_topk(q, prepared, k=10, exclude=ex, screen=True, tile_rows=256)
    same_up_to_ties(got, score_matrix(q, prepared.clone(), ex))


def test_the_copy_of_a_prepared_database_follows_the_screen(monkeypatch):
    db = torch.randn(100, 8)
    monkeypatch.setenv(SCREEN_ENV, "off")
    assert prepare(db).ready.screen is None
    monkeypatch.setenv(SCREEN_ENV, "on")
    assert prepare(db).ready.screen.shape == (100, 16)


def test_the_non_cpu_branches_on_a_cpu(monkeypatch):
    """CPU twin of the CUDA branches (no host sync: every row's top-k, no views of runs)."""
    monkeypatch.setattr(retrieval, "_host", lambda device: False)
    q, db, ex = clustered(40, 1000, 16, seed=10)
    g = torch.Generator().manual_seed(10)
    boost = Boost(torch.randint(3, (1000,), generator=g), torch.randint(3, (40,), generator=g), 3.0)
    got = cosine_topk(q, db, k=10, exclude=ex, boost=boost, screen=False, tile_rows=128)
    same_up_to_ties(got, score_matrix(q, db, ex, boost))


@pytest.mark.parametrize("dim", [64, 128, 256])
def test_blas_entries_do_not_depend_on_the_rest_of_the_matrix(dim):
    """What the screen's exactness rests on: with ≥ MIN_ROWS rows and columns, one entry of a
    float32 product is the same bits whatever else is multiplied with it (tiles, gathers, bmm,
    either operand first)."""
    g = torch.Generator().manual_seed(dim)
    a, b = torch.randn(300, dim, generator=g), torch.randn(900, dim, generator=g)
    full = a @ b.T
    cols = torch.randperm(900, generator=g)[:40]
    assert torch.equal(a[5 : 5 + MIN_ROWS] @ b[100:600].T, full[5 : 5 + MIN_ROWS, 100:600])
    assert torch.equal(a[:64] @ b[cols].T, full[:64][:, cols])
    assert torch.equal((b[cols] @ a[:64].T).T, full[:64][:, cols])
    batched = torch.bmm(a[:32].view(2, 16, dim), b[cols].view(2, 20, dim).transpose(1, 2))
    assert torch.equal(batched[1], full[16:32][:, cols[20:]])
    batched = torch.bmm(a[:32].view(2, 16, dim), b[cols[:32]].view(2, 16, dim).transpose(1, 2))
    assert torch.equal(batched[0], full[:16][:, cols[:16]])


@pytest.mark.parametrize("dim", [64, 128, 256])
def test_rows_normalise_alone(dim):
    """What the screen's re-scoring rests on: a row normalised among others or alone, the same
    bits (it normalises only the rows it needs)."""
    g = torch.Generator().manual_seed(dim)
    x = torch.randn(5000, dim, generator=g) * torch.rand(5000, 1, generator=g) * 5
    whole = F.normalize(x, dim=1)
    for n in (1, 3, 16, 700):
        at = torch.randint(5000, (n,), generator=g)
        assert torch.equal(F.normalize(x.index_select(0, at), dim=1), whole[at])


def test_the_last_tile_is_never_short():
    assert tiles(8200, 8192) == [(0, 8200)]
    assert tiles(8300, 8192) == [(0, 8192), (8192, 8300)]
    assert tiles(10, 8192) == [(0, 10)]


def test_the_screen_runs_only_on_a_cpu_in_float32():
    assert not screens(torch.device("cuda"), torch.float32)
    assert not screens(CPU, torch.float64)


@pytest.mark.parametrize("amx, avx512_bf16", [(True, False), (False, True), (False, False)])
def test_the_screen_runs_where_the_cpu_has_bfloat16_units(monkeypatch, amx, avx512_bf16):
    monkeypatch.delenv(SCREEN_ENV, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert screens(CPU, torch.float32) is (amx or avx512_bf16)
    needed = []
    real = retrieval._Screen.needed
    monkeypatch.setattr(retrieval._Screen, "needed", lambda s, *a: needed.append(1) or real(s, *a))
    q, db, _ = clustered(20, 600, 16)
    cosine_topk(q, db, k=10, tile_rows=100)  # the default: the screen where it runs
    assert bool(needed) is (amx or avx512_bf16)


def test_the_environment_turns_the_screen_off_or_on(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setenv(SCREEN_ENV, "off")
    assert not screens(CPU, torch.float32)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setenv(SCREEN_ENV, "on")
    assert screens(CPU, torch.float32)
    assert not screens(CPU, torch.float64)
    monkeypatch.setenv(SCREEN_ENV, "sometimes")
    with pytest.raises(SuiteError, match=f"{SCREEN_ENV}='sometimes'"):
        screens(CPU, torch.float32)


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


def test_the_first_rows_fed_must_be_more_than_k():
    with pytest.raises(SuiteError, match="more than k=10"):
        RunningTopK(torch.ones(2, 3), 10).add(torch.ones(10, 3))


def test_dimension_mismatch():
    with pytest.raises(SuiteError, match="same E"):
        cosine_topk(torch.ones(2, 3), DB)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_inputs_device():
    q, db, ex = clustered(50, 1000, 16, seed=1)
    g = torch.Generator().manual_seed(1)
    boost = Boost(torch.randint(3, (1000,), generator=g), torch.randint(3, (50,), generator=g), 3.0)
    for kw in ({}, {"exclude": ex, "boost": boost}):
        s, i = cosine_topk(q.cuda(), prepare(db.cuda()), k=10, tile_rows=128, **kw)
        assert i.is_cuda
        cpu = cosine_topk(q, db, k=10, tile_rows=128, screen=False, **kw)
        torch.testing.assert_close(s.cpu(), cpu[0], atol=1e-5, rtol=0)  # other BLAS, other bits
        assert (i.cpu() == cpu[1]).float().mean() > 0.95
