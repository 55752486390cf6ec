"""Retrieval (SPEC §7): exact cosine top-k of every query against the database, in tiles.

One pass over the database, TILE_ROWS rows at a time, every block of queries against each tile,
and a running top-k per query (`RunningTopK`): memory stays bounded in both directions and time
grows linearly with queries × rows. The first tile is scored in float32 whole; after it, only
the CHUNKs of a query's scores whose best can still enter its top-k are ranked (a top-k per
chunk before the merge, not a merge of every row).

Where bfloat16 matrix products are fast (a CPU with AVX512-BF16 or AMX, `screens`), a tile after
the first is scored in bfloat16 first, with each query's threshold folded into the product: the
sign of a bfloat16 product says whether the row can still reach the query's k-th best (the
bound below included), and only those rows are scored again in float32. The answer stays exact:
every score returned is the float32 one, and float32 scores come from BLAS calls of ≥ MIN_ROWS
rows and columns, whose every entry does not depend on the rest of the matrix (for E ≤ 512;
tests/test_retrieval.py checks it), so a score is the same bits whatever else was ranked with
it. Rows with exactly equal scores may come in either order.

The screen's bound. q, d: float32 unit rows, ŝ their float32 score (a BLAS sum of E products);
q̃, d̃ in bfloat16 (round to nearest, 8 significant bits: |q̃ᵢ − qᵢ| ≤ 2⁻⁸·|qᵢ|);
e_q = ‖q̃ − q‖, e_d = ‖d̃ − d‖ (each ≤ 2⁻⁸; float32 differences of neighbours are exact).
- Inputs: q̃·d̃ − q·d = q̃·(d̃ − d) + (q̃ − q)·d, so |q̃·d̃ − q·d| ≤ ‖q̃‖·e_d + e_q·‖d‖
  < ROUNDING·(e_d + e_q) (‖q̃‖ ≤ (1 + 2⁻⁸)‖q‖, a float32 norm ≤ 1 + 2⁻¹¹, e's own rounding).
  The worst case is 2⁻⁷: a unit row whose every component rounds down by 2⁻⁸ has the bfloat16
  self-score 0.9921875 against 1 (tests/test_retrieval.py builds it).
- Accumulation: any order of n float32 additions errs by ≤ γₙ·Σ|terms|, γₙ < 2nu (u = 2⁻²⁴):
  ŝ by ≤ 2Eu against q·d; the screen's product (K columns: q̃·d̃, the threshold, the row's bound
  and, for a boost folded into it, the amount at the row's key; products of bfloat16 numbers are
  exact in float32) by ≤ 2Ku·(2.1 + 2.02·|t|), as a row near the threshold has |amount| ≤ |t| + 1.1.
- The threshold t = k-th best − ROUNDING·e_q − (a boost not folded in) − slack, folded as two
  bfloat16 columns t_hi = bf16(t), t_lo = bf16(t − t_hi) (t − t_hi exact): off by ≤ 2⁻¹⁶·|t|,
  and computing t in float32 by ≤ 3u·|t|; the row's bound is a column ≥ ROUNDING·e_d (rounded
  up); a folded amount's own rounding to bfloat16 joins the threshold's lowering.
- Output: the product is rounded to bfloat16 (or flushed to zero), which keeps its sign.
- Dense near-duplicates: where many rows pass, a block adds d̃·bf16(q − q̃) to the product (a
  second product, `precise`): the query's part of the bound is then 2⁻⁸·e_q, and rounding the
  two products to bfloat16 before their sum costs ≤ 2⁻⁷·1.02·e_q near the threshold: 2⁻⁶·e_q.
So a row whose float32 score reaches the k-th best has a product ≥ 0 when the slack is
(2u·(E + 2K) + 2⁻¹⁵)·(3 + |t|) (at E = 256, K = 272: 5.0·10⁻⁴ for |t| = 1, against up to 2⁻⁷ =
7.8·10⁻³ for the inputs' rounding).

The database may be prepared once (`Prepared`, `prepare`: its rows normalised and copied for the
screen once per run, not on every call; index.py's exact search does so where PREPARED_BYTES
allows, and streams a larger database from its partitions).
`RunningTopK` takes the database tile by tile (`add`), so a database that does not fit in
memory can be fed from its partitions. `exclude` drops one database row per query (the "clean"
protocol, where a query may not retrieve its own image); the authors' protocol keeps it.
`Boost` adds a constant to the scores of the rows whose key matches the query's (head-filtered
kNN puts the rows its heads accept first). RETRIEVAL_SCREEN=off (or on) overrides `screens`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from src.errors import SuiteError

TILE_ROWS = 16384  # database rows per tile: 16 MiB in float32 at E = 256
SCREEN_ROWS = 4096  # rows of a tile's bfloat16 screen at once (8 MiB for 1,024 queries)
DENSE_ROWS = 4096  # rows of a tile scored in float32 at once (16 MiB for 1,024 queries)
QUERY_BLOCK = 1024  # queries per block: a block's bfloat16 screen of a tile stays at 8 MiB
MIN_ROWS = 16  # BLAS calls below this many rows or columns take other kernels (other bits)
CHUNK = 256  # float32 scores per chunk of a tile's row: only chunks that reach the k-th best merge
KEYS = 1024  # a boost with fewer keys folds into the screen's product, one column per key
PRECISE = 8  # pairs per query and 16,384 rows past which the screen corrects the queries' rounding
SKIPS = 7  # at most this many tiles in a row without the screen where it did not pay
DENSE = 8  # a sub-block needing more than 1/DENSE of a tile's rows scores the whole tile
SCREEN_ENV = "RETRIEVAL_SCREEN"  # auto (default), off, on
ROUNDING = 1 + 2.0**-5  # the inputs' bound: ROUNDING·(e_q + e_d) (see above)
UNIT = 2.0**-24  # float32's unit roundoff
EXTRA = 3  # the screen's extra columns: −t_hi, −t_lo, the row's bound
PREPARED_BYTES = 2 << 30  # a database's rows made ready once up to this size (1M × 256: 1.6 GB)


@dataclass(frozen=True)
class Boost:
    """`amount` added to the score of database row r for query i when db_key[r] == query_key[i]."""

    db_key: Tensor  # (N,) integer keys
    query_key: Tensor  # (Q,) integer keys, -1 for none
    amount: float


def screens(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the bfloat16 screen runs: float32 on a CPU with bfloat16 dot-product units, unless
    RETRIEVAL_SCREEN says off (or on: wherever float32 runs on a CPU)."""
    choice = os.environ.get(SCREEN_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "on", "off"):
        raise SuiteError(f"{SCREEN_ENV}={choice!r}: choose auto, on or off")
    if choice == "off" or device.type != "cpu" or dtype != torch.float32:
        return False
    cpu = getattr(torch, "cpu", None)
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return choice == "on" or any(getattr(cpu, p, lambda: False)() for p in probes)


def _width(emb: int) -> int:
    """Columns of the screen's product: E plus EXTRA, rounded up to 16 (bfloat16 kernels' step)."""
    return -(-(emb + EXTRA) // 16) * 16


def screen_rows(unit: Tensor, out: Tensor | None = None) -> Tensor:
    """The screen's copy of unit database rows (n×E float32): n×K bfloat16 rows [d̃, 1, 1, e, 0…]
    with e ≥ ROUNDING·‖d̃ − d‖. Against a query's columns [q̃, −t_hi, −t_lo, 1, 0…] the product
    is q̃·d̃ − t + e (see the bound above). out: where to write them (n×K bfloat16)."""
    n, emb = unit.shape
    out = unit.new_empty(n, _width(emb), dtype=torch.bfloat16) if out is None else out
    out[:, emb + EXTRA :] = 0
    out[:, :emb] = unit
    err = torch.linalg.vector_norm(out[:, :emb].float() - unit, dim=1)  # differences are exact
    out[:, emb : emb + 2] = 1.0
    out[:, emb + 2] = err * (ROUNDING * (1 + 2.0**-7))  # ≥ err·ROUNDING after rounding (2⁻⁸)
    return out


class Database(Tensor):
    """A database (N×E float32) that behaves as the plain tensor it is, with its rows made ready
    once (`prepare`) instead of on every call. Operations on it give plain tensors."""

    ready: Prepared  # its rows normalised and their screen copy
    version: int  # the tensor's version when they were made (an in-place change drops them)

    __torch_function__ = torch._C._disabled_torch_function_impl

    @staticmethod
    def __new__(cls, z: Tensor) -> Database:
        return Tensor._make_subclass(cls, z.detach(), False)

    def __deepcopy__(self, memo: dict) -> Tensor:
        return self.clone()  # a plain tensor (prepare it again where it matters)


@dataclass(frozen=True)
class Prepared:
    """A database's rows made ready once per run rather than on every call: normalised (float32,
    the bits `F.normalize` gives each row alone) and, where the screen runs, their screen copy."""

    unit: Tensor  # N×E
    screen: Tensor | None  # N×K `screen_rows` of unit (None: no screen here)

    @staticmethod
    def of(
        parts: Iterable[tuple[int, Tensor]], n: int, dim: int, screen: bool, device: str = "cpu"
    ) -> Prepared:
        """From (first row, rows) parts covering rows 0…n−1 (a memory-mapped database's tiles),
        each normalised and copied for the screen as it comes."""
        unit = torch.empty(n, dim, device=device)
        copy = unit.new_empty(n, _width(dim), dtype=torch.bfloat16) if screen else None
        for start, rows in parts:
            for a, b in tiles(len(rows), TILE_ROWS):  # a tile's normalised rows stay in cache
                at = slice(start + a, start + b)
                unit[at] = F.normalize(rows[a:b].float(), dim=1)
                if copy is not None:
                    screen_rows(unit[at], copy[at])
        return Prepared(unit, copy)

    def feed(self, top: RunningTopK, tile_rows: int = TILE_ROWS) -> None:
        """Every row into the running top-k, tile by tile (the screen copy where it runs)."""
        copy = self.screen if top.screen else None
        for start, stop in tiles(len(self.unit), max(tile_rows, top.k + 1, MIN_ROWS)):
            part = None if copy is None else copy[start:stop]
            top.add(self.unit[start:stop], start, part, unit=True)


def fits(n: int, dim: int, screen: bool) -> bool:
    """Whether a `Prepared` copy of an n×dim database stays within PREPARED_BYTES."""
    return n * (4 * dim + (2 * _width(dim) if screen else 0)) <= PREPARED_BYTES


def prepare(z: Tensor) -> Tensor:
    """z as a `Database`: its rows normalised and (where the screen runs) copied for it now (for
    an N×E float32 database 1.5× z's memory more)."""
    db = Database(z)
    matrix = z.dim() == 2
    n, dim = z.shape if matrix else (0, 0)
    screen = matrix and screens(z.device, z.dtype)
    db.ready = Prepared.of([(0, z)] if matrix else [], n, dim, screen, z.device)
    db.version = z._version
    return db


def _prepared(database: Tensor) -> Prepared | None:
    """The database's prepared rows, when it was prepared and has not changed since."""
    if isinstance(database, Database) and database._version == database.version:
        return database.ready
    return None


def _check(queries: Tensor, database: Tensor, k: int, exclude: Tensor | None) -> Tensor | None:
    if queries.dim() != 2 or database.dim() != 2 or queries.shape[1] != database.shape[1]:
        raise SuiteError(
            f"cosine_topk: queries {tuple(queries.shape)} and database {tuple(database.shape)} "
            "must be Q×E and N×E with the same E"
        )
    n_q, n_db = queries.shape[0], database.shape[0]
    n_keep = n_db - (1 if exclude is not None else 0)
    if not 1 <= k <= n_keep:
        raise SuiteError(f"cosine_topk: k={k} but the database offers {n_keep} rows per query")
    if exclude is None:
        return None
    exclude = torch.as_tensor(exclude, device=queries.device).long()
    if exclude.shape != (n_q,):
        raise SuiteError(f"cosine_topk: exclude must have shape ({n_q},)")
    if n_q and int(exclude.max()) >= n_db:
        raise SuiteError(f"cosine_topk: exclude holds a row ≥ the database size {n_db}")
    return exclude


def tiles(n: int, rows: int) -> list[tuple[int, int]]:
    """[start, stop) of the database tiles: `rows` each, the last one never below MIN_ROWS rows
    (a short rest joins the tile before it)."""
    bounds = list(range(0, n, rows)) + [n]
    if len(bounds) > 2 and n - bounds[-2] < MIN_ROWS:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class _Screen:
    """One query block's side of the screen: its queries in bfloat16 with the threshold columns;
    whether the screen pays for it (on data where it does not, the block skips it for tiles
    after tiles: no database makes it much slower than float32 alone); and whether it corrects
    the queries' own rounding (`precise`, where the rounding lets many rows through)."""

    def __init__(self, q: Tensor, amount: Tensor, keys: Tensor | None = None):
        """q: the block's unit queries. amount: per query, how much a boost may add to a row's
        plain score (0: none). keys: per query its boost's key columns (the amount at its key,
        in bfloat16; `_key_columns`), when the boost folds into the product; then only the
        amount's own rounding lowers the threshold."""
        emb = q.shape[1]
        self.emb, self.skip, self.misses, self.precise = emb, 0, 0, False
        width = _width(emb) + (0 if keys is None else keys.shape[1])
        self.cols = q.new_zeros(len(q), width, dtype=torch.bfloat16)
        self.cols[:, :emb] = q
        self.cols[:, emb + 2] = 1.0
        low = q - self.cols[:, :emb].float()  # exact
        self.low = low.bfloat16()  # q − q̃ to 2⁻⁸ of itself: the precise screen's second product
        err = torch.linalg.vector_norm(low, dim=1)
        if keys is not None:
            self.cols[:, _width(emb) :] = keys
            amount = (amount - keys.float().sum(1)).abs()  # the amount as the product adds it
        # t = threshold − the query's rounding − (a boost) − accumulation and the split of t
        self.lower = {False: err * ROUNDING + amount, True: err * 2.0**-6 + amount}
        self.slack = 2 * UNIT * (emb + 2 * width) + 2.0**-15  # per unit of 3 + |t|

    def thresholds(self, kth: Tensor) -> None:
        """Fold each query's k-th best float32 score into its columns: −t as two bfloat16 parts
        (t − t_hi is exact in float32 and its bfloat16 leaves < 2⁻¹⁷·|t|)."""
        t = kth.clamp(-(2.0**14), 2.0**14) - self.lower[self.precise]  # padding: +inf → finite
        t = t - self.slack * (3 + t.abs())
        hi = t.bfloat16()
        self.cols[:, self.emb] = -hi
        self.cols[:, self.emb + 1] = -(t - hi.float()).bfloat16()

    def needed(self, screen: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
        """(tile rows, queries) where the query may still take the row: its bfloat16 product with
        the tile's screen copy is ≥ 0 (int16 bits ≥ 0). Found per group of MIN_ROWS rows first
        (a reduction over a middle dimension, SCREEN_ROWS rows at a time while they are in
        cache), then within the groups that have one. out: room for the rows × queries product."""
        w, m = len(screen), len(self.cols)
        s = out[: w * m].view(w, m)
        bits = s.view(torch.int16)
        best = bits.new_empty(-(-w // MIN_ROWS), m)  # every group written below
        for a in range(0, w, SCREEN_ROWS):
            b = min(a + SCREEN_ROWS, w)
            torch.mm(screen[a:b], self.cols.T, out=s[a:b])
            if self.precise:  # + d̃·(q − q̃): the queries' rounding corrected
                s[a:b].addmm_(screen[a:b, : self.emb], self.low.T)
            whole = a + (b - a) // MIN_ROWS * MIN_ROWS
            torch.amax(
                bits[a:whole].view(-1, MIN_ROWS, m), 1, out=best[a // MIN_ROWS : whole // MIN_ROWS]
            )
            if whole < b:  # a last group of fewer rows
                torch.amax(bits[whole:b], 0, out=best[-1])
        group, query = (best >= 0).nonzero().unbind(1)
        rows = group[:, None] * MIN_ROWS + torch.arange(MIN_ROWS, device=s.device)
        rows = rows.clamp(max=w - 1)  # past a short last group: its last row again
        at, i = (bits.flatten().take(rows * m + query[:, None]) >= 0).nonzero().unbind(1)
        return rows[at, i], query[at]

    def paid(self, dense: int, pairs: int, rows: int) -> None:
        """After a screened tile of `rows` rows on which `dense` of the block's sub-blocks scored
        the whole tile and `pairs` (row, query) pairs passed: when most sub-blocks went dense,
        skip the screen for the next 2ⁿ − 1 tiles (n such tiles in a row, at most SKIPS); correct
        the queries' rounding while more than PRECISE pairs per query and 16,384 rows pass (a
        second product, which runs on every core, against re-scoring, which mostly does not)."""
        self.misses = self.misses + 1 if 2 * dense * MIN_ROWS > len(self.cols) else 0
        self.skip = min(2**self.misses - 1, SKIPS)
        rate = pairs / len(self.cols) * 16384 / rows
        self.precise = rate > PRECISE / 4 if self.precise else rate > PRECISE


class RunningTopK:
    """The running top-k of a set of queries, fed database tiles in order (`add`); rows padded to
    a multiple of MIN_ROWS queries, which never ask for a float32 score."""

    def __init__(
        self,
        queries: Tensor,
        k: int,
        exclude: Tensor | None = None,
        boost: Boost | None = None,
        *,
        screen: bool | None = None,
        query_block: int = QUERY_BLOCK,
    ):
        q = F.normalize(queries, dim=1)
        n_q, dev = q.shape[0], q.device
        pad = -n_q % MIN_ROWS  # zero queries: every BLAS call keeps ≥ MIN_ROWS rows
        self.n_q, self.k, self.boost = n_q, k, boost
        self.q = torch.cat([q, q.new_zeros(pad, q.shape[1])])
        fill = torch.full((pad,), -1, dtype=torch.long, device=dev)
        self.exclude = None if exclude is None else torch.cat([exclude, fill])
        self.key = None if boost is None else torch.cat([boost.query_key.to(dev), fill])
        self.scores = torch.full((len(self.q), k), -math.inf, dtype=q.dtype, device=dev)
        self.rows = torch.zeros(len(self.q), k, dtype=torch.long, device=dev)
        self.screen = screens(dev, q.dtype) if screen is None else screen
        block = max(MIN_ROWS, query_block - query_block % MIN_ROWS)
        self.blocks = [(s, min(s + block, len(self.q))) for s in range(0, len(self.q), block)]
        self.screens: list[_Screen] = []
        self.seen = 0  # database rows added so far
        self.scored = 0  # float32 scores computed after the first tile (tests, benchmarks)
        self.keys = _key_columns(boost) if self.screen else 0
        self.out: Tensor | None = None

    def _screens(self) -> list[_Screen]:
        if not self.screens:
            amount = torch.zeros(len(self.q), device=self.q.device)
            keys = None
            if self.boost is not None and self.keys:
                # the boost in the product: one column per key, the amount at the query's
                keyed = (self.key >= 0) & (self.key < self.keys)
                keys = self.q.new_zeros(len(self.q), self.keys, dtype=torch.bfloat16)
                keys[keyed.nonzero().flatten(), self.key[keyed]] = self.boost.amount
                amount[keyed] = self.boost.amount
            elif self.boost is not None:  # a boosted row's plain score may be lower by the amount
                keyed = torch.isin(self.key, self.boost.db_key.to(self.key.device))
                amount[keyed] = max(self.boost.amount, 0.0)
            self.screens = [
                _Screen(self.q[a:b], amount[a:b], None if keys is None else keys[a:b])
                for a, b in self.blocks
            ]
        return self.screens

    def add(
        self,
        rows: Tensor,
        start: int | None = None,
        screen: Tensor | None = None,
        unit: bool = False,
    ) -> None:
        """Merge the database rows `rows` (n×E, the rows start…start+n−1 of the database; start
        defaults to the rows added so far) into every query's top-k. `screen`: their
        `screen_rows`, when prepared; unit: the rows are normalised already (`Prepared`: the bits
        F.normalize gives them). The first rows added must be more than k; n ≥ MIN_ROWS
        keeps every score the bits of a whole-matrix product (`tiles` cuts the database so)."""
        if not self.seen and len(rows) <= self.k:
            raise SuiteError(f"RunningTopK: the first rows added must be more than k={self.k}")
        start = self.seen if start is None else start
        tile = _Tile(rows.to(self.q.device, self.q.dtype), start, screen, unit)
        screens = self._screens() if self.screen else [None] * len(self.blocks)
        for (a, b), scr in zip(self.blocks, screens, strict=True):
            qs = torch.arange(a, b, device=self.q.device)
            if scr is None or not self.seen:  # float32 only, or the first tile
                self._dense(qs, tile)
            elif scr.skip:  # the screen has not paid lately
                scr.skip -= 1
                self._dense(qs, tile)
            else:
                scr.thresholds(self.scores[a:b, -1])
                row, query = scr.needed(self._screen_of(tile), self._product(tile))
                scr.paid(self._rescore(a, row, query, tile), len(row), len(tile.rows))
        if not self.seen:
            self.scores[self.n_q :] = math.inf  # the padding rows never ask for a float32 score
        self.seen = max(self.seen, start + len(rows))

    def _screen_of(self, tile: _Tile) -> Tensor:
        """The tile's screen copy on the queries' device, with its rows' key columns (a 1 at the
        row's key) when the boost folds into the product."""
        screen = tile.screen().to(self.q.device)
        if not self.keys:
            return screen
        key = self.boost.db_key[tile.start : tile.start + len(screen)].to(self.q.device)
        out = screen.new_zeros(len(screen), screen.shape[1] + self.keys)
        out[:, : screen.shape[1]] = screen
        out[torch.arange(len(key), device=key.device), screen.shape[1] + key] = 1.0
        return out

    def _product(self, tile: _Tile) -> Tensor:
        """Room for a tile's bfloat16 screen product (rows × a block's queries), kept between
        tiles."""
        need = len(tile.rows) * (self.blocks[0][1] - self.blocks[0][0])
        if self.out is None or len(self.out) < need:
            self.out = torch.empty(need, dtype=torch.bfloat16, device=self.q.device)
        return self.out

    def result(self) -> tuple[Tensor, Tensor]:
        """(scores Q×k, database rows Q×k), best first."""
        return self.scores[: self.n_q], self.rows[: self.n_q]

    def _adjust(self, s: Tensor, qs: Tensor, cols: Tensor) -> Tensor:
        """Scores of queries `qs` (…×m) against database rows `cols` (…×c), boosted, exclusions
        at -inf (in that order, as head-filtered kNN always did)."""
        if self.boost is not None:
            db_key = self.boost.db_key.to(cols.device)[cols]
            s = s + self.boost.amount * (db_key.unsqueeze(-2) == self.key[qs].unsqueeze(-1))
        if self.exclude is not None:
            s = s.masked_fill(self.exclude[qs].unsqueeze(-1) == cols.unsqueeze(-2), -math.inf)
        return s

    def _merge(self, qs: Tensor, s: Tensor, cols: Tensor) -> None:
        """Merge scores s (…×m×c) of database rows cols (…×c, or …×m×c) into the top-k of
        queries qs (…×m)."""
        both = torch.cat([self.scores[qs], s], -1)
        if cols.dim() < s.dim():  # the same rows for every query
            cols = cols.unsqueeze(-2).expand(*s.shape)
        rows = torch.cat([self.rows[qs], cols], -1)
        best, at = both.topk(self.k, dim=-1)
        self.scores[qs], self.rows[qs] = best, rows.gather(-1, at)

    def _dense(self, qs: Tensor, tile: _Tile) -> None:
        """Queries qs (increasing) against every row of the tile in float32, DENSE_ROWS rows at a
        time, each merged: on the first rows their top-k (as one chunk always was), after them
        the top-k of each CHUNK of a query's scores whose best reaches the query's k-th best (on
        a CPU; elsewhere of every row)."""
        q = self.q[qs[0] : qs[-1] + 1] if _consecutive(qs) else self.q[qs]
        for a, b in tiles(len(tile.rows), DENSE_ROWS):  # a short rest joins: ≥ MIN_ROWS rows
            part = tile.part(a, b)
            unit, start = part.unit(), part.start
            w = len(unit)
            s = self._adjust(q @ unit.T, qs, torch.arange(start, start + w, device=unit.device))
            self.scored += s.numel() if self.seen or a else 0
            if not self.seen and not a and w >= self.k:  # the first rows, when they hold k
                self.scores[qs], at = s.topk(self.k, dim=1)
                self.rows[qs] = at + start
            elif not _host(s.device):  # no host sync: every row's top-k
                best, at = s.topk(min(self.k, w), dim=1)
                self._merge(qs[:, None], best[:, None], at[:, None] + start)
            else:
                self._chunks(qs, s, start)

    def _chunks(self, qs: Tensor, s: Tensor, start: int) -> None:
        """Merge the top-k of each CHUNK of scores s (queries qs × rows start…) whose best reaches
        the query's k-th best (a chunk's best costs what a row's does)."""
        w = s.shape[1]
        c = CHUNK if w % CHUNK == 0 else w
        most = s.view(-1, c).amax(1).view(len(s), w // c)  # 3× quicker than .amax(2) of a 3-D view
        query, chunk = (most >= self.scores[qs, -1, None]).nonzero().unbind(1)
        if not len(query):
            return
        best, at = s.view(-1, c).index_select(0, query * (w // c) + chunk).topk(min(self.k, c))
        rows = start + chunk[:, None] * c + at
        group, counts, rank, pos = _ragged(query)
        shape = (len(group), int(counts.max()), best.shape[1])
        scores = best.new_full(shape, -math.inf).index_put_((rank, pos), best)
        rows = rows.new_zeros(shape).index_put_((rank, pos), rows)
        self._merge(qs[group, None], scores.view(len(group), 1, -1), rows.view(len(group), 1, -1))

    def _rescore(self, a: int, row: Tensor, query: Tensor, tile: _Tile) -> int:
        """The float32 scores of the (row, query) pairs the screen let through (queries of the
        block starting at a), merged: per sub-block of MIN_ROWS queries the union of its rows in
        one batched product, or the whole tile when a sub-block needs more than 1/DENSE of it.
        Returns how many sub-blocks took the whole tile."""
        if not len(row):
            return 0
        w, dev = len(tile.rows), row.device
        key = torch.unique(query.div(MIN_ROWS, rounding_mode="floor") * w + row)  # sorted
        sub, row = key.div(w, rounding_mode="floor"), key % w
        subs, counts, rank, pos = _ragged(sub)
        heavy = counts * DENSE > w
        n_heavy = int(heavy.sum())
        if n_heavy:  # these sub-blocks score the whole tile
            qs = a + subs[heavy, None] * MIN_ROWS + torch.arange(MIN_ROWS, device=dev)
            self._dense(qs.flatten(), tile)
            keep = ~heavy[rank]
            subs, counts = subs[~heavy], counts[~heavy]
            if not len(subs):
                return n_heavy
            row, pos = row[keep], pos[keep]
            rank = (torch.cumsum(~heavy, 0) - 1)[rank[keep]]
        width = max(int(counts.max()), MIN_ROWS)  # ≥ MIN_ROWS columns (padding: invalid)
        at = row.new_zeros(len(subs), width).index_put_((rank, pos), row)
        valid = torch.arange(width, device=dev) < counts[:, None]
        qs = a + subs[:, None] * MIN_ROWS + torch.arange(MIN_ROWS, device=dev)
        d = tile.gather(at.flatten()).view(len(subs), width, -1)
        exact = self._adjust(torch.bmm(self.q[qs], d.transpose(1, 2)), qs, at + tile.start)
        self._merge(qs, exact.masked_fill(~valid.unsqueeze(1), -math.inf), at + tile.start)
        self.scored += exact.numel()
        return n_heavy


def _key_columns(boost: Boost | None) -> int:
    """How many columns a boost's keys take in the screen's product (one per key, rounded up to
    16): 0 without a boost, or when its keys are negative or KEYS or more (the screen then
    lowers a boosted query's threshold by the amount instead, for every row)."""
    if boost is None or not len(boost.db_key):
        return 0
    low, high = int(boost.db_key.min()), int(boost.db_key.max())
    return 0 if low < 0 or high >= KEYS else -(-(high + 1) // 16) * 16


def _host(device: torch.device) -> bool:
    """Whether reading a value back is free (a CPU): where it is not, no step depends on one."""
    return device.type == "cpu"


def _consecutive(qs: Tensor) -> bool:
    """Whether increasing query indices qs are a run a, a+1, …: their rows are then a view."""
    return _host(qs.device) and bool(len(qs)) and int(qs[-1]) - int(qs[0]) + 1 == len(qs)


def _ragged(group: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """For sorted group ids: the groups, their sizes, and each item's (group rank, position in
    its group), to lay the items out as groups × max size."""
    groups, rank, counts = torch.unique_consecutive(group, return_inverse=True, return_counts=True)
    pos = torch.arange(len(group), device=group.device) - (counts.cumsum(0) - counts)[rank]
    return groups, counts, rank, pos


class _Tile:
    """Database rows start…start+n−1, normalised and copied for the screen only when asked."""

    def __init__(self, rows: Tensor, start: int, screen: Tensor | None, unit: bool = False):
        self.rows, self.start, self._screen = rows, start, screen
        self._unit = rows if unit else None

    def unit(self) -> Tensor:
        if self._unit is None:
            self._unit = F.normalize(self.rows, dim=1)
        return self._unit

    def screen(self) -> Tensor:
        if self._screen is None:
            self._screen = screen_rows(self.unit())
        return self._screen

    def part(self, a: int, b: int) -> _Tile:
        """Rows a…b−1 of the tile (itself when that is all of it)."""
        if a == 0 and b >= len(self.rows):
            return self
        unit = None if self._unit is None else self._unit[a:b]
        part = _Tile(self.rows[a:b], self.start + a, None)
        part._unit = unit
        return part

    def gather(self, at: Tensor) -> Tensor:
        """Rows `at` normalised (the same bits as those rows of `unit`: rows normalise alone);
        the whole tile is normalised first when they are many."""
        if self._unit is None and len(at) * 4 < len(self.rows):
            return F.normalize(self.rows.index_select(0, at), dim=1)
        return self.unit().index_select(0, at)


def cosine_topk(
    queries: Tensor,
    database: Tensor,
    k: int = 10,
    exclude: Tensor | None = None,
    *,
    boost: Boost | None = None,
    screen: bool | None = None,
    tile_rows: int = TILE_ROWS,
    query_block: int = QUERY_BLOCK,
) -> tuple[Tensor, Tensor]:
    """Top-k database rows by cosine similarity for each query: (scores Q×k, indices Q×k).

    exclude: (Q,) database row to leave out per query, -1 for none. boost: see `Boost`.
    screen: the bfloat16 screen (default: where it runs, `screens`). tile_rows, query_block: the
    tile sizes (memory ≈ their product; results do not depend on them). Runs on the queries'
    device. A `prepare`d database brings its rows normalised and their screen copy.
    """
    exclude = _check(queries, database, k, exclude)
    top = RunningTopK(queries, k, exclude, boost, screen=screen, query_block=query_block)
    ready = _prepared(database)
    if ready is not None:
        ready.feed(top, tile_rows)
        return top.result()
    for start, stop in tiles(database.shape[0], max(tile_rows, k + 1, MIN_ROWS)):
        top.add(database[start:stop], start)
    return top.result()
