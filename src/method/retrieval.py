"""Retrieval (SPEC §7): cosine top-k of every query against the database, batched on the device.

The database is normalised once; queries go through in chunks so that the Q×N score matrix never
exceeds a fixed memory budget. `exclude` drops one database row per query (the "clean" protocol,
where a query may not retrieve its own image); the authors' protocol keeps it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from src.errors import SuiteError

SCORE_BUDGET = 1 << 25  # elements of one chunk's score matrix (128 MiB in float32)


def cosine_topk(
    queries: Tensor,
    database: Tensor,
    k: int = 10,
    exclude: Tensor | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-k database rows by cosine similarity for each query: (scores Q×k, indices Q×k).

    exclude: (Q,) database row to leave out per query, -1 for none. chunk_size: queries per chunk
    (default: as many as fit SCORE_BUDGET score elements). Runs on the inputs' device.
    """
    if queries.dim() != 2 or database.dim() != 2 or queries.shape[1] != database.shape[1]:
        raise SuiteError(
            f"cosine_topk: queries {tuple(queries.shape)} and database {tuple(database.shape)} "
            "must be Q×E and N×E with the same E"
        )
    n_q, n_db = queries.shape[0], database.shape[0]
    n_keep = n_db - (1 if exclude is not None else 0)
    if not 1 <= k <= n_keep:
        raise SuiteError(f"cosine_topk: k={k} but the database offers {n_keep} rows per query")
    if exclude is not None:
        exclude = torch.as_tensor(exclude, device=queries.device).long()
        if exclude.shape != (n_q,):
            raise SuiteError(f"cosine_topk: exclude must have shape ({n_q},)")
        if n_q and int(exclude.max()) >= n_db:
            raise SuiteError(f"cosine_topk: exclude holds a row ≥ the database size {n_db}")
    if chunk_size is None:
        chunk_size = max(1, SCORE_BUDGET // max(n_db, 1))
    db = F.normalize(database.to(queries.dtype), dim=1).to(queries.device)
    q = F.normalize(queries, dim=1)
    scores = torch.empty(n_q, k, dtype=q.dtype, device=q.device)
    indices = torch.empty(n_q, k, dtype=torch.long, device=q.device)
    for start in range(0, n_q, chunk_size):
        stop = min(start + chunk_size, n_q)
        sim = q[start:stop] @ db.T
        if exclude is not None:
            ex = exclude[start:stop, None]
            col = ex.clamp(min=0)
            drop = torch.full_like(sim[:, :1], float("-inf"))
            sim.scatter_(1, col, torch.where(ex >= 0, drop, sim.gather(1, col)))
        scores[start:stop], indices[start:stop] = torch.topk(sim, k, dim=1)
    return scores, indices
