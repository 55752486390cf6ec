"""The shared plumbing: atomic writes, safe loading, stage-order errors, the registry, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.artifacts import load_npz, load_torch, require, save_npz, save_torch, write_json
from src.atomic import atomic_dir, atomic_path
from src.cli import resolve_device, run_stage
from src.errors import SuiteError
from src.tasks import DATASETS, TASKS, default_run, get_dataset, get_task


def test_atomic_path_keeps_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text().strip().endswith("}")
    assert '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left


def test_atomic_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "ds"
    with atomic_dir(out) as tmp:
        (tmp / "x.txt").write_text("first")
    assert (out / "x.txt").read_text() == "first"
    with pytest.raises(ValueError), atomic_dir(out) as tmp:
        (tmp / "x.txt").write_text("second")
        raise ValueError("reader failed")
    assert (out / "x.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    with atomic_dir(out) as tmp:
        (tmp / "y.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["y.txt"]


def test_npz_round_trip_and_no_pickle(tmp_path):
    save_npz(tmp_path / "e.npz", z=np.ones((2, 3), np.float32), image=np.array(["a.png", "b.png"]))
    d = load_npz(tmp_path / "e.npz", "C1")
    assert d["z"].dtype == np.float32 and list(d["image"]) == ["a.png", "b.png"]
    np.savez(tmp_path / "bad.npz", obj=np.array([{"x": 1}], dtype=object))
    with pytest.raises(SuiteError, match="bad.npz"):
        load_npz(tmp_path / "bad.npz", "C1")["obj"]


class _Payload:
    pass


def test_torch_load_refuses_arbitrary_objects(tmp_path):
    save_torch(tmp_path / "ok.pt", {"model": {"w": torch.zeros(2)}, "config": {"e": 3}})
    assert load_torch(tmp_path / "ok.pt", "B1")["config"] == {"e": 3}
    torch.save(_Payload(), tmp_path / "evil.pt")  # loading it would run pickle code
    with pytest.raises(SuiteError, match="cannot be loaded safely"):
        load_torch(tmp_path / "evil.pt", "B1")


def test_require_names_the_stage(tmp_path):
    with pytest.raises(
        SuiteError, match=r"missing\.csv not found: run A1_preprocess.py --dataset cub first"
    ):
        require(tmp_path / "missing.csv", "A1_preprocess.py --dataset cub")


def test_registry_lookups_and_default_runs():
    assert get_task("wikiart-multi").conditions == ("style", "genre")
    assert get_task("cub-bird").default_lambda == 0.51
    assert all(t.dataset in DATASETS for t in TASKS.values())
    assert all(set(t.conditions) <= set(DATASETS[t.dataset].attributes) for t in TASKS.values())
    with pytest.raises(SuiteError, match="choose one of: cub-bird"):
        get_task("cub")
    with pytest.raises(SuiteError, match="unknown dataset"):
        get_dataset("imagenet")
    assert default_run("cub") == "cub_convnext_base_e256_ft"
    assert get_dataset("apy").square_resize and not get_dataset("cub").square_resize


def test_run_stage_turns_suite_errors_into_one_line(capsys):
    def failing(argv):
        raise SuiteError("queries.csv not found: run A2 first")

    assert run_stage(failing, []) == 2
    err = capsys.readouterr().err
    assert err == "error: queries.csv not found: run A2 first\n"


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda"}
    with pytest.raises(SuiteError, match="not a device name"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(SuiteError, match="--device cpu"):
            resolve_device("cuda")


def test_json_takes_numpy_values_and_paths_and_names_what_it_cannot(tmp_path):
    from src.artifacts import read_json

    write_json(
        tmp_path / "m.json",
        {"f": np.float32(0.5), "i": np.int64(7), "a": np.arange(3), "p": tmp_path / "x"},
    )
    assert read_json(tmp_path / "m.json", "E1") == {
        "f": 0.5, "i": 7, "a": [0, 1, 2], "p": str(tmp_path / "x")}  # fmt: skip
    with pytest.raises(TypeError) as e:
        write_json(tmp_path / "s.json", {"s": {1, 2}})
    assert str(e.value) == "not JSON serialisable: set"
    assert not (tmp_path / "s.json").exists()


def test_npy_round_trip_memory_mapped_read_only_on_request_and_never_pickled(tmp_path):
    from src.artifacts import load_npy, save_npy

    z = np.arange(12, dtype=np.float32).reshape(4, 3)
    save_npy(tmp_path / "z.npy", z)
    loaded = load_npy(tmp_path / "z.npy", "C1")
    assert not isinstance(loaded, np.memmap) and np.array_equal(loaded, z)
    mapped = load_npy(tmp_path / "z.npy", "C1", mmap=True)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    assert np.array_equal(mapped, z)
    with pytest.raises(ValueError):  # an object array would be pickled: refused, nothing written
        save_npy(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.npy"]
    np.save(tmp_path / "o.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "t.npy").write_bytes((tmp_path / "z.npy").read_bytes()[:100])  # truncated
    for name in ("o.npy", "t.npy"):
        for mmap in (False, True):
            with pytest.raises(SuiteError) as e:
                load_npy(tmp_path / name, "C1", mmap=mmap)
            said = str(e.value)
            assert said.startswith(f"{tmp_path / name} is not a readable .npy file (ValueError: ")
            assert said.endswith("); re-run C1") and "\n" not in said
    with pytest.raises(SuiteError, match=r"^\S*nothing\.npy not found: run C1 first$"):
        load_npy(tmp_path / "nothing.npy", "C1")


def test_a_files_sha256_is_the_hash_of_all_its_bytes(tmp_path):
    import hashlib

    from src.artifacts import file_sha256

    data = np.random.default_rng(0).bytes(3 * 2**20 + 5)  # several 1 MiB blocks and a rest
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    (tmp_path / "e").write_bytes(b"")
    assert file_sha256(tmp_path / "e") == hashlib.sha256(b"").hexdigest()
