"""The B1 loop: train the encoder's backbone, reduction and heads with the mean per-attribute CE.

One code path for CPU, one GPU and `torchrun` (DDP): mixed precision and channels_last on CUDA,
per-epoch test accuracy, atomic checkpoints (with RNG states, so `--resume` reproduces an
uninterrupted run on CPU), train_log.csv and curves.png. Small datasets are decoded into memory once.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as tdist
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from src.artifacts import dataset_dir, load_torch, save_torch, write_csv
from src.datasets.common import read_labels, read_split
from src.encoder import B1_HINT, Encoder, build_encoder, transform_parts
from src.errors import SuiteError

log = logging.getLogger("backward_search")

CACHE_BYTES = 1 << 30  # decode a split into memory when it fits in about 1 GiB
# Settings a checkpoint must share with the flags to be resumed.
RESUME_KEYS = ("backbone", "embedding_size", "frozen", "attributes", "num_classes", "image_size")


# ---------------------------------------------------------------------------------------------
# Data


def label_ids(
    df: pd.DataFrame, labels: Mapping[str, list[str]], attributes: Sequence[str], where: str
) -> torch.Tensor:
    """Class names → ids (N × attributes, int64), failing on a name labels.json does not list."""
    cols = []
    for a in attributes:
        if a not in df.columns or a not in labels:
            raise SuiteError(f"{where} or labels.json lacks attribute {a!r}; re-run A1")
        index = {name: i for i, name in enumerate(labels[a])}
        ids = df[a].map(index)
        if ids.isna().any():
            bad = df[a][ids.isna()].iloc[0]
            raise SuiteError(f"{where}: {a} class {bad!r} is not in labels.json; re-run A1")
        cols.append(torch.from_numpy(ids.to_numpy(dtype=np.int64).copy()))
    return torch.stack(cols, dim=1)


class ImageTable(torch.utils.data.Dataset):
    """Images of one split with their label ids; returns (image tensor, labels) per item.

    `pre` (deterministic PIL transforms) runs once per image when the split is cached in memory,
    `post` (augmentation, normalisation) on uint8 tensors every time.
    """

    def __init__(self, root: Path, images: Sequence[str], labels: torch.Tensor, pre, post):
        self.root, self.images, self.labels = root, list(images), labels
        self.pre, self.post = pre, post
        self.cache: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def decode(self, i: int) -> torch.Tensor:
        path = self.root / self.images[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                for t in self.pre:
                    im = t(im)
                return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        except (OSError, ValueError) as e:
            raise SuiteError(f"cannot read image {path} ({e}); re-run A1") from None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.cache[i] if self.cache is not None else self.decode(i)
        for t in self.post:
            x = t(x)
        return x, self.labels[i]

    def fill_cache(self, workers: int) -> None:
        """Decode every image once (in parallel when workers > 0) and keep the uint8 tensors."""
        loader = DataLoader(_Decoder(self), batch_size=64, num_workers=workers, collate_fn=_as_list)
        # clone: tensors from workers live in shared memory, one file descriptor each
        self.cache = [x.clone() if workers else x for batch in loader for x in batch]

    def estimated_bytes(self) -> int:
        """Memory the cache would take: pre-transformed to image_size (aspect up to 2:1) or as stored."""
        if not self.images:
            return 0
        if self.pre:
            size = self.pre[0].size
            per = 3 * 2 * (size if isinstance(size, int) else max(size)) ** 2
        else:
            with Image.open(self.root / self.images[0]) as im:
                per = 3 * im.width * im.height
        return per * len(self.images)


def _as_list(batch: list) -> list:
    return batch


class _Decoder(torch.utils.data.Dataset):
    def __init__(self, table: ImageTable):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.table.decode(i)


def load_split(
    data_root: Path, dataset: str, split: str, config: Mapping[str, Any], train: bool
) -> ImageTable:
    """One processed split as an ImageTable with the train or test transform of `config`."""
    df = read_split(data_root, dataset, split)
    labels = read_labels(data_root, dataset)
    ids = label_ids(df, labels, config["attributes"], f"{split}.csv of {dataset}")
    pre, post = transform_parts(config, train)
    return ImageTable(dataset_dir(data_root, dataset), df["image"].tolist(), ids, pre, post)


def maybe_cache(table: ImageTable, workers: int, name: str) -> None:
    if table.estimated_bytes() <= CACHE_BYTES:
        t0 = time.time()
        table.fill_cache(workers)
        log.info("decoded %d %s images into memory (%.1f s)", len(table), name, time.time() - t0)


# ---------------------------------------------------------------------------------------------
# Devices, DDP, precision


@dataclass
class Runtime:
    """Where this process trains: device, DDP rank/world, autocast dtype, loader workers."""

    device: torch.device
    rank: int = 0
    world: int = 1
    amp_dtype: torch.dtype | None = None
    workers: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def make_runtime(device: torch.device, workers: int | None = None) -> Runtime:
    """Join the torchrun process group if there is one (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp = None
    if device.type == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    workers = default_workers(device, world) if workers is None else workers
    return Runtime(device, rank, world, amp, workers)


def default_workers(device: torch.device, processes: int = 1) -> int:
    """CPU: 0 (keep it simple); GPU: enough decoding processes to keep it busy."""
    if device.type == "cpu":
        return 0
    return max(2, min(12, (os.cpu_count() or 2) // processes - 1))


def all_sum(rt: Runtime, t: torch.Tensor) -> torch.Tensor:
    if rt.distributed:
        tdist.all_reduce(t)
    return t


def loader(table: ImageTable, rt: Runtime, batch_size: int, sampler, drop_last: bool = False):
    cuda = rt.device.type == "cuda"
    return DataLoader(
        table,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=rt.workers,
        pin_memory=cuda,
        drop_last=drop_last,
        persistent_workers=rt.workers > 0,
        prefetch_factor=4 if rt.workers > 0 else None,
    )


# ---------------------------------------------------------------------------------------------
# One epoch


def mean_ce(logits: Mapping[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """The B1 loss: mean over attributes of the cross-entropy (SPEC §4)."""
    losses = [
        nn.functional.cross_entropy(lg.float(), y[:, i]) for i, lg in enumerate(logits.values())
    ]
    return torch.stack(losses).mean()


def to_device(x: torch.Tensor, y: torch.Tensor, rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.to(rt.device, non_blocking=True)
    if rt.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(rt.device, non_blocking=True)


def train_step(model, x, y, optimizer, scheduler, scaler, rt: Runtime):
    """One optimisation step on a batch (autocast on CUDA); returns (loss, logits), not synced."""
    x, y = to_device(x, y, rt)
    with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
        _, logits = model(x)
        loss = mean_ce(logits, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.detach(), logits


def train_one_epoch(
    model, batches, optimizer, scheduler, scaler, rt: Runtime, attrs: Sequence[str]
):
    """One pass over the train loader; returns (mean loss, {attr: train accuracy})."""
    model.train()
    total = torch.zeros(2 + len(attrs), dtype=torch.float64, device=rt.device)  # loss, n, correct…
    for x, y in tqdm(batches, desc="train", leave=False, disable=None):
        loss, logits = train_step(model, x, y, optimizer, scheduler, scaler, rt)
        with torch.no_grad():
            y = y.to(rt.device, non_blocking=True)
            n = torch.tensor(y.shape[0], device=rt.device)
            correct = [(lg.argmax(1) == y[:, i]).sum() for i, lg in enumerate(logits.values())]
            total += torch.stack([loss * n, n, *correct])
    total = all_sum(rt, total).tolist()
    n = max(total[1], 1)
    return total[0] / n, {a: c / n for a, c in zip(attrs, total[2:], strict=True)}


@torch.no_grad()
def evaluate(model: Encoder, batches, rt: Runtime, attrs: Sequence[str]) -> dict[str, float]:
    """Per-attribute accuracy of the heads on a loader (eval mode; summed over DDP ranks)."""
    model.eval()
    total = torch.zeros(1 + len(attrs), dtype=torch.float64, device=rt.device)
    for x, y in batches:
        x, y = to_device(x, y, rt)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
            _, logits = model(x)
        correct = [(lg.argmax(1) == y[:, i]).sum() for i, lg in enumerate(logits.values())]
        total += torch.stack([torch.tensor(y.shape[0], device=rt.device), *correct])
    total = all_sum(rt, total).tolist()
    n = max(total[0], 1)
    return {a: c / n for a, c in zip(attrs, total[1:], strict=True)}


def lr_factor(recipe: Mapping[str, Any], steps_per_epoch: int):
    """Learning-rate factor per optimisation step: optional linear warm-up, then StepLR (the
    authors': ×lr_gamma every lr_step epochs) or, with schedule='cosine', a cosine decay to 0."""
    warm = int(recipe.get("warmup_epochs", 0) * steps_per_epoch)
    total = max(1, int(recipe["epochs"]) * steps_per_epoch - warm)
    cosine = recipe.get("schedule", "step") == "cosine"

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cosine:
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / total)))
        return recipe["lr_gamma"] ** (step // steps_per_epoch // recipe["lr_step"])

    return factor


def make_optimizer(model: nn.Module, recipe: Mapping[str, Any], rt: Runtime, steps_per_epoch=1):
    """Adam on the trainable parameters, the per-step schedule, a grad scaler for fp16 (SPEC §4)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(recipe, steps_per_epoch))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    return optimizer, scheduler, scaler


# ---------------------------------------------------------------------------------------------
# Checkpoints


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain containers and tensors (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    v, internal, gauss_next = state["python"]
    random.setstate((v, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_resumable(ckpt_config: Mapping[str, Any], config: Mapping[str, Any], path: Path) -> None:
    """A checkpoint must come from the same configuration as the flags; else say what differs."""
    diff = [k for k in RESUME_KEYS if ckpt_config.get(k) != config.get(k)]
    if diff:
        both = "; ".join(
            f"{k}: checkpoint {ckpt_config.get(k)!r} vs flags {config.get(k)!r}" for k in diff
        )
        raise SuiteError(
            f"{path} was trained with other settings ({both}); drop --resume to start over"
        )


# ---------------------------------------------------------------------------------------------
# The loop


def train_encoder(
    config: dict[str, Any],
    recipe: Mapping[str, Any],
    data_root: Path,
    out_dir: Path,
    rt: Runtime,
    seed: int,
    resume: bool = False,
) -> dict[str, Any]:
    """Train per `recipe` and write checkpoint.pt, encoder.pt, train_log.csv, curves.png to out_dir.

    Returns {"epochs", "test_accuracy", "seconds"}.
    """
    attrs = config["attributes"]
    ds = config["dataset"]
    train_set = load_split(data_root, ds, "train", config, train=True)
    test_set = load_split(data_root, ds, "test", config, train=False)
    maybe_cache(train_set, rt.workers, "train")
    maybe_cache(test_set, rt.workers, "test")

    model = build_encoder(config, recipe["pretrained"]).to(rt.device)
    if rt.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    torch.manual_seed(seed + rt.rank)  # same init on all ranks (DDP syncs it), own augmentation
    ddp = (
        nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device] if rt.device.type == "cuda" else None
        )
        if rt.distributed
        else model
    )

    batch = int(recipe["batch_size"])
    sampler = DistributedSampler(train_set, rt.world, rt.rank, shuffle=True, seed=seed)
    per_rank = math.ceil(len(train_set) / rt.world)
    train_batches = loader(train_set, rt, batch, sampler, drop_last=per_rank % batch == 1)
    test_part = torch.utils.data.Subset(test_set, range(rt.rank, len(test_set), rt.world))
    test_batches = loader(test_part, rt, max(batch, 256), None)

    optimizer, scheduler, scaler = make_optimizer(model, recipe, rt, len(train_batches))
    ckpt_path = out_dir / "checkpoint.pt"
    start, rows = 0, []
    if resume:
        ck = load_torch(ckpt_path, f"{B1_HINT} (without --resume)", map_location="cpu")
        check_resumable(ck["config"], config, ckpt_path)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        start, rows = int(ck["epoch"]), list(ck["log"])
        set_rng_state(ck["rng"])
        if rt.rank:
            torch.manual_seed(seed + rt.rank + 7919 * start)
        log.info("resumed from %s at epoch %d", ckpt_path, start)

    epochs = int(recipe["epochs"])
    every = max(1, int(recipe["checkpoint_every"]))
    t_start = time.time()
    for epoch in range(start + 1, epochs + 1):
        t0 = time.time()
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        loss, train_acc = train_one_epoch(
            ddp, train_batches, optimizer, scheduler, scaler, rt, attrs
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
            save_torch(
                ckpt_path,
                {
                    "config": config,
                    "recipe": dict(recipe),
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(),
                    "sampler": {"seed": seed, "epoch": epoch},
                    "log": rows,
                },
            )
        if rt.main:
            write_log(out_dir, rows)

    if rt.main:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_torch(out_dir / "encoder.pt", {"config": config, "model": state})
        write_log(out_dir, rows)
        plot_curves(out_dir / "curves.png", rows, attrs)
    if rt.distributed:
        tdist.barrier()
    final = {a: rows[-1][f"test_acc_{a}"] for a in attrs} if rows else {}
    return {"epochs": epochs, "test_accuracy": final, "seconds": round(time.time() - t_start, 2)}


def write_log(out_dir: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(out_dir / "train_log.csv", pd.DataFrame(rows))


def plot_curves(path: Path, rows: list[dict[str, Any]], attrs: Sequence[str]) -> None:
    """Train loss and per-attribute train/test accuracy against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from src.artifacts import atomic_path

    df = pd.DataFrame(rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(df["epoch"], df["train_loss"], marker="o")
    ax1.set(xlabel="epoch", ylabel="train loss (mean CE)", title="loss")
    for a in attrs:
        (line,) = ax2.plot(df["epoch"], df[f"test_acc_{a}"], marker="o", label=f"{a} test")
        ax2.plot(
            df["epoch"], df[f"train_acc_{a}"], ls="--", color=line.get_color(), label=f"{a} train"
        )
    ax2.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
