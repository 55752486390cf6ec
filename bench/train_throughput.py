"""Images/s of the B1 training step per backbone and precision: synthetic tensors vs the real loader.

    python bench/train_throughput.py                       # CPU (and CUDA when present), SynthArt loader
    python bench/train_throughput.py --device cuda --backbones convnext_base,resnet50 --steps 50
    python bench/train_throughput.py --dataset cub --data-root data --out bench/train_cuda.md

"synthetic": random input tensors already on the device (the model's ceiling); "loader": the
DataLoader B1 builds (decode/cache, augmentation, pinned copies) feeding the same step, so a
starving input pipeline shows as a ratio below 1. Prints a markdown table (and writes --out).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data import load_split, maybe_cache  # noqa: E402
from src.encoder import build_encoder, encoder_config  # noqa: E402
from src.engine import (  # noqa: E402
    Runtime,
    loader,
    make_optimizer,
    make_runtime,
    train_step,
)
from src.tasks import AUTHORS_TRAINING  # noqa: E402

# backbone → (image size, batch) per device type; CPU runs stay short.
PLAN = {
    "cpu": {"convnext_atto": (48, 32), "resnet50": (64, 32), "convnext_base": (224, 8)},
    "cuda": {
        "convnext_atto": (48, 256),
        "convnext_base": (224, 64),
        "resnet50": (224, 64),
        "vgg16_bn": (224, 64),
        "vit_b_16": (224, 64),
    },
}


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(model, batches, rt: Runtime, recipe: dict, steps: int, warmup: int) -> float:
    """Images/s of `steps` train steps after `warmup` steps; `batches` is an endless iterator."""
    optimizer, scheduler, scaler = make_optimizer(model, recipe, rt)
    model.train()
    for _ in range(warmup):
        train_step(model, *next(batches), optimizer, scheduler, scaler, rt)
    sync(rt.device)
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        x, y = next(batches)
        train_step(model, x, y, optimizer, scheduler, scaler, rt)
        n += x.shape[0]
    sync(rt.device)
    return n / (time.perf_counter() - t0)


def synthetic(batch: int, size: int, config: dict, rt: Runtime):
    x = torch.randn(batch, 3, size, size, device=rt.device)
    y = torch.stack(
        [torch.randint(0, c, (batch,), device=rt.device) for c in config["num_classes"].values()], 1
    )
    while True:
        yield x, y


def real(table, batch: int, rt: Runtime):
    dl = loader(table, rt, batch, torch.utils.data.RandomSampler(table), drop_last=True)
    while True:
        yield from dl


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="all", help="cpu, cuda, or all (CPU, and CUDA when present)")
    p.add_argument("--backbones", default=None, help="comma-separated (default: a plan per device)")
    p.add_argument("--dataset", default="synthart")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 CPU, 30 CUDA)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: as B1)")
    p.add_argument("--no-loader", action="store_true", help="synthetic input only")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = p.parse_args(argv)

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    labels = None
    rows = []
    for dname in devices:
        rt = make_runtime(torch.device(dname), args.workers)
        precisions = [None]
        if rt.device.type == "cuda":
            precisions += [torch.bfloat16] if torch.cuda.is_bf16_supported() else []
            precisions += [torch.float16]
        plan = PLAN[rt.device.type]
        names = args.backbones.split(",") if args.backbones else list(plan)
        steps = args.steps or (3 if rt.device.type == "cpu" else 30)
        warmup = 1 if rt.device.type == "cpu" else 5
        for name in names:
            size, batch = plan.get(name, (224, 64 if rt.device.type == "cuda" else 8))
            if labels is None and not args.no_loader:
                from src.datasets.common import read_labels

                labels = read_labels(args.data_root, args.dataset)
            lab = labels or {
                "style": [str(i) for i in range(27)],
                "genre": [str(i) for i in range(11)],
            }
            config = encoder_config(args.dataset, name, 256, False, lab, size, False)
            table = None
            if not args.no_loader:
                table = load_split(args.data_root, args.dataset, "train", config, train=True)
                maybe_cache(table, rt.workers, "train")
            for amp in precisions:
                rt.amp_dtype = amp
                torch.manual_seed(0)
                model = build_encoder(config).to(rt.device)
                if rt.device.type == "cuda":
                    model = model.to(memory_format=torch.channels_last)
                recipe = AUTHORS_TRAINING
                syn = measure(model, synthetic(batch, size, config, rt), rt, recipe, steps, warmup)
                ld = None
                if table is not None:
                    ld = measure(model, real(table, batch, rt), rt, recipe, steps, warmup)
                row = {
                    "device": device_name(rt.device),
                    "backbone": name,
                    "px": size,
                    "batch": batch,
                    "precision": str(amp or "fp32").replace("torch.", ""),
                    "synthetic img/s": f"{syn:.1f}",
                    "loader img/s": f"{ld:.1f}" if ld else "–",
                    "loader/synthetic": f"{ld / syn:.2f}" if ld else "–",
                }
                print(" | ".join(f"{k}={v}" for k, v in row.items()), flush=True)
                rows.append(row)
                del model
                if rt.device.type == "cuda":
                    torch.cuda.empty_cache()
    table_md = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    table_md += "".join("| " + " | ".join(map(str, r.values())) + " |\n" for r in rows)
    print()
    print(table_md)
    if args.out:
        args.out.write_text(table_md)


if __name__ == "__main__":
    main()
