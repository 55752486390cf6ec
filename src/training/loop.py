"""The B1 loop: train the encoder's backbone, reduction and heads with the mean per-attribute CE.

Ties together the data (src/data.py), the engine's epochs (src/training/engine.py) and the
checkpoints (src/training/checkpoint.py): per-epoch test accuracy, atomic checkpoints every few
epochs and train_log.csv (B1 draws curves.png from it). One code path for CPU, one GPU and
`torchrun` (DDP).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as tdist
from torch import nn
from torch.utils.data import DistributedSampler

from src.artifacts import save_torch, write_csv
from src.data import load_split, maybe_cache
from src.method.encoder import build_encoder
from src.progress import run_estimate
from src.tasks import Recipe
from src.training.checkpoint import read_checkpoint, resume_checkpoint, save_checkpoint
from src.training.engine import Runtime, evaluate, loader, make_train_state, train_one_epoch

log = logging.getLogger(__name__)


def train_encoder(
    config: dict[str, Any],
    recipe: Recipe,
    data_root: Path,
    out_dir: Path,
    rt: Runtime,
    seed: int,
    resume: bool = False,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Train per `recipe` and write encoder.pt and train_log.csv to out_dir (B1 passes a
    staging folder) and checkpoint.pt to checkpoint_dir (default out_dir: the run folder itself,
    so `--resume` finds it after a failure). Only the main process writes.

    Returns {"epochs", "test_accuracy", "seconds"}.
    """
    attrs = config["attributes"]
    ds = config["dataset"]
    ckpt_path = (checkpoint_dir or out_dir) / "checkpoint.pt"
    ck = read_checkpoint(ckpt_path, config, recipe) if resume else None  # before data, downloads
    train_set = load_split(data_root, ds, "train", config, train=True)
    test_set = load_split(data_root, ds, "test", config, train=False)
    maybe_cache(train_set, rt.workers, "train")
    maybe_cache(test_set, rt.workers, "test")

    model = build_encoder(config, recipe.pretrained).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(seed + rt.rank)  # same init on all ranks (DDP syncs it), own augmentation
    ddp = (
        nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device] if rt.device.type == "cuda" else None
        )
        if rt.distributed
        else model
    )

    batch = recipe.batch_size
    sampler = DistributedSampler(train_set, rt.world, rt.rank, shuffle=True, seed=seed)
    per_rank = math.ceil(len(train_set) / rt.world)
    train_batches = loader(train_set, rt, batch, sampler, drop_last=per_rank % batch == 1)
    test_part = torch.utils.data.Subset(test_set, range(rt.rank, len(test_set), rt.world))
    test_batches = loader(test_part, rt, max(batch, 256), None)

    state = make_train_state(model, recipe, rt, len(train_batches), forward=ddp)
    start, rows = 0, []
    if ck is not None:
        start, rows = resume_checkpoint(ck, state)
        del ck  # its tensors are in the model and optimiser now
        if rt.rank:
            torch.manual_seed(seed + rt.rank + 7919 * start)
        log.info("resumed from %s at epoch %d", ckpt_path, start)

    epochs = recipe.epochs
    every = max(1, recipe.checkpoint_every)
    pace = cpu_time_warning(rt, recipe, len(train_batches), epochs - start)  # first epoch only
    t_start = time.time()
    for epoch in range(start + 1, epochs + 1):
        t0 = time.time()
        sampler.set_epoch(epoch)
        lr = state.optimizer.param_groups[0]["lr"]
        loss, train_acc = train_one_epoch(
            state,
            train_batches,
            rt,
            attrs,
            epoch,
            pace if epoch == start + 1 else None,
            recipe.label_smoothing,
            recipe.mix,
        )
        test_acc = evaluate(model, test_batches, rt, attrs)
        row = {"epoch": epoch, "lr": lr, "train_loss": loss}
        row |= {f"train_acc_{a}": v for a, v in train_acc.items()}
        row |= {f"test_acc_{a}": v for a, v in test_acc.items()}
        row["seconds"] = round(time.time() - t0, 3)
        rows.append(row)
        log.info(
            "epoch %d/%d  lr %.2g  loss %.4f  train %s  test %s  (%.1f s)",
            epoch,
            epochs,
            lr,
            loss,
            " ".join(f"{a}={v:.3f}" for a, v in train_acc.items()),
            " ".join(f"{a}={v:.3f}" for a, v in test_acc.items()),
            row["seconds"],
        )
        if rt.main and (epoch % every == 0 or epoch == epochs):
            save_checkpoint(ckpt_path, config, recipe, epoch, state, seed, rows)
        if rt.main:
            write_log(out_dir, rows)

    if rt.main:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_torch(out_dir / "encoder.pt", {"config": config, "model": state})
        write_log(out_dir, rows)
    if rt.distributed:
        tdist.barrier()
    final = {a: rows[-1][f"test_acc_{a}"] for a in attrs} if rows else {}
    return {"epochs": epochs, "test_accuracy": final, "seconds": round(time.time() - t_start, 2)}


SLOW_RUN_SECONDS = 3600.0  # above this, a CPU run warns before it goes on for hours


def cpu_time_warning(rt, recipe: Recipe, steps_per_epoch: int, epochs_left: int):
    """A pace callback (for the first epoch's first steps) that logs B1's time on a CPU and warns
    in one line when it will take more than an hour, naming the ways out; None on an accelerator."""
    if rt.device.type != "cpu" or not rt.main:
        return None
    return run_estimate(
        "B1 on the CPU",
        f"{epochs_left} epochs of {recipe.backbone} at {recipe.image_size} px",
        steps_per_epoch * epochs_left,
        SLOW_RUN_SECONDS,
        "use a GPU (--device cuda) or --recipe small (a small backbone from scratch, sized for "
        "a CPU; docs/stages.md)",
    )


def write_log(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(out_dir / "train_log.csv", pd.DataFrame(rows))
