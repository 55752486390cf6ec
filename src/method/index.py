"""Where the database is searched: our exact top-k, or a FAISS index where it wins.

    exact        method/retrieval.py's cosine top-k, tile by tile over the partitions (default)
    faiss-flat   FAISS IndexFlatIP in memory: the same top-k (candidates re-scored as exact does)
    ivf          IVF-Flat, built once per run and database, on disk, memory-mapped
    ivf-pq       IVF-PQ (codes of index_sizing.pq_m bytes), likewise

ivf and ivf-pq are built shard by shard (one per partition: each shard a copy of the trained
empty index holding that partition's rows), merged on disk into FAISS's OnDiskInvertedLists
(faiss.contrib.ondisk.merge_ondisk) and read back memory-mapped, read-only. Their candidates are
re-scored exactly from the float32 partitions, with the same BLAS products as the exact search,
so a row's score is the same bits whichever index found it. `nprobe` (and for ivf-pq the number of
candidates) is calibrated at build time on held-out queries — database rows left out of the
training sample, each searched without itself — to recall@10 ≥ 0.99 against exact; the index
folder's index.json records the settings, the recall measured and the fingerprint of the
partitions it was built from, so an index of other embeddings is refused. Sizes: index_sizing.py.

FAISS (faiss-cpu) is optional: imported only here, when a FAISS kind is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from src.artifacts import read_json, read_json_or_none, write_json
from src.atomic import atomic_dir
from src.errors import SuiteError
from src.method import index_sizing as sizing
from src.method import retrieval
from src.method.retrieval import MIN_ROWS, Boost, RunningTopK, tiles
from src.partitions import Partitions, in_memory, release

log = logging.getLogger(__name__)

KINDS = sizing.KINDS
FAISS_INSTALL = "pip install faiss-cpu==1.15.1 (faiss-gpu for CUDA 12)"
TARGET_RECALL = 0.99  # recall@10 the calibration asks of ivf and ivf-pq
CALIBRATION_QUERIES = 1000
TRAIN_BUDGET = 1 << 30  # bytes of training sample (index_sizing.train_rows)
PQ_INDEX_BUDGET = 4 << 30  # bytes of an ivf-pq index (index_sizing.pq_m)
TILE_ROWS = 1 << 16  # database rows read at once (64 MiB at E = 256)
ADD_ROWS = 1 << 16  # rows added to a shard at once
RERANK_BLOCK = 64  # queries re-scored together (one product over their candidates' union)
PQ_CODEBOOK = 256  # centroids of each 8-bit PQ sub-quantizer: its k-means needs as many rows
PQ_CANDIDATES = (4, 16, 64)  # ivf-pq candidates per query, × k, tried by the calibration


def faiss_module():
    """FAISS, or the one line saying how to install it; its threads follow the stage's."""
    try:
        import faiss
    except ImportError:
        raise SuiteError(
            f"this index needs FAISS, which is not installed: {FAISS_INSTALL}"
        ) from None
    faiss.omp_set_num_threads(torch.get_num_threads())
    return faiss


@dataclass(frozen=True)
class IndexInfo:
    """What an index is, what it was built from and how well it finds the exact top-10."""

    kind: str
    rows: int  # database rows it holds
    dim: int
    fingerprint: str  # of the partitions and the database rows (`database_fingerprint`)
    factory: str = ""  # FAISS's description, e.g. IVF16384(IVF128,Flat),Flat
    nlist: int = 0
    pq_m: int = 0
    nprobe: int = 0
    candidates: int = 0  # per query and per 10 results, re-scored exactly
    recall_at_10: float | None = None  # measured against exact on the calibration queries
    calibration_queries: int = 0
    build_seconds: float = 0.0
    disk_bytes: int = 0

    def describe(self) -> str:
        """One line for every output that used the index."""
        if self.kind in ("exact", "faiss-flat"):
            return f"index {self.kind} (exact top-k)"
        return (
            f"index {self.kind} ({self.factory}, nprobe {self.nprobe}, {self.candidates} "
            f"candidates per 10 re-scored exactly): recall@10 {self.recall_at_10:.4f} against "
            f"exact on {self.calibration_queries} held-out queries"
        )


def database_fingerprint(store: Partitions, rows: np.ndarray | None) -> str:
    """The partitions' fingerprint and which of their rows form the database."""
    h = hashlib.sha256(store.fingerprint.encode())
    if rows is not None:
        h.update(np.ascontiguousarray(rows, dtype=np.int64).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The database: rows of the partitions, read tile by tile


class Database:
    """The rows of `store` a search runs over (`rows`, sorted store rows; None: all), addressed
    by position 0 … n − 1, as method/retrieval.py's database is."""

    def __init__(self, store: Partitions, rows: np.ndarray | None = None):
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64)
            if len(rows) and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= len(store)):
                raise SuiteError("database rows must be increasing store rows")
        self.store, self.rows = store, rows
        self.n = len(store) if rows is None else len(rows)
        self.dim = store.dim
        self.fingerprint = database_fingerprint(store, rows)

    def _mapped(self) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(first position, a partition's memory-mapped rows, the database's rows among them or
        None for all) per partition holding database rows."""
        for i, part in enumerate(self.store.parts):
            if self.rows is None:
                yield part.start, self.store.z(i), None
                continue
            lo, hi = np.searchsorted(self.rows, [part.start, part.stop])
            if hi > lo:
                yield int(lo), self.store.z(i), self.rows[lo:hi] - part.start

    def parts(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first position, float32 rows) per partition: memory-mapped, or the selected rows."""
        for pos, z, local in self._mapped():
            yield pos, (z if local is None else z[local])

    def tiles(self, tile_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first position, rows) in tiles of ≥ tile_rows rows (default TILE_ROWS; the last
        ≥ MIN_ROWS when it can be: a short rest joins the tile before), gathered across
        partitions, each a copy in memory: the mapped pages it was read from are released
        (`partitions.release`), so a pass over the database holds about one tile, not N rows."""
        tile_rows = tile_rows or TILE_ROWS
        buf: list[np.ndarray] = []
        read: list[np.ndarray] = []  # the mapped ranges the tile in `buf` was read from
        start = size = 0
        for pos, z, local in self._mapped():
            n = len(z) if local is None else len(local)
            for a in range(0, n, tile_rows):
                if local is None:
                    buf.append(z[a : a + tile_rows])
                    read.append(buf[-1])
                else:
                    at = local[a : a + tile_rows]
                    buf.append(z[at])
                    read.append(z[at[0] : at[-1] + 1])
                size += len(buf[-1])
                if size >= tile_rows and self.n - (pos + a + len(buf[-1])) >= MIN_ROWS:
                    tile = np.concatenate(buf)
                    for r in read:
                        release(r)
                    yield start, tile
                    start, buf, read, size = start + size, [], [], 0
        if buf:
            tile = np.concatenate(buf)
            for r in read:
                release(r)
            yield start, tile

    def take(self, positions: np.ndarray) -> np.ndarray:
        """float32 rows at database positions (any order)."""
        positions = np.asarray(positions, dtype=np.int64)
        return self.store.take(positions if self.rows is None else self.rows[positions])


def _normalized(x: np.ndarray | Tensor) -> Tensor:
    """Rows scaled to unit length, as cosine_topk does (F.normalize: each row on its own)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.array(x, dtype=np.float32))  # a copy: memory maps are read-only
    return F.normalize(x.float(), dim=1)


def _normalize_in_place(x: np.ndarray, block: int = ADD_ROWS) -> np.ndarray:
    """`_normalized` over a large writable array, a block at a time (no second copy of it)."""
    for a in range(0, len(x), block):
        t = torch.from_numpy(x[a : a + block])
        t.copy_(F.normalize(t, dim=1))
    return x


def _exclusions(exclude: Tensor | np.ndarray | None, n_q: int) -> np.ndarray | None:
    if exclude is None:
        return None
    ex = np.asarray(torch.as_tensor(exclude).cpu(), dtype=np.int64)
    if ex.shape != (n_q,):
        raise SuiteError(f"exclude must have shape ({n_q},)")
    return ex


# ---------------------------------------------------------------------------------------------
# Searchers


class Searcher:
    """An index ready to search: `search(queries Q×E, k, exclude)` → (scores Q×k, positions
    Q×k) as cosine_topk gives them; `info` says what it is."""

    info: IndexInfo

    def __init__(self, db: Database, info: IndexInfo):
        self.db, self.info = db, info

    def search(
        self,
        queries: Tensor,
        k: int = 10,
        exclude: Tensor | np.ndarray | None = None,
        boost: Boost | None = None,
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class ExactSearch(Searcher):
    """Ours: retrieval.py's running top-k (`RunningTopK`) fed the database tile by tile: from
    its rows made ready once (`retrieval.Prepared`) where they fit retrieval.PREPARED_BYTES,
    else streamed from the partitions on every call."""

    def __init__(self, db: Database, info: IndexInfo):
        super().__init__(db, info)
        self.ready: retrieval.Prepared | None = None
        self.lock = threading.Lock()  # the explorer searches side by side: one prepares

    def prepared(self, screen: bool) -> retrieval.Prepared | None:
        """The database normalised (and copied for the screen) on the first call, if it fits."""
        with self.lock:
            if self.ready is None and retrieval.fits(self.db.n, self.db.dim, screen):
                parts = ((s, torch.from_numpy(z)) for s, z in self.db.tiles())
                self.ready = retrieval.Prepared.of(parts, self.db.n, self.db.dim, screen)
        return self.ready

    def search(self, queries, k=10, exclude=None, boost=None):
        q = torch.as_tensor(queries, dtype=torch.float32)
        ex = _exclusions(exclude, len(q))
        n_keep = self.db.n - (ex is not None)
        if not 1 <= k <= n_keep:
            raise SuiteError(f"k={k} but the database offers {n_keep} rows per query")
        ex_t = None if ex is None else torch.from_numpy(ex).to(q.device)
        top = RunningTopK(q, k, ex_t, boost)
        if (ready := self.prepared(top.screen)) is not None:
            ready.feed(top)
            return top.result()
        for start, z in self.db.tiles():
            rows = torch.from_numpy(z)  # a tile is a copy in memory (Database.tiles)
            for a, b in tiles(len(rows), retrieval.TILE_ROWS):  # as cosine_topk cuts a database
                top.add(rows[a:b], start + a)
        return top.result()


def rerank(
    db: Database, queries: Tensor, candidates: np.ndarray, k: int, exclude: np.ndarray | None
) -> tuple[Tensor, Tensor]:
    """The exact top-k of each query among its candidates (positions, -1 for none), scored from
    the float32 rows with BLAS products of ≥ MIN_ROWS rows and columns — the same bits as
    cosine_topk's scores of those rows."""
    q = F.normalize(torch.as_tensor(queries, dtype=torch.float32), dim=1)
    n_q, c = candidates.shape
    scores = torch.full((n_q, k), -float("inf"))
    found = torch.full((n_q, k), -1, dtype=torch.long)
    for b0 in range(0, n_q, RERANK_BLOCK):
        cand = candidates[b0 : b0 + RERANK_BLOCK]
        union, inv = np.unique(np.where(cand >= 0, cand, 0), return_inverse=True)
        d = _normalized(db.take(union))
        pad = max(0, MIN_ROWS - len(d))
        d = torch.cat([d, d.new_zeros(pad, d.shape[1])])
        qb = q[b0 : b0 + RERANK_BLOCK]
        qb = torch.cat([qb, qb.new_zeros(max(0, MIN_ROWS - len(qb)), qb.shape[1])])
        s = (qb @ d.T)[: len(cand)].gather(1, torch.from_numpy(inv.reshape(cand.shape)))
        drop = cand < 0
        if exclude is not None:
            drop |= cand == exclude[b0 : b0 + RERANK_BLOCK, None]
        s = s.masked_fill(torch.from_numpy(drop), -float("inf"))
        top, at = s.topk(min(k, c), dim=1)
        rows = torch.from_numpy(cand).gather(1, at).masked_fill(top == -float("inf"), -1)
        scores[b0 : b0 + len(cand), : top.shape[1]] = top
        found[b0 : b0 + len(cand), : top.shape[1]] = rows
    return scores, found


class FaissSearch(Searcher):
    """A FAISS index proposes candidates; `rerank` orders them exactly."""

    def __init__(self, db: Database, info: IndexInfo, index):
        super().__init__(db, info)
        self.index = index

    def params(self, nprobe: int):
        """FAISS's search parameters at `nprobe` lists (none for a flat index)."""
        faiss = faiss_module()
        if self.info.nlist == 0:
            return None
        quantizer = None
        if sizing.cells(self.info.nlist):  # the centroids' own inverted file
            quantizer = faiss.SearchParametersIVF(
                nprobe=sizing.coarse_probe(nprobe, self.info.nlist)
            )
        return faiss.SearchParametersIVF(nprobe=nprobe, quantizer_params=quantizer)

    def candidates(self, q: Tensor, count: int, nprobe: int) -> np.ndarray:
        _, ids = self.index.search(q.numpy(), count, params=self.params(nprobe))
        return ids

    def search(self, queries, k=10, exclude=None, boost=None, *, nprobe=None, candidates=None):
        if boost is not None:  # FAISS ranks by cosine alone: a boosted ranking is searched exactly
            return ExactSearch(self.db, self.info).search(queries, k, exclude, boost)
        q = torch.as_tensor(queries, dtype=torch.float32)
        ex = _exclusions(exclude, len(q))
        per10 = candidates or self.info.candidates or 20
        count = min(self.db.n, -(-per10 * k // 10) + (ex is not None))
        cand = self.candidates(_normalized(q), count, nprobe or self.info.nprobe)
        return rerank(self.db, q, cand, k, ex)  # normalises q as cosine_topk does: once


def _flat(db: Database) -> FaissSearch:
    faiss = faiss_module()
    index = faiss.IndexFlatIP(db.dim)
    for _, z in db.tiles():
        index.add(_normalized(z).numpy())
    info = IndexInfo("faiss-flat", db.n, db.dim, db.fingerprint, "Flat", candidates=20)
    return FaissSearch(db, info, index)


# ---------------------------------------------------------------------------------------------
# Building ivf and ivf-pq: trained once, shard by shard, merged on disk


INDEX, IVFDATA, INFO = "index.faiss", "index.ivfdata", "index.json"


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """FAISS's C++ prints progress notes (the on-disk file's size, its path) to stdout: hidden."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _sample(n: int, count: int, rng: np.random.Generator, avoid: np.ndarray) -> np.ndarray:
    """`count` sorted positions of 0 … n − 1 not in `avoid`."""
    pool = np.setdiff1d(np.arange(n, dtype=np.int64), avoid, assume_unique=True)
    return np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False))


def _train(db: Database, kind: str, seed: int, held_out: np.ndarray):
    """The trained, empty index: coarse centroids by FAISS's two-level k-means, PQ codebooks."""
    faiss = faiss_module()
    from faiss.contrib.clustering import two_level_clustering

    pool = db.n - len(held_out)  # rows the sample can be drawn from
    lists = min(sizing.nlist(db.n), pool)  # k-means: a training row per list (small databases)
    if kind == "ivf-pq" and pool < PQ_CODEBOOK:
        raise SuiteError(
            f"--index ivf-pq needs at least {PQ_CODEBOOK} training rows for its 8-bit codes; this "
            f"database has {db.n} ({pool} besides the held-out queries): use --index ivf or exact"
        )
    m = sizing.pq_m(db.n, db.dim, PQ_INDEX_BUDGET) if kind == "ivf-pq" else 0
    factory = f"{sizing.coarse(lists)},{f'PQ{m}x8np' if m else 'Flat'}"  # np: no polysemous training (unused, slow)
    rng = np.random.default_rng(seed)
    train = _sample(db.n, sizing.train_rows(lists, db.n, db.dim, TRAIN_BUDGET), rng, held_out)
    xt = _normalize_in_place(db.take(train))  # the sample: the build's largest array
    index = faiss.index_factory(db.dim, factory, faiss.METRIC_L2)  # L2 on unit vectors ≡ cosine
    ivf = faiss.extract_index_ivf(index)
    if sizing.cells(lists):  # two levels: √nlist coarse clusters, then each split up
        centroids, _ = two_level_clustering(xt, sizing.cells(lists), lists, seed=seed)
        quantizer = faiss.downcast_index(ivf.quantizer)  # an inverted file of the centroids
        quantizer.cp.seed = seed
        quantizer.train(xt)  # its cells: k-means of the sample (of the centroids: unbalanced)
        quantizer.add(centroids)
        quantizer.nprobe = sizing.COARSE_PROBE  # how rows are put in their lists when added
    else:
        ivf.cp.seed = seed
    index.train(xt)  # the quantizer is kept when trained and full; PQ codebooks on residuals
    return index, factory, lists, m


def build_index(
    kind: str,
    store: Partitions,
    folder: str | Path,
    rows: np.ndarray | None = None,
    *,
    seed: int = 0,
    queries: int = CALIBRATION_QUERIES,
    target: float = TARGET_RECALL,
    progress: Callable[[str], None] = log.info,
) -> IndexInfo:
    """Build an ivf or ivf-pq index of the database `rows` of `store` in `folder` (written
    aside and swapped in whole), calibrate it and return its IndexInfo (also in index.json)."""
    if kind not in ("ivf", "ivf-pq"):
        raise SuiteError(f"only ivf and ivf-pq are built ahead; {kind!r} needs no build")
    faiss = faiss_module()
    from faiss.contrib.ondisk import merge_ondisk

    db = Database(store, rows)
    if db.n < 2:
        raise SuiteError(f"an index needs at least 2 database rows, not {db.n}")
    t0 = time.time()
    rng = np.random.default_rng(seed + 1)
    held_out = np.sort(rng.choice(db.n, size=min(queries, db.n // 2), replace=False))
    with atomic_dir(Path(folder)) as tmp:
        index, factory, lists, m = _train(db, kind, seed, held_out)
        progress(f"{kind}: trained {factory} on {db.n} rows' sample ({time.time() - t0:.0f} s)")
        faiss.write_index(index, str(tmp / "trained.index"))
        shards = []
        for i, (start, z) in enumerate(db.parts()):
            shard = faiss.read_index(str(tmp / "trained.index"))
            for a in range(0, len(z), ADD_ROWS):
                ids = np.arange(start + a, start + min(a + ADD_ROWS, len(z)), dtype=np.int64)
                shard.add_with_ids(_normalized(z[a : a + ADD_ROWS]).numpy(), ids)
            shards.append(str(tmp / f"shard-{i:05d}.index"))
            faiss.write_index(shard, shards[-1])
            del shard
            progress(f"{kind}: shard {i + 1} written ({start + len(z)} of {db.n} rows)")
        empty = faiss.read_index(str(tmp / "trained.index"))
        with _quiet_stdout():
            merge_ondisk(empty, shards, str(tmp / IVFDATA))
        faiss.write_index(empty, str(tmp / INDEX))
        del empty
        for f in [*shards, str(tmp / "trained.index")]:
            os.unlink(f)
        built = time.time() - t0
        info = IndexInfo(kind, db.n, db.dim, db.fingerprint, factory, lists, m,
                         build_seconds=round(built, 1))  # fmt: skip
        searcher = FaissSearch(db, info, _read(tmp))
        info = calibrate(searcher, held_out, target)
        del searcher  # unmaps the file before the folder is swapped in
        disk = sum(f.stat().st_size for f in tmp.iterdir())
        info = IndexInfo(**{**asdict(info), "disk_bytes": disk})
        write_json(tmp / INFO, asdict(info))
    progress(f"{kind}: built in {built:.0f} s, {disk / 2**20:.0f} MiB; {info.describe()}")
    return info


def _read(folder: Path):
    """The merged index, its inverted lists memory-mapped read-only from index.ivfdata beside it.

    Not IO_FLAG_MMAP: an OnDiskInvertedLists index maps its .ivfdata itself (faiss issue 2271),
    and with that flag FAISS 1.15.1 crashes on search."""
    faiss = faiss_module()
    flags = faiss.IO_FLAG_READ_ONLY | faiss.IO_FLAG_ONDISK_SAME_DIR
    with _quiet_stdout():
        return faiss.read_index(str(folder / INDEX), flags)


def calibrate(
    searcher: FaissSearch, held_out: np.ndarray, target: float = TARGET_RECALL
) -> IndexInfo:
    """The smallest nprobe (then, for ivf-pq, the fewest candidates) whose recall@10 against
    exact reaches `target` on the held-out database rows, each searched without itself; the
    best setting found when none does (and a warning)."""
    db, info = searcher.db, searcher.info
    q = torch.from_numpy(db.take(held_out))
    truth = ExactSearch(db, info).search(q, 10, held_out)[1].numpy()
    per10 = [10 * c for c in PQ_CANDIDATES] if info.kind == "ivf-pq" else [10]
    best = (-1.0, 0, 0)
    nprobe = 1
    while True:
        for c in per10:
            got = searcher.search(q, 10, held_out, nprobe=nprobe, candidates=c)[1].numpy()
            recall = recall_at_10(got, truth)
            best = max(best, (recall, -nprobe, -c))
            if recall >= target:
                return IndexInfo(**{**asdict(info), "nprobe": nprobe, "candidates": c,
                                    "recall_at_10": recall, "calibration_queries": len(q)})  # fmt: skip
        if nprobe >= info.nlist:
            break
        nprobe = min(2 * nprobe, info.nlist)
    recall, nprobe, c = best[0], -best[1], -best[2]
    log.warning("%s reaches recall@10 %.4f at best (nprobe %d), below %.2f: prefer exact",
                info.kind, recall, nprobe, target)  # fmt: skip
    return IndexInfo(**{**asdict(info), "nprobe": nprobe, "candidates": c,
                        "recall_at_10": recall, "calibration_queries": len(q)})  # fmt: skip


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    """|found ∩ truth| / 10 per query (the top-10 sets), averaged: FAISS's 10-intersection."""
    hits = (found[:, :10, None] == truth[:, None, :10]).any(-1) & (found[:, :10] >= 0)
    return float(hits.sum() / truth[:, :10].size)


# ---------------------------------------------------------------------------------------------
# Opening


def open_index(
    kind: str,
    store: Partitions,
    rows: np.ndarray | None = None,
    folder: str | Path | None = None,
    build_hint: str = "build it first",
) -> Searcher:
    """A searcher of `kind` over the database `rows` of `store`; ivf and ivf-pq are read from
    `folder`, refused in one line when missing or built from other embeddings."""
    if kind not in KINDS:
        raise SuiteError(f"index {kind!r}: choose one of {', '.join(KINDS)}")
    db = Database(store, rows)
    if kind == "exact":
        return ExactSearch(db, IndexInfo("exact", db.n, db.dim, db.fingerprint))
    if kind == "faiss-flat":
        return _flat(db)
    if folder is None or not (Path(folder) / INFO).exists():
        raise SuiteError(f"no {kind} index{f' at {folder}' if folder else ''}: {build_hint}")
    folder = Path(folder)
    recorded = read_json(folder / INFO, build_hint)
    try:
        info = IndexInfo(**recorded)
    except TypeError:
        raise SuiteError(f"{folder / INFO} is damaged: {build_hint}") from None
    if info.kind != kind or info.fingerprint != db.fingerprint:
        raise SuiteError(
            f"the {info.kind} index at {folder} was built from other embeddings or database rows "
            f"than these (C1 or the database changed since): {build_hint}"
        )
    return FaissSearch(db, info, _read(folder))


def in_memory_search(z: np.ndarray | Tensor) -> Searcher:
    """The exact search over N×E rows held in memory (a benchmark's or a test's database)."""
    z = np.asarray(torch.as_tensor(z).detach().cpu(), dtype=np.float32)
    n = len(z)
    store = in_memory({"z": z, "image": np.arange(n).astype(str), "split": np.full(n, "test")})
    return open_index("exact", store)


def open_or_build(
    kind: str,
    store: Partitions,
    rows: np.ndarray | None,
    folder: str | Path,
    progress: Callable[[str], None] = log.info,
) -> Searcher:
    """`open_index`, an ivf or ivf-pq index built first (`build_index`) when `folder` holds none,
    or one of other embeddings or database rows (C1 re-ran): built once per run and database."""
    if kind in ("ivf", "ivf-pq"):
        recorded = read_json_or_none(Path(folder) / INFO)
        recorded = recorded if isinstance(recorded, dict) else {}  # none, damaged: built again
        if recorded.get("kind") != kind or recorded.get("fingerprint") != database_fingerprint(
            store, rows
        ):
            progress(f"{kind}: building the index at {folder} (once per run and database)")
            build_index(kind, store, folder, rows, progress=progress)
    return open_index(kind, store, rows, folder)


def index_folder(run_dir: str | Path, kind: str, database: str) -> Path:
    """weights/<run>/index-<kind>-<database>: where a run's ivf or ivf-pq index lives."""
    return Path(run_dir) / f"index-{kind}-{database}"
