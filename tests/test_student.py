"""The student (SPEC §6): its input, its shape, distillation from the teacher, D1's files."""

from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch
from torch import nn

import D1_train_distill as d1
from src.artifacts import save_torch
from src.errors import SuiteError
from src.hints import hint
from src.method.backward_search import backward_search
from src.method.student import (
    HIDDEN,
    DistillConfig,
    Student,
    batch_starts,
    distill,
    load_student,
    student_input,
    student_lambdas,
    student_path,
)
from tests._search import toy_world

CLASSES = {"style": 5, "genre": 3}


@pytest.fixture(scope="module")
def world():
    z, _, heads = toy_world(700, 16, tuple(CLASSES.items()), 3, 500, 120)
    return z[:500], z[500:], {a: copy.deepcopy(h) for a, h in heads.items()}


def test_input_is_z0_then_one_hots_in_task_order():
    z0 = torch.tensor([[0.5, -0.5], [0.25, 0.75]])
    cond = {"genre": torch.tensor([2, 0]), "style": torch.tensor([1, 4])}
    x = student_input(z0, cond, {"style": 5, "genre": 3})
    assert x.tolist() == [
        [0.5, -0.5, 0, 1, 0, 0, 0, 0, 0, 1],
        [0.25, 0.75, 0, 0, 0, 0, 1, 1, 0, 0],
    ]


@pytest.mark.parametrize(
    "cond, message",
    [
        ({"style": torch.tensor([5, 0])}, "out of range"),
        ({"style": torch.tensor([-1, 0])}, "out of range"),
        ({"style": torch.tensor([0])}, "shape"),
        ({"genre": torch.tensor([0, 0])}, "trained for"),
    ],
)
def test_input_rejects_bad_conditions(cond, message):
    with pytest.raises(SuiteError, match=message):
        student_input(torch.zeros(2, 4), cond, {"style": 5})


def test_architecture_matches_spec():
    s = Student(16, {"style": 5, "genre": 3})
    kinds = [type(m) for m in s.net]
    assert kinds == [
        nn.Linear,
        nn.Sigmoid,
        nn.BatchNorm1d,
        nn.Linear,
        nn.Sigmoid,
        nn.BatchNorm1d,
        nn.Linear,
        nn.Tanh,
    ]
    assert (s.net[0].in_features, s.net[0].out_features) == (16 + 8, 128)
    assert (s.net[3].in_features, s.net[6].out_features) == (128, 16)


def test_distill_learns_the_teacher(world, caplog):
    z_train, z_test, heads = world
    caplog.set_level("INFO", logger="src.method.student")
    paces = []  # (seconds per batch, epochs logged by then): D1's estimate comes in epoch 1

    def on_pace(seconds: float) -> None:
        paces.append((seconds, sum(": mse " in m for m in caplog.messages)))

    student, log = distill(
        heads,
        z_train,
        ["style"],
        CLASSES,
        1.0,
        DistillConfig(epochs=6, batch_size=100),
        seed=0,
        progress=True,  # off a terminal: a few log lines, and the pace once
        on_pace=on_pace,
    )
    assert [r["epoch"] for r in log] == list(range(1, 7))
    assert len(paces) == 1 and paces[0][0] > 0 and paces[0][1] == 0
    assert log[-1]["mse"] < 0.5 * log[0]["mse"]
    assert all(0.9 <= r["teacher_satisfied"] <= 1.0 for r in log)
    assert not student.training
    # D1's log (its _log.csv): one row per epoch, each field what it says
    assert all(
        set(r) == {"epoch", "mse", "l1_to_z0", "loss", "teacher_iterations", "teacher_satisfied",
                   "seconds"} for r in log
    )  # fmt: skip
    assert all(1 <= r["teacher_iterations"] <= 100 and r["seconds"] > 0 for r in log)
    assert all(r["loss"] == r["mse"] for r in log)  # student_reg 0
    lines = [m for m in caplog.messages if ": mse " in m]
    assert len(lines) == 6
    assert re.fullmatch(
        r"D1 epoch 6/6: mse \d\.\d{5}, teacher \d+\.\d iterations, \d+\.\d% satisfied \(\d+\.\d s\)",
        lines[-1],
    )
    assert (
        f"mse {log[-1]['mse']:.5f}, teacher {log[-1]['teacher_iterations']:.1f} iterations"
        in lines[-1]
    )
    # on unseen queries, the student moves towards the teacher's answer and meets the condition
    g = torch.Generator().manual_seed(5)
    cond = {"style": torch.randint(5, (len(z_test),), generator=g)}
    with torch.no_grad():
        s = student.search(z_test, cond)
        teacher = backward_search(heads, z_test, cond, 1.0).z
        hit = (heads["style"](s).argmax(1) == cond["style"]).float().mean()
    assert hit > 0.8  # chance is 0.2
    assert (s - teacher).pow(2).mean() < (z_test - teacher).pow(2).mean()


def test_distill_is_seeded_and_student_reg_pulls_towards_z0(world):
    z_train, _, heads = world
    settings = DistillConfig(epochs=2, batch_size=128)
    args = (heads, z_train, ["style", "genre"], CLASSES, 2.0)
    a, log_a = distill(*args, settings, seed=1, progress=False)
    b, _ = distill(*args, settings, seed=1, progress=False)
    c, log_c = distill(*args, replace(settings, student_reg=5), seed=1, progress=False)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    assert log_c[-1]["l1_to_z0"] < log_a[-1]["l1_to_z0"]
    assert log_c[-1]["loss"] == pytest.approx(log_c[-1]["mse"] + 5 * log_c[-1]["l1_to_z0"])


def test_distill_rejects_attribute_without_head(world):
    z_train, _, heads = world
    with pytest.raises(SuiteError, match="mood"):
        distill(heads, z_train, ["mood"], {"mood": 2}, 1.0, DistillConfig(epochs=1), progress=False)
    with pytest.raises(SuiteError, match="batch_size ≥ 2"):
        DistillConfig(batch_size=1)  # BatchNorm needs two rows: refused before any training


def test_student_lambdas_are_the_ones_d1_wrote_for_the_task(tmp_path):
    for task, lam in [("synthart-style", 1.0), ("synthart-style", 0.25), ("synthart-multi", 2.0)]:
        student_path(tmp_path, task, lam).write_bytes(b"")
    (tmp_path / "student_synthart-style_lamX.pt").write_bytes(b"")  # not D1's name
    assert student_lambdas(tmp_path, "synthart-style") == [0.25, 1.0]
    assert student_lambdas(tmp_path, "synthart-multi") == [2.0]
    assert student_lambdas(tmp_path, "cub-bird") == []


def test_load_student_round_trip(tmp_path):
    s = Student(4, {"style": 3}).eval()
    cfg = {"embedding_size": 4, "conditions": ["style"], "num_classes": {"style": 3}, "hidden": 128}
    path = student_path(tmp_path, "wikiart-style", 1.1)
    assert path.name == "student_wikiart-style_lam1.1.pt"
    save_torch(path, {"config": cfg, "model": s.state_dict()})
    loaded, got = load_student(path)
    assert got == cfg and not loaded.training
    x = torch.rand(3, 4)
    cond = {"style": torch.tensor([0, 1, 2])}
    assert torch.equal(loaded.search(x, cond), s.search(x, cond))
    save_torch(tmp_path / "bad.pt", {"config": {"embedding_size": 4}, "model": {}})
    with pytest.raises(SuiteError, match="not a student file"):
        load_student(tmp_path / "bad.pt")
    with pytest.raises(SuiteError, match="run D1_train_distill.py first"):
        load_student(tmp_path / "missing.pt")


def test_a_student_keeps_its_hidden_size(tmp_path):
    cfg = {"embedding_size": 4, "conditions": ["style"], "num_classes": {"style": 3}}
    for hidden in (32, None):  # None: a file from before `hidden` was recorded — HIDDEN
        s = Student(4, {"style": 3}, hidden or HIDDEN).eval()
        save_torch(tmp_path / "s.pt", {"config": {**cfg, "hidden": hidden} if hidden else cfg,
                                       "model": s.state_dict()})  # fmt: skip
        loaded, _ = load_student(tmp_path / "s.pt")
        assert loaded.net[0].out_features == (hidden or HIDDEN)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_student_written_on_cuda_loads_onto_the_device_asked(tmp_path):
    cfg = {"embedding_size": 4, "conditions": ["style"], "num_classes": {"style": 3}}
    save_torch(
        tmp_path / "s.pt", {"config": cfg, "model": Student(4, {"style": 3}).cuda().state_dict()}
    )
    for device in ("cpu", "cuda"):
        loaded, _ = load_student(tmp_path / "s.pt", device)
        assert {p.device.type for p in loaded.parameters()} == {device}


def test_a_file_that_is_no_student_is_named_with_the_first_line_of_the_error(tmp_path, monkeypatch):
    path = tmp_path / "bad.pt"
    again = f"re-run {hint('D1')}"
    save_torch(path, {"config": {"embedding_size": 4}, "model": {}})
    with pytest.raises(SuiteError) as e:
        load_student(path)
    assert str(e.value) == f"{path} is not a student file (KeyError: 'conditions'); {again}"
    long = "x" * 300  # an error's first line is cut at 200 characters
    cfg = {"embedding_size": 4, "conditions": [long], "num_classes": {}}
    save_torch(path, {"config": cfg, "model": {}})
    with pytest.raises(SuiteError) as e:
        load_student(path)
    assert str(e.value) == f"{path} is not a student file (KeyError: '{long[:199]}); {again}"
    # an error without a message still gives the one line
    cfg = {"embedding_size": 4, "conditions": ["style"], "num_classes": {"style": 3}}
    save_torch(path, {"config": cfg, "model": {}})

    def silent(*_a, **_k):
        raise RuntimeError()

    monkeypatch.setattr(Student, "load_state_dict", silent)
    with pytest.raises(SuiteError) as e:
        load_student(path)
    assert str(e.value) == f"{path} is not a student file (RuntimeError: ); {again}"


def test_batches_start_every_batch_size_and_a_last_batch_of_one_is_dropped():
    assert batch_starts(10, 4) == [0, 4, 8]
    assert batch_starts(9, 4) == [0, 4]  # rows 8..8 alone: BatchNorm needs two
    assert batch_starts(1, 4) == [] and batch_starts(2, 4) == [0]


# ---------------------------------------------------------------------------------------------
# The D1 stage on the tiny pipeline fixture


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from tests._pipeline import build_pipeline

    return build_pipeline(tmp_path_factory.mktemp("d1"))


def test_d1_writes_student_config_and_log(pipeline):
    p = pipeline
    argv = [
        "--task", "synthart-multi", "--lambda", "0.5", "--epochs", "2", "--batch-size", "64",
        "--weights-root", str(p.weights_root), "--run", p.run, "--device", "cpu",
    ]  # fmt: skip
    d1.main(argv)
    rdir = p.weights_root / p.run
    path = student_path(rdir, "synthart-multi", 0.5)
    student, cfg = load_student(path)
    assert cfg["conditions"] == ["style", "genre"] and cfg["lambda"] == 0.5
    assert student.net[0].in_features == cfg["embedding_size"] + sum(cfg["num_classes"].values())
    log = pd.read_csv(path.with_name(path.stem + "_log.csv"))
    assert list(log["epoch"]) == [1, 2]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["task"] == "synthart-multi" and "versions" in meta


def test_d1_before_c1_names_the_stage(pipeline, capsys):
    p = pipeline
    fresh = p.weights_root / "only_b1"  # B1 ran (encoder.pt), C1 did not (no embeddings.npz)
    fresh.mkdir()
    shutil.copy(p.weights_root / p.run / "encoder.pt", fresh / "encoder.pt")
    argv = ["--task", "synthart-style", "--weights-root", str(p.weights_root), "--run", "only_b1"]
    assert d1.run_stage(d1.main, argv) == 2
    assert "run C1_extract_embeddings.py" in capsys.readouterr().err
    assert sorted(f.name for f in fresh.iterdir()) == ["encoder.pt"]


def test_d1_rejects_a_run_of_another_dataset(pipeline, capsys):
    p = pipeline
    argv = ["--task", "wikiart-style", "--weights-root", str(p.weights_root), "--run", p.run]
    assert d1.run_stage(d1.main, argv) == 2
    assert "needs wikiart" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Edges: exact messages, the smallest settings, an empty batch, a default device elsewhere


@pytest.mark.parametrize(
    "cond, message",
    [
        ({"style": torch.tensor([5, 0])}, "class id out of range for 'style' (0..4 allowed)"),
        ({"style": torch.tensor([0])}, "condition 'style' must have shape (2,)"),
        ({"genre": torch.tensor([0, 0])}, "conditions on ['genre'] but the student was trained for ['style']"),
    ],
)  # fmt: skip
def test_input_errors_are_one_exact_line(cond, message):
    with pytest.raises(SuiteError) as e:
        student_input(torch.zeros(2, 4), cond, {"style": 5})
    assert str(e.value) == f"student_input: {message}"


def test_the_smallest_distill_settings_are_allowed():
    assert DistillConfig(epochs=1, batch_size=2).batch_size == 2
    for bad in ({"epochs": 0}, {"batch_size": 1}):
        with pytest.raises(SuiteError) as e:
            DistillConfig(**bad)
        assert str(e.value) == "distill: epochs must be ≥ 1 and batch_size ≥ 2"


def test_an_empty_batch_is_an_empty_input():
    x = student_input(torch.zeros(0, 4), {"style": torch.zeros(0, dtype=torch.long)}, {"style": 5})
    assert x.shape == (0, 9)


def test_a_student_knows_its_sizes():
    s = Student(16, {"style": 5, "genre": 3})
    assert s.embedding_size == 16 and s.num_classes == {"style": 5, "genre": 3}  # E1 checks both


def test_the_input_follows_z0_under_a_default_device_elsewhere():
    # torch.set_default_device("cuda") in a notebook: conditions still meet z0 on its device. The
    # "meta" device stands in for the GPU (it holds no data: reading a class id from it raises).
    z0 = torch.tensor([[0.5, -0.5], [0.25, 0.75]])
    cond = {"genre": torch.tensor([2, 0]), "style": [1, 4]}
    with torch.device("meta"):
        x = student_input(z0, cond, {"style": 5, "genre": 3})
    assert x.device.type == "cpu"
    assert x.tolist() == student_input(z0, cond, {"style": 5, "genre": 3}).tolist()


def test_only_the_names_d1_writes_are_students(tmp_path):
    student_path(tmp_path, "synthart-style", 0.5).write_bytes(b"")
    for stray in ("lam0.50", "lam1e0", "lamfoo", "lam-"):  # another spelling of a λ, or none
        (tmp_path / f"student_synthart-style_{stray}.pt").write_bytes(b"")
    assert student_lambdas(tmp_path, "synthart-style") == [0.5]


def test_distill_defaults_to_seed_0_and_progress_and_takes_float64_embeddings(world):
    # seed 0 and progress (so D1's pace estimate comes) unless told; float64 embeddings (C1 may
    # write them) are trained on as float32
    z_train, _, heads = world
    settings = DistillConfig(epochs=1, batch_size=100)
    paces = []
    a, _ = distill(heads, z_train.double(), ["style"], CLASSES, 1.0, settings, on_pace=paces.append)
    b, _ = distill(heads, z_train, ["style"], CLASSES, 1.0, settings, seed=0, progress=False)
    for (k, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    assert len(paces) == 1


def test_distill_refuses_unusable_embeddings_in_one_exact_line(world):
    z_train, _, heads = world
    bad = z_train[:10].clone()
    bad[3, 1] = float("nan")
    for z, message in [
        (bad, "distill: training embeddings hold NaN or inf; re-run C1"),
        (z_train[:1], "distill: need at least 2 training embeddings, got 1"),
    ]:
        with pytest.raises(SuiteError) as e:
            distill(heads, z, ["style"], CLASSES, 1.0, DistillConfig(epochs=1), progress=False)
        assert str(e.value) == message
