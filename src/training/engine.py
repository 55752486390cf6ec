"""The B1 engine: the training state, one step, one epoch, the evaluation and the LR schedule.

Kept apart from the data (src/data.py), the checkpoints (src/training/checkpoint.py) and the loop
that ties them together (src/training/loop.py), as in ConvNeXt's and MAE's engine.py. One code
path for CPU, one GPU and `torchrun` (DDP): bf16/fp16 autocast (the Recipe's precision, on any
device) and channels_last (on CUDA by default).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from src.data import ImageTable, head_hits
from src.errors import SuiteError
from src.method.encoder import Encoder
from src.progress import progress
from src.tasks import Recipe

# ---------------------------------------------------------------------------------------------
# Devices, DDP, precision


@dataclass
class Runtime:
    """Where this process trains: device, DDP rank/world, autocast dtype, memory layout, workers.

    channels_last (default: on CUDA) and pinned memory (on CUDA) are fields and properties, not
    device checks spread over the code, so the tests can take every CUDA branch on the CPU.
    """

    device: torch.device
    rank: int = 0
    world: int = 1
    amp_dtype: torch.dtype | None = None
    workers: int = 0
    channels_last: bool | None = None  # None: on CUDA (faster convolutions with tensor cores)

    def __post_init__(self) -> None:
        if self.channels_last is None:
            self.channels_last = self.device.type == "cuda"

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def pin_memory(self) -> bool:
        """Page-locked loader batches, so host→GPU copies can run asynchronously (non_blocking)."""
        return self.device.type == "cuda"

    @property
    def precision(self) -> str:
        """The precision's name as config.json records it: fp32, bf16 or fp16."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """A Recipe's precision → the autocast dtype on `device` (None: fp32, no autocast)."""
    if precision == "auto":  # the accelerator's mixed precision, fp32 on the CPU
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise SuiteError(f"--precision {precision!r}: choose one of fp32, bf16, fp16, auto")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SuiteError(f"--precision bf16: {device} does not support bfloat16; use fp16 or fp32")
    return dtypes[precision]


def make_runtime(
    device: torch.device, workers: int | None = None, precision: str = "auto"
) -> Runtime:
    """Join the torchrun process group if there is one (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    amp = amp_dtype(precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if amp is not None:  # fp32 keeps torch's defaults (the authors' fp32 matmuls)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
    workers = default_workers(device, world) if workers is None else workers
    return Runtime(device, rank, world, amp, workers)


def default_workers(device: torch.device, processes: int = 1) -> int:
    """CPU: 0 — measured on a 2-core CPU (bench/loaders.py, bench/RESULTS.md), a worker saved
    nothing: decoding a megapixel JPEG is ~2 % of a convnext_base step at 224 px and the worker
    takes a core from the model's threads. GPU: enough decoding processes to keep it busy."""
    if device.type == "cpu":
        return 0
    return max(2, min(12, (os.cpu_count() or 2) // processes - 1))


def all_sum(rt: Runtime, t: torch.Tensor) -> torch.Tensor:
    if rt.distributed:
        tdist.all_reduce(t)
    return t


def all_min(rt: Runtime, t: torch.Tensor) -> torch.Tensor:
    if rt.distributed:
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
    return t


def loader(table: ImageTable, rt: Runtime, batch_size: int, sampler, drop_last: bool = False):
    """The DataLoader of a split for this runtime (pinned memory on CUDA, persistent workers)."""
    return DataLoader(
        table,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=rt.workers,
        pin_memory=rt.pin_memory,
        drop_last=drop_last,
        persistent_workers=rt.workers > 0,
        prefetch_factor=4 if rt.workers > 0 else None,
    )


# ---------------------------------------------------------------------------------------------
# The training state

STATE_KEYS = ("model", "optimizer", "scheduler", "scaler")  # checkpoint.pt's keys for TrainState


@dataclass
class TrainState:
    """What training updates, as one object: the encoder, its optimiser, the per-step LR schedule
    and the fp16 grad scaler; checkpoint.pt saves and restores the four together."""

    model: nn.Module  # the encoder itself: what checkpoints save and `evaluate` runs
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    forward: nn.Module  # what a step calls: `model`, or its DDP wrapper under torchrun

    def state_dict(self) -> dict[str, Any]:
        """The four states under checkpoint.pt's keys (STATE_KEYS)."""
        return {k: getattr(self, k).state_dict() for k in STATE_KEYS}

    def load_state_dict(self, ck: Mapping[str, Any]) -> None:
        for k in STATE_KEYS:
            getattr(self, k).load_state_dict(ck[k])


# ---------------------------------------------------------------------------------------------
# One epoch


def mean_ce(
    logits: Mapping[str, torch.Tensor], y: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """The B1 loss: mean over attributes of the cross-entropy (SPEC §4; the authors' without
    label smoothing)."""
    losses = [
        F.cross_entropy(lg.float(), y[:, i], label_smoothing=label_smoothing)
        for i, lg in enumerate(logits.values())
    ]
    return torch.stack(losses).mean()


def to_device(x: torch.Tensor, y: torch.Tensor, rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch on the runtime's device (and in its memory layout)."""
    x = x.to(rt.device, non_blocking=True)  # asynchronous from pinned memory on CUDA
    if rt.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(rt.device, non_blocking=True)


def cutmix(x: torch.Tensor, alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """CutMix (Yun et al. 2019): a box of a random partner image pasted into each image, its
    area 1 − λ with λ ~ Beta(α, α); returns (mixed batch, partner order, λ as the box left it)."""
    perm = torch.randperm(x.shape[0], device=x.device)
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    h, w = x.shape[-2:]
    ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)  # clipped at the border: λ from the box
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return mixed, perm, 1 - (y1 - y0) * (x1 - x0) / (h * w)


def train_step(
    state: TrainState,
    x: torch.Tensor,
    y: torch.Tensor,
    rt: Runtime,
    label_smoothing: float = 0.0,
    mix: str = "none",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimisation step on a batch already on the device (`to_device`), autocast per
    rt.amp_dtype, with CutMix when `mix` asks for it; returns (loss, logits), unsynced."""
    perm, lam = None, 1.0
    if mix == "cutmix":
        x, perm, lam = cutmix(x)
    with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
        _, logits = state.forward(x)
        loss = mean_ce(logits, y, label_smoothing=label_smoothing)
        if perm is not None:  # each image's labels by its share of the pixels
            loss = lam * loss + (1 - lam) * mean_ce(
                logits, y[perm], label_smoothing=label_smoothing
            )
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    return loss.detach(), logits


def train_one_epoch(
    state: TrainState,
    batches,
    rt: Runtime,
    attrs: Sequence[str],
    epoch: int = 0,
    on_pace=None,
    label_smoothing: float = 0.0,
    mix: str = "none",
) -> tuple[float, dict[str, float]]:
    """One pass over the train loader; returns (mean loss, {attr: train accuracy}).

    Stops with a SuiteError when a step's loss was not finite (a diverged run, SPEC §4's loss).
    """
    state.forward.train()
    total = torch.zeros(2 + len(attrs), dtype=torch.float64, device=rt.device)  # loss, n, correct…
    # first step whose loss was not finite; kept on the device so no step waits for a sync
    first_bad = torch.full((), math.inf, dtype=torch.float64, device=rt.device)
    per_step = (getattr(batches, "batch_size", None) or 1) * rt.world
    bar = progress(
        batches,
        f"B1 epoch {epoch}",
        unit="img",
        per_step=per_step,
        enabled=rt.main,
        on_pace=on_pace,
    )
    for step, (x, y) in enumerate(bar, 1):
        x, y = to_device(x, y, rt)
        loss, logits = train_step(state, x, y, rt, label_smoothing, mix)
        bar.loss = loss  # read only when a progress line is written
        with torch.no_grad():
            # torch.full, not torch.tensor(int, device=…): a blocking host→GPU copy syncs the stream
            n = torch.full((), y.shape[0], device=rt.device)
            total += torch.cat([torch.stack([loss * n, n]), head_hits(logits, y)])
            first_bad = torch.where(torch.isfinite(loss), first_bad, first_bad.clamp(max=step))
    check_finite(all_min(rt, first_bad).item(), epoch, state.optimizer)
    total = all_sum(rt, total).tolist()
    n = max(total[1], 1)
    return total[0] / n, {a: c / n for a, c in zip(attrs, total[2:], strict=True)}


def check_finite(first_bad_step: float, epoch: int, optimizer: torch.optim.Optimizer) -> None:
    """Fail in one line when the loss diverged (else a broken encoder surfaces only in E1)."""
    if math.isfinite(first_bad_step):
        lr = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
        raise SuiteError(
            f"B1 diverged: the loss is not finite at epoch {epoch}, step {int(first_bad_step)} "
            f"(lr {lr:.3g}); re-run with a lower --lr, e.g. --lr {lr / 10:.3g}"
        )


@torch.no_grad()
def evaluate(model: Encoder, batches, rt: Runtime, attrs: Sequence[str]) -> dict[str, float]:
    """Per-attribute accuracy of the heads on a loader (eval mode; summed over DDP ranks)."""
    model.eval()
    total = torch.zeros(1 + len(attrs), dtype=torch.float64, device=rt.device)
    for x, y in batches:
        x, y = to_device(x, y, rt)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype, enabled=rt.amp_dtype is not None):
            _, logits = model(x)
        total += torch.cat([torch.full((1,), y.shape[0], device=rt.device), head_hits(logits, y)])
    total = all_sum(rt, total).tolist()
    n = max(total[0], 1)
    return {a: c / n for a, c in zip(attrs, total[1:], strict=True)}


def lr_factor(recipe: Recipe, steps_per_epoch: int):
    """Learning-rate factor per optimisation step: optional linear warm-up, then StepLR (the
    authors': ×lr_gamma every lr_step epochs) or, with schedule='cosine', a cosine decay to 0."""
    warm = int(recipe.warmup_epochs * steps_per_epoch)
    total = max(1, recipe.epochs * steps_per_epoch - warm)
    cosine = recipe.schedule == "cosine"

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cosine:
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / total)))
        return recipe.lr_gamma ** (step // steps_per_epoch // recipe.lr_step)

    return factor


def schedule_warnings(recipe: Recipe) -> list[str]:
    """One line per way the learning-rate schedule cannot do what its flags say within --epochs
    (B1 warns with them before it trains)."""
    out = []
    if recipe.schedule == "step" and recipe.lr_step >= recipe.epochs:
        out.append(
            f"WARNING: --lr-step {recipe.lr_step} with --epochs {recipe.epochs}: the step schedule "
            "never lowers the learning rate; pass a smaller --lr-step or --schedule cosine"
        )
    if recipe.warmup_epochs >= recipe.epochs:
        out.append(
            f"WARNING: --warmup-epochs {recipe.warmup_epochs:g} with --epochs {recipe.epochs}: the "
            f"warm-up lasts the whole run, so the learning rate only climbs to "
            f"{recipe.epochs / recipe.warmup_epochs:.0%} of --lr {recipe.lr:g} at the last step; "
            "pass fewer --warmup-epochs (or more --epochs)"
        )
    return out


def make_train_state(
    model: nn.Module,
    recipe: Recipe,
    rt: Runtime,
    steps_per_epoch: int = 1,
    forward: nn.Module | None = None,
) -> TrainState:
    """Adam (SPEC §4) or AdamW on the trainable parameters, the per-step schedule, a grad scaler
    for fp16; `forward`: the module steps call when not `model` (its DDP wrapper)."""
    params = [p for p in model.parameters() if p.requires_grad]
    adam = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[recipe.optimizer]
    optimizer = adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(recipe, steps_per_epoch))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    return TrainState(model, optimizer, scheduler, scaler, forward or model)
