"""The index module: faiss-flat ≡ exact, ivf and ivf-pq calibrated to recall@10 ≥ 0.99, the
shards merged on disk ≡ one index in memory, stale indices refused, FAISS optional, the sizing
rules as autofaiss states them."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
import torch

import src.method.index as index_mod
from src.errors import SuiteError
from src.method import index_sizing as sizing
from src.method.index import build_index, open_index, recall_at_10
from src.partitions import Plan, write_set

faiss = pytest.importorskip("faiss")  # pinned in requirements-dev.txt: present in CI

N, E, CLUSTERS = 12_000, 32, 150


def clustered(start: int, stop: int, seed: int = 0, centres: int = 0) -> dict[str, np.ndarray]:
    """Rows start … stop − 1 of a clustered toy set: noise drawn from (seed, start) around the
    cluster centres drawn from `centres` (fresh queries: another seed, the same centres)."""
    means = np.random.default_rng(centres).normal(size=(CLUSTERS, E)).astype(np.float32)
    rng = np.random.default_rng([seed, start])
    label = rng.integers(CLUSTERS, size=stop - start)
    z = means[label] + 0.45 * rng.normal(size=(stop - start, E)).astype(np.float32)
    return {
        "z": z.astype(np.float32),
        "image": np.array([f"img{i}" for i in range(start, stop)]),
        "split": np.full(stop - start, "test"),
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """12,000 rows in partitions of 5,000 (5,000 + 5,000 + 2,000)."""
    root = tmp_path_factory.mktemp("store")
    return write_set(root / "run", clustered, Plan(N, 5000, {"toy": 0}))


def brute_force(z: np.ndarray, q: np.ndarray, k: int, exclude=None) -> np.ndarray:
    """float64 cosine top-k positions: the oracle."""
    zn = z / np.linalg.norm(z.astype(np.float64), axis=1, keepdims=True)
    qn = q / np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
    s = qn @ zn.T
    if exclude is not None:
        s[np.arange(len(q)), exclude] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def same_sets(a: np.ndarray, b: np.ndarray) -> bool:
    return all(set(x) == set(y) for x, y in zip(a.tolist(), b.tolist(), strict=True))


@pytest.mark.parametrize("database", ["all rows", "every third row"])
def test_faiss_flat_returns_the_exact_top10(store, database):
    rows = None if database == "all rows" else np.arange(0, N, 3)
    z = store.column("z") if rows is None else store.column("z")[rows]
    n = len(z)
    queries = clustered(0, 300, seed=1)["z"]  # fresh queries
    own = np.arange(0, n, n // 200)[:200]  # database rows as queries, each without itself
    exact = open_index("exact", store, rows)
    flat = open_index("faiss-flat", store, rows)
    for q, exclude in ((queries, None), (z[own], own)):
        s_e, r_e = exact.search(torch.from_numpy(q), 10, exclude)
        s_f, r_f = flat.search(torch.from_numpy(q), 10, exclude)
        assert torch.equal(r_e, r_f) and torch.equal(s_e, s_f)  # same rows, same score bits
        assert same_sets(r_e.numpy(), brute_force(z, q, 10, exclude))
        if exclude is not None:
            assert not (r_e.numpy() == exclude[:, None]).any()


@pytest.mark.parametrize("prepared", [True, False])
@pytest.mark.parametrize("tile_rows", [997, 4999, 1 << 18])
def test_exact_over_tiles_equals_one_pass_over_the_whole_database(
    store, monkeypatch, tile_rows, prepared
):
    """Tiles across partitions (a short rest joined to the tile before), each tile's top-k
    merged: the same rows and score bits as cosine_topk over the database in one tensor —
    streamed on every call, or (where it fits) prepared on the first and never read again."""
    from src.method import retrieval
    from src.method.retrieval import cosine_topk

    monkeypatch.setattr(index_mod, "TILE_ROWS", tile_rows)
    monkeypatch.setattr(retrieval, "PREPARED_BYTES", (1 << 30) if prepared else 0)
    rows = np.arange(1, N, 2)  # a database of some rows only: positions ≠ store rows
    z = store.column("z")[rows]
    tiles = list(index_mod.Database(store, rows).tiles(tile_rows))
    assert np.array_equal(np.concatenate([t for _, t in tiles]), z)
    assert all(len(t) >= 16 for _, t in tiles)
    q = torch.from_numpy(clustered(0, 64, seed=4)["z"])
    exclude = torch.arange(0, 64 * 50, 50)
    exact = open_index("exact", store, rows)
    reads = []
    read = index_mod.Database.tiles
    monkeypatch.setattr(index_mod.Database, "tiles", lambda *a: reads.append(1) or read(*a))
    for ex in (None, exclude):
        s1, r1 = exact.search(q, 10, ex)
        s2, r2 = cosine_topk(q, torch.from_numpy(z), 10, ex)
        assert torch.equal(r1, r2) and torch.equal(s1, s2)
    assert len(reads) == (1 if prepared else 2)  # prepared: the partitions read once


@pytest.mark.parametrize("quantizer", ["flat", "two-level"])
def test_ivf_is_calibrated_to_recall_099_and_says_so(store, tmp_path, monkeypatch, quantizer):
    if quantizer == "two-level":  # the centroids in an inverted file of their own, as at ≥ 1 M rows
        monkeypatch.setattr(sizing, "TWO_LEVEL_FROM", 64)
    info = build_index("ivf", store, tmp_path / "ivf", queries=400)
    assert info.recall_at_10 >= 0.99 and info.nprobe < info.nlist  # found before exhaustive
    assert ("(IVF" in info.factory) == (quantizer == "two-level")
    recorded = json.loads((tmp_path / "ivf" / "index.json").read_text())
    assert recorded["recall_at_10"] == info.recall_at_10 and recorded["nprobe"] == info.nprobe
    assert "recall@10" in info.describe() and f"nprobe {info.nprobe}" in info.describe()
    # independently: fresh queries against a float64 brute force
    searcher = open_index("ivf", store, folder=tmp_path / "ivf")
    q = clustered(0, 500, seed=2)["z"]
    got = searcher.search(torch.from_numpy(q), 10)[1].numpy()
    assert recall_at_10(got, brute_force(store.column("z"), q, 10)) >= 0.99
    # the inverted lists are a read-only shared memory map of index.ivfdata
    maps = [line for line in open("/proc/self/maps") if "index.ivfdata" in line]
    assert maps and all(" r--s " in line for line in maps)
    # with nprobe 1 the recall measured is lower: the calibration did not just pick anything
    low = searcher.search(torch.from_numpy(q), 10, nprobe=1)[1].numpy()
    assert recall_at_10(low, brute_force(store.column("z"), q, 10)) < 0.99


def test_ivf_pq_reranked_reaches_the_target(store, tmp_path, monkeypatch):
    monkeypatch.setattr(index_mod, "PQ_INDEX_BUDGET", N * (8 + sizing.ID_BYTES))  # 8-byte codes
    info = build_index("ivf-pq", store, tmp_path / "pq", queries=300)
    assert info.pq_m == 8 and info.recall_at_10 >= 0.99
    assert info.disk_bytes < N * (4 * E + 8)  # smaller than ivf's lists


def test_a_small_database_gets_no_more_lists_than_training_rows(tmp_path):
    """38 rows (E2 --index ivf on a toy collection): the sizing rule asks 32 lists, the sample
    (the rows besides the 19 held out) has 19 — FAISS's k-means refused that with a traceback.
    ivf-pq's 8-bit codes need 256 training rows: refused in one line."""
    small = write_set(tmp_path / "run", clustered, Plan(38, 38, {"toy": 1}))
    info = build_index("ivf", small, tmp_path / "ivf")
    assert sizing.nlist(38) == 32 and info.nlist == 19 and info.recall_at_10 >= 0.99
    with pytest.raises(SuiteError, match="ivf-pq needs at least 256 training rows.*38"):
        build_index("ivf-pq", small, tmp_path / "pq")
    assert not (tmp_path / "pq").exists()  # nothing half-written


def test_the_shards_merged_on_disk_equal_one_index_in_memory(store, tmp_path):
    build_index("ivf", store, tmp_path / "ivf", queries=200)
    on_disk = open_index("ivf", store, folder=tmp_path / "ivf")
    # the same trained index, every row added at once into ordinary in-memory lists
    flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
    memory = faiss.read_index(str(tmp_path / "ivf" / "index.faiss"), flags)
    ivf = faiss.extract_index_ivf(memory)
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(lists, True)
    lists.this.disown()  # the index owns and frees them now
    ivf.ntotal = memory.ntotal = 0
    z = store.column("z")
    unit = torch.nn.functional.normalize(torch.from_numpy(z), dim=1).numpy()  # as the build does
    memory.add_with_ids(unit, np.arange(N))
    assert memory.ntotal == on_disk.index.ntotal == N
    q = clustered(0, 200, seed=3)["z"]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for nprobe in (1, 4, 32):
        p = on_disk.params(nprobe)
        d1, i1 = on_disk.index.search(q, 20, params=p)
        d2, i2 = memory.search(q, 20, params=p)
        assert np.array_equal(i1, i2) and np.array_equal(d1, d2)


def test_an_index_of_other_embeddings_or_rows_is_refused(store, tmp_path):
    build_index("ivf", store, tmp_path / "ivf", queries=200)
    with pytest.raises(SuiteError, match="built from other embeddings or database rows"):
        open_index("ivf", store, np.arange(0, N, 2), tmp_path / "ivf")
    other = write_set(
        tmp_path / "other", lambda a, b: clustered(a, b, seed=9, centres=9), Plan(N, 5000)
    )
    with pytest.raises(SuiteError, match="built from other embeddings") as e:
        open_index("ivf", other, folder=tmp_path / "ivf", build_hint="rebuild with X")
    assert "\n" not in str(e.value) and str(e.value).endswith("rebuild with X")
    with pytest.raises(SuiteError, match="no ivf-pq index at"):
        open_index("ivf-pq", store, folder=tmp_path / "nothing")


def test_a_failed_build_leaves_the_finished_index_as_it_was(store, tmp_path, monkeypatch):
    build_index("ivf", store, tmp_path / "ivf", queries=200)
    before = {p.name: p.read_bytes() for p in (tmp_path / "ivf").iterdir()}

    def broken(*a, **k):
        raise OSError("disk full")

    import faiss.contrib.ondisk

    monkeypatch.setattr(faiss.contrib.ondisk, "merge_ondisk", broken)
    with pytest.raises(OSError, match="disk full"):
        build_index("ivf", store, tmp_path / "ivf", queries=200)
    assert {p.name: p.read_bytes() for p in (tmp_path / "ivf").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ivf"]  # no temporary left


def test_without_faiss_one_line_names_the_install_command(store, monkeypatch):
    real = builtins.__import__

    def no_faiss(name, *a, **k):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(SuiteError, match=r"pip install faiss-cpu==1\.15\.1"):
        open_index("faiss-flat", store)
    assert open_index("exact", store).search(torch.zeros(1, E) + 1, 10)[1].shape == (1, 10)


def test_the_sizing_rules_are_autofaiss_s():
    # get_optimal_nb_clusters, first choice
    assert [sizing.nlist(n) for n in (10_000, 200_000, 999_999)] == [512, 2048, 4096]
    assert [sizing.nlist(n) for n in (1_000_000, 9_999_999, 10_000_000, 300_000_000)] == [
        16_384, 16_384, 65_536, 131_072]  # fmt: skip
    assert sizing.coarse(512) == "IVF512" and sizing.coarse(16_384) == "IVF16384(IVF128,Flat)"
    # get_optimal_train_size: 100 per list, down to 31 when the budget is short
    assert sizing.train_rows(1024, 10**7, 256, 1 << 40) == 102_400
    assert sizing.train_rows(65_536, 10**8, 256, 1 << 30) == 31 * 65_536
    assert sizing.train_rows(1024, 5000, 256, 1 << 40) == 5000
    # get_optimal_quantization: 100 M × 256 in 4 GB → 32-byte codes (42 B/vector allowed)
    assert sizing.pq_m(100_000_000, 256, 4e9) == 32
    assert sizing.pq_m(10_000_000, 256, 4e9) == 128  # below E: never 256 at E = 256
    assert sizing.pq_m(10_000_000, 96, 1e9) == 48 and sizing.pq_m(10_000_000, 96, 5e8) == 32
    with pytest.raises(SuiteError, match="do not fit"):
        sizing.pq_m(10**9, 256, 1e9)
    assert [sizing.bytes_per_vector(k, 256, 32) for k in ("faiss-flat", "ivf", "ivf-pq")] == [
        1024, 1032, 40]  # fmt: skip


def test_the_sizing_rules_at_their_boundaries():
    """Each rule where it turns: the lists at 999 and 1,000 and the coarse cells probed, a budget between 31 and 100 rows per
    list, the codes that just fit, the exact bytes of every kind (autofaiss's formulas, by hand)."""
    assert (
        sizing.coarse(999) == "IVF999" and sizing.coarse(1000) == "IVF1000(IVF31,Flat)"
    )  # ⌊√1000⌋
    # the coarse cells probed: 8 at least, as many as the lists probed, never more than there are
    assert [sizing.coarse_probe(p, 1000) for p in (1, 8, 9, 31, 40)] == [8, 8, 9, 31, 31]
    # 2^round(log2(4·√n)): 4·√388 = 2^6.30 → 64 lists (5·√388 = 2^6.62 would give 128)
    assert [sizing.nlist(n) for n in (0, 1, 16, 388)] == [4, 4, 16, 64]
    # 50 rows per list fit the budget: 1.5 × 1024 lists × 256 × 4 bytes × 50
    assert sizing.train_rows(1024, 10**7, 256, 1.5 * 1024 * 256 * 4 * 50) == 50 * 1024
    assert sizing.train_rows(1024, 10**7, 256, 1.5 * 1024 * 256 * 4 * 50.4) == 51_610
    # 10 M × (32 + 8) bytes fit an index of exactly that size; a byte less: 16 (24 ∤ 256)
    assert sizing.pq_m(10_000_000, 256, 10_000_000 * 40) == 32
    assert sizing.pq_m(10_000_000, 256, 10_000_000 * 40 - 1) == 16
    assert sizing.pq_m(1000, 8, 1e9) == 4  # never the whole E: 8 bytes of 8 would be no code
    with pytest.raises(SuiteError) as e:
        sizing.pq_m(2**30, 256, 2**33)
    assert str(e.value) == (
        "1073741824 vectors do not fit an index of 8.0 GiB even with 4-byte codes (12.0 GiB): "
        "allow more"
    )
    assert [sizing.bytes_per_vector(k, 96, 24) for k in sizing.KINDS] == [384, 384, 392, 32]
    # an E no code size divides below it (odd, or ≤ 4): one line, not min() of nothing
    for dim in (30, 4, 1):
        with pytest.raises(SuiteError) as e:
            sizing.pq_m(1000, dim, 1e9)
        assert str(e.value) == (
            "--index ivf-pq splits each vector into codes of 256, 128, 64, 48, 32, 24, 16, 8, 4 "
            f"bytes, of which none divides E = {dim} below it: use --index ivf or exact"
        )


def test_every_searcher_says_what_it_searches(store):
    """IndexInfo of exact and faiss-flat: the kind, the database's rows, E and fingerprint."""
    from src.method.index import IndexInfo, database_fingerprint

    rows = np.arange(0, N, 3)
    for chosen, n in ((None, N), (rows, len(rows))):
        fingerprint = database_fingerprint(store, chosen)
        exact = open_index("exact", store, chosen)
        assert exact.info == IndexInfo("exact", n, E, fingerprint)
        assert exact.info.describe() == "index exact (exact top-k)"
        flat = open_index("faiss-flat", store, chosen)
        assert flat.info == IndexInfo("faiss-flat", n, E, fingerprint, "Flat", candidates=20)
        assert flat.info.describe() == "index faiss-flat (exact top-k)"
    assert database_fingerprint(store, rows) != database_fingerprint(store, None)


def test_opening_an_index_that_is_not_there_says_what_to_do(store, tmp_path):
    with pytest.raises(SuiteError) as e:
        open_index("hnsw", store)
    assert str(e.value) == "index 'hnsw': choose one of exact, faiss-flat, ivf, ivf-pq"
    with pytest.raises(SuiteError) as e:
        open_index("ivf", store)
    assert str(e.value) == "no ivf index: build it first"
    with pytest.raises(SuiteError) as e:
        open_index("ivf", store, folder=tmp_path / "none")
    assert str(e.value) == f"no ivf index at {tmp_path / 'none'}: build it first"
    (tmp_path / "ivf").mkdir()
    (tmp_path / "ivf" / "index.json").write_text('{"kind": "ivf", "colour": 1}')
    with pytest.raises(SuiteError) as e:
        open_index("ivf", store, folder=tmp_path / "ivf", build_hint="run X")
    assert str(e.value) == f"{tmp_path / 'ivf' / 'index.json'} is damaged: run X"
    (tmp_path / "ivf" / "index.json").write_text('{"kind": "iv')
    with pytest.raises(SuiteError, match=r"index\.json is not readable JSON .*; re-run run X$"):
        open_index("ivf", store, folder=tmp_path / "ivf", build_hint="run X")


def test_open_or_build_builds_once_per_run_and_database(tmp_path):
    from src.method.index import index_folder, open_or_build

    small = write_set(tmp_path / "run", clustered, Plan(600, 600, {"toy": 0}))
    folder = index_folder(tmp_path / "run", "ivf", "test")
    assert folder == tmp_path / "run" / "index-ivf-test"
    said: list[str] = []

    def built() -> int:
        n = sum("building the index" in s for s in said)
        said.clear()
        return n

    assert open_or_build("exact", small, None, folder, said.append).info.kind == "exact"
    assert built() == 0 and not folder.exists()  # exact needs no index
    first = open_or_build("ivf", small, None, folder, said.append)
    assert built() == 1 and first.info.kind == "ivf" and first.info.rows == 600
    assert open_or_build("ivf", small, None, folder, said.append).info == first.info
    assert built() == 0  # found, not built again
    half = np.arange(0, 600, 2)  # another database: built again, for it
    assert open_or_build("ivf", small, half, folder, said.append).info.rows == 300
    assert built() == 1
    (folder / "index.json").write_text("{")  # damaged: built again
    assert open_or_build("ivf", small, half, folder, said.append).info.rows == 300
    assert built() == 1
    info = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps({**info, "kind": "ivf-pq"}))
    assert open_or_build("ivf", small, half, folder, said.append).info.kind == "ivf"
    assert built() == 1  # an index of another kind: built again


def test_in_memory_search_ranks_any_tensor_as_the_brute_force_does():
    from src.method.index import in_memory_search

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(300, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    q = torch.randn(7, 8, generator=gen)
    searcher = in_memory_search(z)
    assert searcher.info.kind == "exact" and searcher.info.rows == 300 and searcher.info.dim == 8
    _, found = searcher.search(q, 5)
    want = brute_force(z.detach().numpy().astype(np.float32), q.numpy(), 5)
    assert np.array_equal(found.numpy(), want)
