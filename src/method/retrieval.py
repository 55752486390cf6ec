"""Retrieval (SPEC §7): exact cosine top-k of every query against the database, in tiles.

One pass over the database, TILE_ROWS rows at a time (each tile normalised as it is read), every
query against each tile, and a running top-k per query: memory stays bounded in both directions
(a tile, a block of queries) and time grows linearly with queries × rows.

Where bfloat16 matrix products are fast (a CPU with AVX512-BF16 or AMX, `screens`), a tile after
the first is scored in bfloat16 first, and only the rows that can still enter a query's top-k —
their bfloat16 score within MARGIN, a proven bound of its error, of the query's current k-th best
— are scored again in float32. The answer stays exact: every score returned is the float32 one,
and float32 scores come from BLAS calls of ≥ MIN_ROWS rows and columns, whose every entry does not
depend on the rest of the matrix (tests/test_retrieval.py checks it), so a score is the same bits
whatever else was ranked with it. Rows with exactly equal scores may come in either order.

`exclude` drops one database row per query (the "clean" protocol, where a query may not retrieve
its own image); the authors' protocol keeps it. `Boost` adds a constant to the scores of the rows
whose key matches the query's (head-filtered kNN puts the rows its heads accept first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from src.errors import SuiteError

TILE_ROWS = 8192  # database rows per tile: 8 MiB in float32 at E = 256
QUERY_BLOCK = 256  # queries per block: a block's bfloat16 scores of a tile stay at 4 MiB
MIN_ROWS = 16  # BLAS calls below this many rows or columns take other kernels (other bits)
GROUP = 4  # database rows screened as one: a query needing one row scores its GROUP in float32
# |bfloat16 score − float32 score| of two unit vectors: inputs rounded to 8 significant bits
# (≤ 2·2⁻⁹·Σ|q_i d_i| ≤ 2⁻⁸), the float32 accumulations (≤ E·2⁻²⁴ each), the output rounded to
# bfloat16 (≤ 2⁻⁹): ≤ 0.0059 for E ≤ 4096; 2⁻⁷ leaves room.
MARGIN = 2.0**-7


@dataclass(frozen=True)
class Boost:
    """`amount` added to the score of database row r for query i when db_key[r] == query_key[i]."""

    db_key: Tensor  # (N,) integer keys
    query_key: Tensor  # (Q,) integer keys, -1 for none
    amount: float


def screens(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the bfloat16 screen pays: float32 on a CPU with bfloat16 dot-product units."""
    if device.type != "cpu" or dtype != torch.float32:
        return False
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        if getattr(cpu, probe, lambda: False)():
            return True
    return False


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


class _TopK:
    """The running top-k of a set of queries (rows padded to a multiple of MIN_ROWS)."""

    def __init__(self, q: Tensor, k: int, exclude: Tensor | None, boost: Boost | None):
        n_q = q.shape[0]
        pad = -n_q % MIN_ROWS  # zero queries: every BLAS call keeps ≥ MIN_ROWS rows
        self.n_q, self.k, self.boost = n_q, k, boost
        self.q = torch.cat([q, q.new_zeros(pad, q.shape[1])])
        fill = torch.full((pad,), -1, dtype=torch.long, device=q.device)
        self.exclude = None if exclude is None else torch.cat([exclude, fill])
        self.key = None if boost is None else torch.cat([boost.query_key.to(q.device), fill])
        self.scores = torch.full((len(self.q), k), -math.inf, dtype=q.dtype, device=q.device)
        self.rows = torch.zeros(len(self.q), k, dtype=torch.long, device=q.device)

    def adjust(self, s: Tensor, qs: Tensor, cols: Tensor) -> Tensor:
        """Scores of queries `qs` (…×m) against database rows `cols` (…×c), boosted, exclusions
        at -inf (in that order, as head-filtered kNN always did)."""
        if self.boost is not None:
            db_key = self.boost.db_key.to(cols.device)[cols]
            s = s + self.boost.amount * (db_key.unsqueeze(-2) == self.key[qs].unsqueeze(-1))
        if self.exclude is not None:
            s = s.masked_fill(self.exclude[qs].unsqueeze(-1) == cols.unsqueeze(-2), -math.inf)
        return s

    def first(self, sl: slice, s: Tensor, start: int) -> None:
        """The top-k of the first tile: torch.topk of the whole row, as one chunk always was."""
        self.scores[sl], rows = s.topk(self.k, dim=1)
        self.rows[sl] = rows + start

    def merge(self, qs: Tensor, s: Tensor, cols: Tensor) -> None:
        """Merge scores s (…×m×c) of database rows cols (…×c) into the top-k of queries qs (…×m)."""
        both = torch.cat([self.scores[qs], s], -1)
        rows = torch.cat([self.rows[qs], cols.unsqueeze(-2).expand(*s.shape)], -1)
        best, at = both.topk(self.k, dim=-1)
        self.scores[qs], self.rows[qs] = best, rows.gather(-1, at)


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
    screen: the bfloat16 screen (default: where it pays, `screens`). tile_rows, query_block: the
    tile sizes (memory ≈ their product; results do not depend on them). Runs on the queries' device.
    """
    exclude = _check(queries, database, k, exclude)
    q = F.normalize(queries, dim=1)
    if screen is None:
        screen = screens(q.device, q.dtype)
    top = _TopK(q, k, exclude, boost)
    block = max(MIN_ROWS, query_block - query_block % MIN_ROWS)
    for t, (start, stop) in enumerate(tiles(database.shape[0], max(tile_rows, k + 1, MIN_ROWS))):
        d = F.normalize(database[start:stop].to(q.device, q.dtype), dim=1)
        cols = torch.arange(start, stop, device=q.device)
        d_bf16 = d.bfloat16() if screen and t > 0 else None
        for s0 in range(0, len(top.q), block):
            qs = torch.arange(s0, min(s0 + block, len(top.q)), device=q.device)
            if d_bf16 is not None:
                _screened(top, qs, d, d_bf16, cols)
                continue
            s = top.adjust(top.q[qs] @ d.T, qs, cols)
            if t == 0:
                top.first(slice(s0, s0 + len(qs)), s, start)
            else:
                top.merge(qs, s, cols)
        if t == 0:
            top.scores[top.n_q :] = math.inf  # the padding rows never ask for a float32 score
    return top.scores[: top.n_q], top.rows[: top.n_q]


def _group_max(bits: Tensor) -> Tensor:
    """Per query, the maximum of each group of GROUP rows (rows j, j + g, j + 2g, … of the tile's
    w = g·GROUP + tail rows; a tail of < GROUP rows is one more group), on bfloat16 bits read as
    int16: for scores ≥ 0 the integers order like the scores, and integer maxima are cheap."""
    m, w = bits.shape
    g = w // GROUP
    out = bits[:, : g * GROUP].view(m, GROUP, g).amax(1)
    if g * GROUP < w:
        out = torch.cat([out, bits[:, g * GROUP :].amax(1, keepdim=True)], 1)
    return out


def _reaches(group_max: Tensor, thr: Tensor) -> Tensor:
    """Whether a group's bfloat16 maximum may reach the query's threshold; a query whose threshold
    is ≤ 0 takes every group (negative scores do not order as int16)."""
    floor = (thr.view(torch.int32) >> 16).to(torch.int16)  # the bfloat16 at or below thr (> 0)
    return (group_max >= floor[:, None]) | (thr <= 0)[:, None]


def _screened(top: _TopK, qs: Tensor, d: Tensor, d_bf16: Tensor, cols: Tensor) -> None:
    """One query block against one tile: bfloat16 scores, then float32 only where it can matter.

    A query needs a group (`_group_max`) when the group's bfloat16 maximum ≥ its k-th best −
    MARGIN; a sub-block of MIN_ROWS queries scores the union of the groups its queries need, in
    one batched product.
    """
    m, w = len(qs), d.shape[0]
    g = w // GROUP
    s = top.q[qs].bfloat16() @ d_bf16.T
    thr = top.scores[qs, -1] - MARGIN
    bits = s.view(torch.int16)
    need = _reaches(_group_max(bits), thr)
    if top.boost is not None:  # a boosted row: its plain score against the threshold − amount
        match = top.boost.db_key.to(cols.device)[cols][None, :] == top.key[qs][:, None]
        boosted = _group_max(bits.masked_fill(~match, torch.iinfo(torch.int16).min))
        need |= _reaches(boosted, thr - top.boost.amount)
    # per sub-block of MIN_ROWS queries (a max over uint8: bool reductions are slow)
    need = need.view(torch.uint8).view(m // MIN_ROWS, MIN_ROWS, -1).amax(1)
    counts = need.sum(1)
    subs = counts.nonzero().flatten()
    if len(subs) == 0:
        return
    width = max(int(counts.max()), MIN_ROWS // GROUP)  # ≥ MIN_ROWS columns (padding: invalid)
    if 4 * width > need.shape[1]:  # early tiles: most groups needed, the whole block is cheaper
        top.merge(qs, top.adjust(top.q[qs] @ d.T, qs, cols), cols)
        return
    # each sub-block's needed groups first (a stable sort keeps them in order), padded to `width`
    groups = need[subs].argsort(dim=1, descending=True, stable=True)[:, :width]
    valid = torch.arange(width, device=d.device) < counts[subs, None]
    # the rows of each group: j + g·i (the tail group: g·MIN_ROWS + i, rows past the tile invalid)
    i = torch.arange(GROUP, device=d.device)
    tail = groups == g
    rows = torch.where(tail[..., None], g * GROUP + i, groups[..., None] + g * i)
    valid = valid[..., None] & (rows < w)
    rows = rows.clamp(max=w - 1).flatten(1)  # sub-blocks × width·GROUP
    q_sub = qs.view(-1, MIN_ROWS)[subs]  # sub-blocks × MIN_ROWS queries
    exact = torch.bmm(top.q[q_sub], d[rows].transpose(1, 2))
    exact = top.adjust(exact, q_sub, cols[rows])
    exact = exact.masked_fill(~valid.flatten(1).unsqueeze(1), -math.inf)
    top.merge(q_sub, exact, cols[rows])
