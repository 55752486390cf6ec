"""How big an approximate index is: inverted lists, training sample, PQ code size, bytes per vector.

Ported from autofaiss (criteo/autofaiss 2.18.0, which cannot be installed beside numpy 2) so the
suite needs FAISS only; each rule names the function it comes from:
- `nlist`: `external/optimize.py` get_optimal_nb_clusters, its first (most recommended) choice —
  2^round(log2(4·√N)) below 1 M vectors (the FAISS wiki's 4·√N … 16·√N), 16,384 below 10 M,
  65,536 below 300 M, 131,072 above.
- `coarse`: a flat coarse quantizer below 1,000 lists. Above, not autofaiss's HNSW32 graph over
  the centroids (get_optimal_quantization's `IVF{c}_HNSW32`): on well-separated clusters its
  greedy walk stalls in the wrong cluster (10 M rows in 10,000 clusters, 65,536 lists: 35 % of
  rows put in their nearest list, the largest list 82,359 rows, a query scanning ~1 M rows), so the
  centroids are themselves held in an inverted file of √nlist cells — the first level of FAISS's
  two-level k-means — probed `coarse_probe` cells at a time (99.3 % nearest at 8 of 256 cells).
- `train_rows`: get_optimal_train_size — 100 points per list, fewer when the sample would not fit
  the memory budget (its IVF-Flat training estimate: the sample × 1.5), never under 31 per list.
- `pq_m`: get_optimal_quantization — the largest of 256, 128, 64, 48, 32, 24, 16, 8, 4 bytes per
  code below E whose codes plus the 8-byte id fit the index budget; we also need it to divide E
  (FAISS's PQ without the OPQ rotation autofaiss adds).
- `bytes_per_vector`: external/metadata.py estimated_index_size_in_bytes (codes + 8-byte ids per
  vector; nlist·E·4 for the centroids, once).
"""

from __future__ import annotations

import math

from src.errors import SuiteError

KINDS = ("exact", "faiss-flat", "ivf", "ivf-pq")  # where the database is searched (method/index.py)

PQ_SIZES = (256, 128, 64, 48, 32, 24, 16, 8, 4)
TWO_LEVEL_FROM = 1000  # lists from which the centroids are searched through an inverted file
COARSE_PROBE = 8  # its cells probed, at least (adding rows; a search probes as many as lists)
ID_BYTES = 8


def nlist(n: int) -> int:
    """Inverted lists for n vectors (autofaiss's first choice)."""
    if n < 1_000_000:
        return max(1, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))
    if n < 10_000_000:
        return 16_384
    if n < 300_000_000:
        return 65_536
    return 131_072


def cells(lists: int) -> int:
    """The coarse quantizer's own cells (√lists, rounded down; 0: a flat quantizer)."""
    return math.isqrt(lists) if lists >= TWO_LEVEL_FROM else 0


def coarse(lists: int) -> str:
    """The coarse quantizer in FAISS's factory syntax: `IVF{lists}` or `IVF{lists}(IVF{c},Flat)`."""
    return f"IVF{lists}(IVF{cells(lists)},Flat)" if cells(lists) else f"IVF{lists}"


def coarse_probe(nprobe: int, lists: int) -> int:
    """Cells of the coarse quantizer searched for the `nprobe` nearest lists: as many as the lists
    (COARSE_PROBE at least), all of them at most."""
    return min(cells(lists), max(COARSE_PROBE, nprobe))


def train_rows(lists: int, n: int, dim: int, budget_bytes: float) -> int:
    """Vectors to train the coarse quantizer (and PQ) on, within `budget_bytes` of memory."""
    per_list = budget_bytes / (1.5 * lists * dim * 4)
    return min(round(max(min(per_list, 100.0), 31.0) * lists), n)


def pq_m(n: int, dim: int, index_bytes: float) -> int:
    """Bytes per PQ code for n vectors of E = dim within an index of `index_bytes`."""
    sizes = [m for m in PQ_SIZES if m < dim and dim % m == 0]  # FAISS's PQ splits E evenly
    if not sizes:
        raise SuiteError(
            f"--index ivf-pq splits each vector into codes of {', '.join(map(str, PQ_SIZES))} "
            f"bytes, of which none divides E = {dim} below it: use --index ivf or exact"
        )
    for m in sizes:
        if n * (m + ID_BYTES) <= index_bytes:
            return m
    smallest = sizes[-1]
    raise SuiteError(
        f"{n} vectors do not fit an index of {index_bytes / 2**30:.1f} GiB even with "
        f"{smallest}-byte codes ({n * (smallest + ID_BYTES) / 2**30:.1f} GiB): allow more"
    )


def bytes_per_vector(kind: str, dim: int, m: int) -> int:
    """Bytes one vector takes in an index of `kind` (centroids aside; m: ivf-pq's code bytes)."""
    sizes = {
        "exact": 4 * dim,
        "faiss-flat": 4 * dim,
        "ivf": 4 * dim + ID_BYTES,
        "ivf-pq": m + ID_BYTES,
    }
    return sizes[kind]
