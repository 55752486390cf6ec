"""The database as the stages open it (src/evaluation/space.py): C1's partitions read memory-mapped
and streamed tile by tile, never loaded whole; E1 on them answers exactly as on an earlier
version's embeddings.npz; `--index faiss-flat` answers as `exact`; an approximate index is built
once, stated with its recall@10 in every output, and never the paper's tables' default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import E1_evaluate
import E2_visualize
from src.cli import run_stage
from src.method import index as index_mod
from src.partitions import Partitions
from tests._pipeline import as_partitions, build_pipeline, copy_pipeline

TASK = "synthart-style"
TIMES = ("table5.csv", "table6.csv")  # with the searches' ms/query (metrics.json has the rest)
TIMED = ("ms_per_query", "queries_per_s", "seconds")  # wall times (and _min, _max): may differ


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return build_pipeline(tmp_path_factory.mktemp("db"), "synthart").root


@pytest.fixture
def pipe(template, tmp_path):
    return copy_pipeline(template, tmp_path / "p")


def _untimed(x):
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if not k.startswith(TIMED)}
    return [_untimed(v) for v in x] if isinstance(x, list) else x


def _e1(pipe, *extra: str) -> dict:
    """E1's outputs of the task: metrics.json (wall times dropped), every CSV's bytes, and the
    tables' notes (table2.md's lines after the table)."""
    assert run_stage(E1_evaluate.main, pipe.argv("--task", TASK, *extra)) == 0
    out = pipe.results_root / pipe.run / TASK
    found = {"metrics": _untimed(json.loads((out / "metrics.json").read_text()))}
    found |= {p.name: p.read_bytes() for p in sorted(out.glob("*.csv")) if p.name not in TIMES}
    found["notes"] = [x for x in (out / "table2.md").read_text().splitlines() if "|" not in x]
    shutil.rmtree(out)
    return found


def test_e1_on_partitions_equals_e1_on_the_old_embeddings_npz(pipe, monkeypatch):
    """Every metric and every ranked row the same bits, with partitions of 37 rows (the test
    split's database starts inside one, a 7-row rest at the end) and tiles of 40 rows across
    them, and z never loaded whole (the guard fails any whole read)."""
    old = _e1(pipe, "--exclude-query", "--sweep")
    store = as_partitions(pipe, 37)
    assert len(store.parts) == 6 and store.parts[-1].stop - store.parts[-1].start == 7
    monkeypatch.setattr(index_mod, "TILE_ROWS", 40)

    def whole(self, name="z"):
        if name == "z":
            pytest.fail("z was loaded whole")
        return real_column(self, name)

    real_column = Partitions.column
    monkeypatch.setattr(Partitions, "column", whole)
    monkeypatch.setattr(Partitions, "arrays", lambda self: pytest.fail("loaded whole"))
    new = _e1(pipe, "--exclude-query", "--sweep")
    assert new.keys() == old.keys() and len(old) > 5
    for name in old:
        assert new[name] == old[name], name


faiss = pytest.importorskip("faiss")  # pinned in requirements-dev.txt: present in CI


def test_faiss_flat_answers_as_exact_in_e1_with_exclusions_and_head_filtering(pipe):
    """E1 --index faiss-flat: every method's metrics and retrievals equal exact's (kNN, the
    head-filtered kNN, the centroid shift, Backward Search; the query's own image excluded);
    only metrics.json's record of the index differs, and the tables say it is not the paper's."""
    exact = _e1(pipe, "--exclude-query")
    flat = _e1(pipe, "--exclude-query", "--index", "faiss-flat")
    record = flat["metrics"].pop("index")
    notes = flat.pop("notes")
    assert record["kind"] == "faiss-flat"
    assert any("faiss-flat" in n and "not the paper's protocol" in n for n in notes)
    assert not any("index" in n for n in exact.pop("notes"))
    assert flat == exact
    assert "index" not in exact["metrics"]  # the paper's default writes what it always wrote


def test_ivf_is_built_once_and_every_output_states_it_with_its_recall(pipe, caplog):
    """E1 --index ivf (non-paper) builds weights/<run>/index-ivf-test once, records the index and
    its measured recall@10 in metrics.json and the tables' note; E2 reuses it and says so."""
    assert run_stage(E1_evaluate.main, pipe.argv("--task", TASK, "--index", "ivf")) == 0
    folder = pipe.weights_root / pipe.run / "index-ivf-test"
    info = json.loads((folder / "index.json").read_text())
    assert info["kind"] == "ivf" and info["recall_at_10"] >= 0.99
    out = pipe.results_root / pipe.run / TASK
    record = json.loads((out / "metrics.json").read_text())["index"]
    assert record["recall_at_10"] == info["recall_at_10"]
    assert f"recall@10 {info['recall_at_10']:.4f}" in (out / "table2.md").read_text()
    assert "not the paper's protocol" in (out / "table2.md").read_text()
    built = (folder / "index.json").stat().st_mtime_ns
    caplog.clear()
    e2 = pipe.argv("--task", TASK, "--index", "ivf", "--query-id", "0", "--lambdas", "knn,4")
    assert run_stage(E2_visualize.main, e2) == 0
    assert (folder / "index.json").stat().st_mtime_ns == built  # reused, not rebuilt
    assert any(f"recall@10 {info['recall_at_10']:.4f}" in r.getMessage() for r in caplog.records)
