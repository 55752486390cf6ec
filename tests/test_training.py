"""B1: artifacts, resume equivalence, interruption safety, error paths and DDP on CPU (tiny data)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

import B1_train_encoder as b1
import src.data as data
import src.training.engine as engine
import src.training.loop as training
from src.artifacts import load_torch
from src.errors import SuiteError
from src.tasks import (
    AUTHORS_TRAINING,
    PAPER_TEXT_TRAINING,
    SMALL_TRAINING,
    SYNTHART_TRAINING,
    Recipe,
    get_dataset,
)
from tests._encoder import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
RUN = "synthart_convnext_atto_e16_ft"
TINY = [
    "--dataset",
    "synthart",
    "--image-size",
    "32",
    "--embedding-size",
    "16",
    "--batch-size",
    "8",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_tiny_dataset(root)
    return root


def b1_args(data_root: Path, weights: Path, *extra: str) -> list[str]:
    return [*TINY, "--data-root", str(data_root), "--weights-root", str(weights), *extra]


def test_b1_writes_the_run(data_root, tmp_path):
    b1.main(b1_args(data_root, tmp_path, "--epochs", "2"))
    out = tmp_path / RUN
    blob = load_torch(out / "encoder.pt", "B1")
    cfg = blob["config"]
    assert cfg["dataset"] == "synthart" and cfg["backbone"] == "convnext_atto"
    assert cfg["embedding_size"] == 16 and cfg["frozen"] is False and cfg["image_size"] == 32
    assert cfg["attributes"] == ["style", "genre"] and cfg["num_classes"] == {
        "style": 3,
        "genre": 2,
    }
    assert cfg["square_resize"] is False
    assert any(k.startswith("heads.genre") for k in blob["model"])
    log = pd.read_csv(out / "train_log.csv")
    assert list(log["epoch"]) == [1, 2]
    for col in ["lr", "train_loss", "train_acc_style", "test_acc_genre", "seconds"]:
        assert col in log.columns and log[col].between(0, 100).all()
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    ck = load_torch(out / "checkpoint.pt", "B1")
    assert ck["epoch"] == 2 and {"optimizer", "scheduler", "rng", "sampler"} <= set(ck)
    conf = json.loads((out / "config.json").read_text())
    assert conf["run"] == RUN and conf["recipe"]["epochs"] == 2
    assert set(conf["result"]["test_accuracy"]) == {"style", "genre"}
    assert "epoch 2/2" in (out / "train.log").read_text()


def test_frozen_run_name(data_root, tmp_path):
    b1.main(
        b1_args(
            data_root, tmp_path, "--epochs", "1", "--freeze-backbone", "--backbone", "convnext_atto"
        )
    )
    blob = load_torch(tmp_path / "synthart_convnext_atto_e16_frozen" / "encoder.pt", "B1")
    assert blob["config"]["frozen"] is True


def test_resume_reaches_the_same_weights(data_root, tmp_path, monkeypatch):
    """2 epochs straight == 1 epoch, an interruption during epoch 2, then --resume."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    b1.main(b1_args(data_root, straight, "--epochs", "2", "--checkpoint-every", "1"))

    real = training.train_one_epoch
    calls = []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 2:  # mid-run: after epoch 1's checkpoint
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(training, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        b1.main(b1_args(data_root, resumed, "--epochs", "2", "--checkpoint-every", "1"))
    assert load_torch(resumed / RUN / "checkpoint.pt", "B1")["epoch"] == 1  # last good one
    assert not (resumed / RUN / "encoder.pt").exists()
    monkeypatch.setattr(training, "train_one_epoch", real)

    b1.main(b1_args(data_root, resumed, "--epochs", "2", "--checkpoint-every", "1", "--resume"))
    a = load_torch(straight / RUN / "encoder.pt", "B1")["model"]
    b = load_torch(resumed / RUN / "encoder.pt", "B1")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log_a = pd.read_csv(straight / RUN / "train_log.csv")
    log_b = pd.read_csv(resumed / RUN / "train_log.csv")
    assert list(log_b["epoch"]) == [1, 2]
    assert log_a["train_loss"].tolist() == log_b["train_loss"].tolist()


def test_resume_with_other_settings_names_both(data_root, tmp_path):
    b1.main(b1_args(data_root, tmp_path, "--epochs", "1"))
    with pytest.raises(SuiteError, match=r"image_size: checkpoint 32 vs flags 48"):
        b1.main([*b1_args(data_root, tmp_path, "--epochs", "2", "--resume"), "--image-size", "48"])
    ck = load_torch(tmp_path / RUN / "checkpoint.pt", "B1")
    ck["config"]["backbone"] = "resnet50"
    torch.save(ck, tmp_path / RUN / "checkpoint.pt")
    with pytest.raises(
        SuiteError, match=r"backbone: checkpoint 'resnet50' vs flags 'convnext_atto'"
    ):
        b1.main(b1_args(data_root, tmp_path, "--epochs", "2", "--resume"))


# checkpoint.pt as every B1 has written it since checkpoints began (git 7db1aa1; "recipe" since
# the recipe checks): the training state under these keys, so an older checkpoint still resumes
OLD_LAYOUT = ("config", "recipe", "epoch", "model", "optimizer", "scheduler", "scaler", "rng",
              "sampler", "log")  # fmt: skip


def test_a_checkpoint_of_the_old_layout_resumes_and_a_foreign_one_is_refused(data_root, tmp_path):
    b1.main(b1_args(data_root, tmp_path, "--epochs", "1"))
    path = tmp_path / RUN / "checkpoint.pt"
    ck = load_torch(path, "B1")
    assert tuple(ck) == OLD_LAYOUT  # the training state is still saved under the old keys
    torch.save({k: ck[k] for k in OLD_LAYOUT}, path)  # written without save_checkpoint
    b1.main(b1_args(data_root, tmp_path, "--epochs", "2", "--resume"))
    assert list(pd.read_csv(tmp_path / RUN / "train_log.csv")["epoch"]) == [1, 2]
    ck = load_torch(path, "B1")
    del ck["scheduler"]
    torch.save(ck, path)
    with pytest.raises(SuiteError, match=r"checkpoint.pt is not a B1 checkpoint \(it lacks "
                       r"scheduler\); drop --resume to start over"):  # fmt: skip
        b1.main(b1_args(data_root, tmp_path, "--epochs", "3", "--resume"))


def test_resume_without_checkpoint(data_root, tmp_path):
    with pytest.raises(SuiteError, match=r"checkpoint.pt not found: run B1_train_encoder.py"):
        b1.main(b1_args(data_root, tmp_path, "--epochs", "1", "--resume"))


def test_b1_before_a1(tmp_path):
    with pytest.raises(SuiteError, match=r"run A1_preprocess.py --dataset synthart first"):
        b1.main(b1_args(tmp_path / "nodata", tmp_path, "--epochs", "1"))


def test_unknown_class_in_split(tmp_path):
    root = make_tiny_dataset(tmp_path, n_train=6, n_test=3)
    df = pd.read_csv(root / "train.csv")
    df.loc[2, "style"] = "purple"
    df.to_csv(root / "train.csv", index=False)
    with pytest.raises(SuiteError, match=r"'purple' is not in labels.json"):
        b1.main(b1_args(tmp_path, tmp_path / "w", "--epochs", "1"))


def test_cached_and_streamed_items_are_equal(data_root):
    cfg = {"dataset": "synthart", "attributes": ["style", "genre"], "image_size": 32}
    streamed = data.load_split(data_root, "synthart", "test", cfg, train=False)
    cached = data.load_split(data_root, "synthart", "test", cfg, train=False)
    cached.fill_cache(workers=0)
    assert cached.cache is not None and len(cached.cache) == len(streamed)
    for i in range(len(streamed)):
        xa, ya = streamed[i]
        xb, yb = cached[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_ddp_on_cpu_with_two_processes(data_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(ROOT / "B1_train_encoder.py"), *b1_args(data_root, tmp_path, "--epochs", "1"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    conf = json.loads((tmp_path / RUN / "config.json").read_text())
    assert conf["processes"] == 2
    blob = load_torch(tmp_path / RUN / "encoder.pt", "B1")
    assert not any(k.startswith("module.") for k in blob["model"])  # the unwrapped model
    assert list(pd.read_csv(tmp_path / RUN / "train_log.csv")["epoch"]) == [1]


def test_flips_come_from_the_recipe_else_the_dataset_and_resume_keeps_them(data_root, tmp_path):
    b1.main(b1_args(data_root, tmp_path / "demo", "--epochs", "1"))
    conf = json.loads((tmp_path / "demo" / RUN / "config.json").read_text())
    assert conf["recipe"]["flips"] == conf["encoder"]["flips"] == SYNTHART_TRAINING.flips == "h"
    authors = ["--recipe", "authors", "--pretrained", "none", "--backbone", "convnext_atto"]
    b1.main(b1_args(data_root, tmp_path / "authors", "--epochs", "1", *authors))
    conf = json.loads((tmp_path / "authors" / RUN / "config.json").read_text())
    assert AUTHORS_TRAINING.flips is None and conf["encoder"]["flips"] == "hv"  # the dataset's
    assert get_dataset("apy").flips == "none"  # the authors' train_square
    # the authors' StepLR(10) in a 1-epoch run never drops the learning rate: B1 says so
    log = (tmp_path / "authors" / RUN / "train.log").read_text()
    assert "WARNING: --lr-step 10 with --epochs 1: the step schedule never lowers" in log
    b1.main(b1_args(data_root, tmp_path / "none", "--epochs", "1", "--flips", "none"))
    conf = json.loads((tmp_path / "none" / RUN / "config.json").read_text())
    assert conf["recipe"]["flips"] == conf["encoder"]["flips"] == "none"
    with pytest.raises(SuiteError, match=r"flips: checkpoint 'none' vs flags 'h'"):
        b1.main(b1_args(data_root, tmp_path / "none", "--epochs", "2", "--resume"))


def test_the_small_recipe_trains_with_adamw_and_label_smoothing(data_root, tmp_path, monkeypatch):
    smoothing, optimizers = [], []
    real_ce, real_state = engine.mean_ce, training.make_train_state

    def ce(logits, y, **kw):
        smoothing.append(kw["label_smoothing"])
        return real_ce(logits, y, **kw)

    def state(*args, **kw):
        made = real_state(*args, **kw)
        optimizers.append(type(made.optimizer))
        return made

    monkeypatch.setattr(engine, "mean_ce", ce)
    monkeypatch.setattr(training, "make_train_state", state)
    argv = ["--epochs", "1", "--recipe", "small", "--label-smoothing", "0.2"]
    b1.main(b1_args(data_root, tmp_path, *argv))
    assert SMALL_TRAINING.optimizer == "adamw" and optimizers == [torch.optim.AdamW]
    assert smoothing and set(smoothing) == {0.2}
    b1.main(b1_args(data_root, tmp_path / "demo", "--epochs", "1"))  # the demo: the authors' Adam
    assert optimizers[-1] is torch.optim.Adam and smoothing[-1] == 0.0


def test_lr_schedules():
    authors = Recipe(epochs=30, lr_step=10, lr_gamma=0.1)
    f = engine.lr_factor(authors, steps_per_epoch=5)  # StepLR(10, 0.1) per epoch, per step
    assert [f(e * 5 + 4) for e in (0, 9, 10, 19, 20, 29)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )
    demo = Recipe(epochs=4, lr_step=1, lr_gamma=0.1, schedule="cosine", warmup_epochs=1)
    g = engine.lr_factor(demo, steps_per_epoch=10)
    assert g(0) == pytest.approx(0.1) and g(9) == pytest.approx(1.0)  # linear warm-up
    assert g(10) == pytest.approx(1.0) and g(25) == pytest.approx(0.5)
    assert g(39) < 0.01 and all(g(i) >= g(i + 1) for i in range(9, 39))


def test_a_non_finite_loss_stops_b1_naming_epoch_and_step():
    """A diverged run fails in one line (epoch, step, a lower --lr) instead of surfacing in E1."""

    class Diverging(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(2))

        def forward(self, x):
            logits = self.w * x[:, :2]  # finite until the batch whose input holds inf
            return logits, {"a": logits}

    model = Diverging()
    rt = engine.Runtime(torch.device("cpu"))
    recipe = Recipe(epochs=1, lr=0.5, weight_decay=0.0, lr_step=1, lr_gamma=1.0)
    state = engine.make_train_state(model, recipe, rt, 3)
    y = torch.zeros(4, 1, dtype=torch.int64)
    batches = [(torch.ones(4, 2), y), (torch.full((4, 2), float("inf")), y), (torch.ones(4, 2), y)]
    with pytest.raises(SuiteError, match=r"not finite at epoch 7, step 2 \(lr 0\.5\).*--lr 0\.05"):
        engine.train_one_epoch(state, batches, rt, ["a"], epoch=7)
    good = [(torch.ones(4, 2), y)]
    state = engine.make_train_state(Diverging(), recipe, rt, 1)
    loss, acc = engine.train_one_epoch(state, good, rt, ["a"])
    assert math.isfinite(loss) and set(acc) == {"a"}


def test_recipes_are_typed_and_store_the_same_keys():
    """config.json's "recipe": the authors' keys (and the flips) for real datasets; the small
    recipe.s own settings (schedule, warm-up, optimizer, label smoothing) only where a recipe sets them."""
    authors = AUTHORS_TRAINING.as_dict()
    assert list(authors) == [
        "backbone", "pretrained", "embedding_size", "epochs", "batch_size", "lr", "weight_decay",
        "lr_step", "lr_gamma", "image_size", "random_resized_crop", "checkpoint_every",
        "precision", "flips",
    ]  # fmt: skip
    assert authors["flips"] is None  # the dataset's: B1 records the resolved value
    own = ["schedule", "warmup_epochs"]
    assert set(SYNTHART_TRAINING.as_dict()) == {*authors, *own}
    small = {"optimizer", "label_smoothing", "mix", "images_seen", "max_epochs"}
    assert set(SMALL_TRAINING.as_dict()) == {*authors, *own, *small}
    assert PAPER_TEXT_TRAINING.epochs == 100 and PAPER_TEXT_TRAINING.random_resized_crop
    # the authors trained in fp32 (issue 8); the demo keeps mixed precision on CUDA only
    assert AUTHORS_TRAINING.precision == PAPER_TEXT_TRAINING.precision == "fp32"
    assert SYNTHART_TRAINING.precision == "auto"
    flags = b1.override_flags()
    assert "random_resized_crop" not in flags and flags["lr"][0]("0.5") == 0.5
    assert flags["precision"][2] == ("fp32", "bf16", "fp16", "auto")
    assert "authors 0.01" in flags["lr"][1] and "synthart demo 0.002" in flags["lr"][1]


# ---------------------------------------------------------------------------------------------
# Precision (issue 8) and the CUDA branches' CPU twins (issue 11)


def spy_logits(monkeypatch) -> list[torch.dtype]:
    """Record the dtype of the heads' logits at every training step (the autocast dtype)."""
    seen = []
    real = engine.mean_ce

    def spy(logits, y, **kw):
        seen.append(next(iter(logits.values())).dtype)
        return real(logits, y, **kw)

    monkeypatch.setattr(engine, "mean_ce", spy)
    return seen


def test_the_demo_recipe_trains_in_fp32_on_the_cpu(data_root, tmp_path, monkeypatch):
    """`auto` (SynthArt's preset) autocasts nothing on the CPU: `make demo` is unchanged."""
    seen = spy_logits(monkeypatch)
    b1.main(b1_args(data_root, tmp_path, "--epochs", "1"))
    conf = json.loads((tmp_path / RUN / "config.json").read_text())
    assert conf["precision"] == "fp32" and conf["recipe"]["precision"] == "auto"
    assert seen and set(seen) == {torch.float32}


def test_precision_fp32_for_the_authors_recipe(data_root, tmp_path, monkeypatch):
    seen = spy_logits(monkeypatch)
    b1.main(b1_args(data_root, tmp_path, "--epochs", "1", "--recipe", "authors", "--pretrained",
                    "none", "--backbone", "convnext_atto", "--lr", "0.002"))  # fmt: skip
    conf = json.loads((tmp_path / RUN / "config.json").read_text())
    assert conf["precision"] == "fp32" == conf["recipe"]["precision"]
    assert set(seen) == {torch.float32}


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_b1_with_autocast_on_the_cpu(precision, dtype, data_root, tmp_path, monkeypatch):
    """The CUDA branch's code path on the CPU: autocast in every step, fp16 through the GradScaler."""
    seen = spy_logits(monkeypatch)
    scalers = []
    real_make = engine.make_train_state

    def keep_scaler(*a, **k):
        made = real_make(*a, **k)
        scalers.append(made.scaler)
        return made

    monkeypatch.setattr(training, "make_train_state", keep_scaler)
    b1.main(b1_args(data_root, tmp_path, "--epochs", "2", "--precision", precision))
    assert seen and set(seen) == {dtype}
    assert scalers[0].is_enabled() == (precision == "fp16")  # bf16 needs no loss scaling
    conf = json.loads((tmp_path / RUN / "config.json").read_text())
    assert conf["precision"] == precision == conf["recipe"]["precision"]
    log = pd.read_csv(tmp_path / RUN / "train_log.csv")
    assert log["train_loss"].map(math.isfinite).all()
    ck = load_torch(tmp_path / RUN / "checkpoint.pt", "B1")
    if precision == "fp16":  # the scaler's state goes into the checkpoint, for --resume
        assert ck["scaler"]["scale"] > 0 and ck["scaler"]["scale"] == scalers[0].get_scale()
    weights = load_torch(tmp_path / RUN / "encoder.pt", "B1")["model"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in weights.values())  # fp32 masters


def test_channels_last_forced_on_the_cpu(data_root, tmp_path, monkeypatch):
    """Runtime.channels_last (CUDA's default) on the CPU: model and batches in channels_last."""
    cfg = load_torch(_trained_run(data_root, tmp_path / "ref") / "encoder.pt", "B1")["config"]
    layouts = []
    real_build = training.build_encoder

    def build(*a, **k):
        model = real_build(*a, **k)

        def hook(module, inputs):
            layouts.append(inputs[0].is_contiguous(memory_format=torch.channels_last))

        model.backbone.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(training, "build_encoder", build)
    conv = []
    real_epoch = training.train_one_epoch

    def epoch(state, *a, **k):
        stem = next(m for m in state.forward.modules() if isinstance(m, torch.nn.Conv2d))
        conv.append(stem.weight.is_contiguous(memory_format=torch.channels_last))
        return real_epoch(state, *a, **k)

    monkeypatch.setattr(training, "train_one_epoch", epoch)
    recipe = replace(SYNTHART_TRAINING, epochs=1, batch_size=8, image_size=32, embedding_size=16)
    rt = engine.Runtime(torch.device("cpu"), channels_last=True)
    result = training.train_encoder(cfg, recipe, data_root, tmp_path / "cl", rt, seed=0)
    assert conv == [True] and layouts and all(layouts)
    assert set(result["test_accuracy"]) == {"style", "genre"}
    assert engine.Runtime(torch.device("cpu")).channels_last is False
    assert engine.Runtime(torch.device("cuda")).channels_last is True


def _trained_run(data_root: Path, weights: Path) -> Path:
    b1.main(b1_args(data_root, weights, "--epochs", "1"))
    return weights / RUN


def test_cuda_runtimes_pin_memory_without_a_gpu(data_root):
    """The loader built for a CUDA runtime pins its batches (never iterated here)."""
    cfg = {"dataset": "synthart", "attributes": ["style", "genre"], "image_size": 32}
    table = data.load_split(data_root, "synthart", "test", cfg, train=False)
    cuda = engine.loader(table, engine.Runtime(torch.device("cuda")), 4, None)
    cpu = engine.loader(table, engine.Runtime(torch.device("cpu")), 4, None)
    assert cuda.pin_memory is True and cpu.pin_memory is False


def test_make_runtime_picks_nccl_for_cuda(monkeypatch):
    """Under torchrun with a CUDA device: the local rank's GPU and NCCL (stand-ins, not run)."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda b: calls.append(b))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(d))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)
    rt = engine.make_runtime(torch.device("cuda"), workers=0, precision="fp32")
    assert calls == [torch.device("cuda", 1), "nccl"]
    assert rt.device == torch.device("cuda", 1) and rt.rank == 1 and rt.world == 2
    assert rt.amp_dtype is None and rt.channels_last and rt.pin_memory
    calls.clear()
    rt = engine.make_runtime(torch.device("cpu"), workers=0, precision="fp32")
    assert calls == ["gloo"] and not rt.channels_last and not rt.pin_memory


def test_precision_names_resolve_per_device(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert engine.amp_dtype("auto", cpu) is None and engine.amp_dtype("fp32", cuda) is None
    assert engine.amp_dtype("bf16", cpu) is torch.bfloat16
    assert engine.amp_dtype("fp16", cpu) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert engine.amp_dtype("auto", cuda) is torch.float16
    with pytest.raises(SuiteError, match="does not support bfloat16; use fp16 or fp32"):
        engine.amp_dtype("bf16", cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert engine.amp_dtype("auto", cuda) is torch.bfloat16


# ---------------------------------------------------------------------------------------------
# Frozen backbone: eval mode by default, the authors' possible train mode as a quirk (issue 8)


def test_frozen_train_mode_quirk_is_recorded(data_root, tmp_path):
    argv = b1_args(data_root, tmp_path, "--epochs", "1", "--freeze-backbone")
    b1.main([*argv, "--authors-quirks", "frozen-train-mode"])
    out = tmp_path / "synthart_convnext_atto_e16_frozen"
    assert json.loads((out / "config.json").read_text())["quirks"] == ["frozen-train-mode"]
    assert load_torch(out / "encoder.pt", "B1")["config"]["frozen_train_mode"] is True
    with pytest.raises(SuiteError, match="frozen_train_mode: checkpoint True vs flags None"):
        b1.main([*argv, "--resume"])  # the default (eval mode) cannot continue a quirk run
    b1.main(argv)
    assert json.loads((out / "config.json").read_text())["quirks"] == []
    assert "frozen_train_mode" not in load_torch(out / "encoder.pt", "B1")["config"]


def test_frozen_train_mode_needs_a_frozen_backbone(data_root, tmp_path):
    with pytest.raises(SuiteError, match="add --freeze-backbone"):
        b1.main(b1_args(data_root, tmp_path, "--authors-quirks", "frozen-train-mode"))
    with pytest.raises(SuiteError, match="not a quirk of B1"):
        b1.main(b1_args(data_root, tmp_path, "--authors-quirks", "cub-tag-shift"))
    assert not (tmp_path / RUN).exists()
    b1.main(b1_args(data_root, tmp_path, "--epochs", "1", "--authors-quirks", "all"))
    assert json.loads((tmp_path / RUN / "config.json").read_text())["quirks"] == []


# ---------------------------------------------------------------------------------------------
# --resume refuses changed optimisation settings (issue 9)


def test_resume_refuses_changed_optimisation_settings(data_root, tmp_path):
    b1.main(b1_args(data_root, tmp_path, "--epochs", "2"))
    for flag, value, said in [
        ("--lr", "0.1", "--lr: checkpoint 0.002 vs flags 0.1"),
        ("--batch-size", "4", "--batch-size: checkpoint 8 vs flags 4"),
        ("--weight-decay", "0", "--weight-decay: checkpoint 1e-06 vs flags 0.0"),
        ("--lr-step", "3", "--lr-step: checkpoint 10 vs flags 3"),
        ("--lr-gamma", "0.5", "--lr-gamma: checkpoint 0.1 vs flags 0.5"),
        ("--precision", "bf16", "--precision: checkpoint 'auto' vs flags 'bf16'"),
    ]:
        with pytest.raises(SuiteError, match=said):
            b1.main(b1_args(data_root, tmp_path, "--epochs", "3", "--resume", flag, value))
    with pytest.raises(SuiteError, match=r"schedule: checkpoint 'cosine' vs flags 'step'"):
        b1.main(b1_args(data_root, tmp_path, "--epochs", "3", "--resume", "--recipe", "authors",
                        "--pretrained", "none", "--backbone", "convnext_atto"))  # fmt: skip
    with pytest.raises(SuiteError, match=r"--epochs 1 is fewer than the 2 epochs .* --epochs 2"):
        b1.main(b1_args(data_root, tmp_path, "--epochs", "1", "--resume"))


# ---------------------------------------------------------------------------------------------
# Epochs from the collection's size (issue 30)


def test_the_small_recipe_takes_its_epochs_from_the_collections_size():
    """60,000 images seen, at least 20 and at most 100 epochs; other recipes keep their epochs."""
    assert SMALL_TRAINING.epochs_for(3110) == 20  # the icons: 20 epochs already show 62,200
    assert SMALL_TRAINING.epochs_for(1000) == 60
    assert SMALL_TRAINING.epochs_for(600) == SMALL_TRAINING.epochs_for(601) == 100
    assert SMALL_TRAINING.epochs_for(599) == SMALL_TRAINING.epochs_for(20) == 100  # the cap
    assert SMALL_TRAINING.epochs_for(100_000) == 20  # the floor
    for fixed in (AUTHORS_TRAINING, PAPER_TEXT_TRAINING, SYNTHART_TRAINING):
        assert fixed.epochs_for(600) == fixed.epochs_for(100_000) == fixed.epochs


def test_cutmix_only_where_the_size_rule_repeats_each_image_more_than_the_floor():
    """The icons (3,110 train images, 20 epochs) lost 0.04 theme accuracy with CutMix; 600 emoji
    (100 epochs) gained 0.15 set accuracy: mixing follows the epochs the size gives."""
    small, note = SMALL_TRAINING.sized(600)
    assert (small.epochs, small.mix) == (100, "cutmix")
    assert note.startswith("100 epochs, mix cutmix, for 600 train images") and "3,000" in note
    large, _ = SMALL_TRAINING.sized(3110)
    assert (large.epochs, large.mix) == (20, "none")
    assert replace(large, mix="none") == replace(SMALL_TRAINING, mix="none")  # otherwise as was
    assert (
        SMALL_TRAINING.sized(2999)[0].mix == "cutmix"
        and SMALL_TRAINING.sized(3000)[0].mix == "none"
    )
    assert SYNTHART_TRAINING.sized(600) == (SYNTHART_TRAINING, "")  # the demo: fixed


def test_b1_records_what_the_size_chose_and_flags_still_set_it(data_root, tmp_path, monkeypatch):
    # the tiny split has 24 train images: 60 images seen = 3 epochs, capped at 2, floor 1
    rule = replace(SMALL_TRAINING, epochs=1, images_seen=60, max_epochs=2)
    monkeypatch.setitem(b1.RECIPES, "small", rule)
    b1.main(b1_args(data_root, tmp_path / "sized", "--recipe", "small"))
    conf = json.loads((tmp_path / "sized" / RUN / "config.json").read_text())
    assert conf["recipe"]["epochs"] == conf["resolved"]["epochs"] == 2
    assert conf["recipe"]["mix"] == conf["resolved"]["mix"] == "cutmix"
    assert conf["resolved"]["size_rule"].startswith("2 epochs, mix cutmix, for 24 train images")
    assert len(pd.read_csv(tmp_path / "sized" / RUN / "train_log.csv")) == 2
    argv = ["--recipe", "small", "--epochs", "3", "--mix", "none"]
    b1.main(b1_args(data_root, tmp_path / "given", *argv))
    conf = json.loads((tmp_path / "given" / RUN / "config.json").read_text())
    assert conf["recipe"]["epochs"] == 3 and conf["recipe"].get("mix", "none") == "none"


def test_cutmix_pastes_a_partners_box_and_shares_the_loss_by_its_area(monkeypatch):
    """Issue 30: each image keeps its pixels outside one box, the box is its partner's, and the
    step's loss is λ·CE(own labels) + (1 − λ)·CE(partner's) with 1 − λ the box's share."""
    torch.manual_seed(3)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 8, 8).clone()
    mixed, perm, lam = engine.cutmix(x)
    partner = (mixed != x).any(1)  # pixels that came from another image
    for i in range(4):
        box = partner[i].nonzero()
        if perm[i] != i:
            assert (mixed[i][:, partner[i]] == x[perm[i]][:, partner[i]]).all()
            area = (box[:, 0].max() - box[:, 0].min() + 1) * (box[:, 1].max() - box[:, 1].min() + 1)
            assert len(box) == area == round((1 - lam) * 64)  # one rectangle, λ from its area
    seen = []
    monkeypatch.setattr(engine, "cutmix", lambda x: (x, torch.tensor([1, 0]), 0.25))
    real = engine.mean_ce
    monkeypatch.setattr(
        engine, "mean_ce", lambda lg, y, **kw: seen.append(y[:, 0].tolist()) or real(lg, y, **kw)
    )

    class Heads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(3, 2))

        def forward(self, x):
            return None, {"a": x.flatten(1)[:, :3] @ self.w}

    model, y = Heads(), torch.tensor([[0], [1]])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    rt = engine.Runtime(torch.device("cpu"))
    x = torch.randn(2, 3, 4, 4)
    state = engine.TrainState(model, opt, sched, scaler, model)
    loss, _ = engine.train_step(state, x, y, rt, 0.0, "cutmix")
    assert seen == [[0, 1], [1, 0]]  # own labels, then the partners'
    logits = model(x)[1]["a"].detach()
    own, other = (torch.nn.functional.cross_entropy(logits, t) for t in (y[:, 0], y[[1, 0], 0]))
    assert not math.isclose(float(own), float(other))
    assert math.isclose(float(loss), float(0.25 * own + 0.75 * other), rel_tol=1e-5)
    seen.clear()
    engine.train_step(state, x, y, rt, 0.0, "none")
    assert seen == [[0, 1]]
