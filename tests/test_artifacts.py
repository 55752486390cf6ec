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
