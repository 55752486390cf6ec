"""Images/s of the B1 training step per backbone and precision: synthetic tensors vs the real loader.

    python bench/train_throughput.py                       # CPU (and CUDA when present), SynthArt loader
    python bench/train_throughput.py --device cuda --backbones convnext_base,resnet50 --steps 50
    python bench/train_throughput.py --dataset cub --data-root data --out bench/train_cuda.md
    python bench/train_throughput.py --device cuda --backbones convnext_base --precision bf16 \
        --workers-sweep 0,2,4,8,12                      # make gpu-check's: workers B1 needs

"synthetic": random input tensors already on the device (the model's ceiling); "loader": the
DataLoader B1 builds (decode/cache, augmentation, pinned copies) feeding the same step, so a
starving input pipeline shows as a ratio below 1. Prints a markdown table (and writes --out).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data import load_split, maybe_cache  # noqa: E402
from src.method.encoder import build_encoder, encoder_config  # noqa: E402
from src.tasks import AUTHORS_TRAINING  # noqa: E402
from src.training.engine import (  # noqa: E402
    Runtime,
    loader,
    make_runtime,
    make_train_state,
    to_device,
    train_step,
)

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
    state = make_train_state(model, recipe, rt)
    model.train()
    for _ in range(warmup):
        train_step(state, *to_device(*next(batches), rt), rt)
    sync(rt.device)
    n, t0 = 0, time.perf_counter()
    for _ in range(steps):
        x, y = to_device(*next(batches), rt)  # the loader's host→device copy is timed, as in B1
        train_step(state, x, y, rt)
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


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LOADER_TARGET = 0.9  # the loader keeps up when it reaches this share of synthetic-input speed


def precisions_for(dev: torch.device, wanted: str | None) -> list[torch.dtype | None]:
    """--precision's list, or every precision the device runs (CPU: fp32 only)."""
    if wanted:
        return [PRECISIONS[w] for w in wanted.split(",")]
    if dev.type != "cuda":
        return [None]
    return [None] + ([torch.bfloat16] if torch.cuda.is_bf16_supported() else []) + [torch.float16]


def worker_sweep(model, table, batch: int, rt: Runtime, counts: list[int], syn: float, steps: int,
                 warmup: int) -> list[dict]:  # fmt: skip
    """Loader img/s for each worker count in turn, stopping at the first that keeps up (≥ 90 % of
    synthetic input), so the sweep costs at most one measurement past the answer."""
    out = []
    for w in counts:
        rt.workers = w
        ld = measure(model, real(table, batch, rt), rt, AUTHORS_TRAINING, steps, warmup)
        out.append({"workers": w, "loader img/s": ld, "loader/synthetic": ld / syn})
        print(f"  {w} loader workers: {ld:.1f} img/s = {ld / syn:.2f} × synthetic", flush=True)
        if ld >= LOADER_TARGET * syn:
            break
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="all", help="cpu, cuda, or all (CPU, and CUDA when present)")
    p.add_argument("--backbones", default=None, help="comma-separated (default: a plan per device)")
    p.add_argument("--dataset", default="synthart")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 CPU, 30 CUDA)")
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: as B1)")
    p.add_argument(
        "--workers-sweep",
        default=None,
        metavar="N,N,…",
        help="time the loader with each worker count in turn until it reaches 90 %% of the "
        "synthetic-input speed (e.g. 0,2,4,8,12); reports how many workers B1 needs",
    )
    p.add_argument(
        "--precision", default=None, help="fp32,bf16,fp16 (default: all the device runs)"
    )
    p.add_argument("--image-size", type=int, default=None, help="px (default: the plan's)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the plan's)")
    p.add_argument("--no-loader", action="store_true", help="synthetic input only")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    p.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = p.parse_args(argv)

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d != "cuda" or torch.cuda.is_available()]
    sweep = [int(w) for w in args.workers_sweep.split(",")] if args.workers_sweep else None
    labels = None
    rows, records = [], []
    for dname in devices:
        rt = make_runtime(torch.device(dname), args.workers)
        workers = rt.workers
        plan = PLAN[rt.device.type]
        names = args.backbones.split(",") if args.backbones else list(plan)
        steps = args.steps or (3 if rt.device.type == "cpu" else 30)
        warmup = 1 if rt.device.type == "cpu" else 5
        for name in names:
            size, batch = plan.get(name, (224, 64 if rt.device.type == "cuda" else 8))
            size, batch = args.image_size or size, args.batch or batch
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
                maybe_cache(table, max([workers, *(sweep or [])]), "train")
            for amp in precisions_for(rt.device, args.precision):
                rt.amp_dtype = amp
                torch.manual_seed(0)
                model = build_encoder(config).to(rt.device)
                if rt.device.type == "cuda":
                    model = model.to(memory_format=torch.channels_last)
                recipe = AUTHORS_TRAINING
                syn = measure(model, synthetic(batch, size, config, rt), rt, recipe, steps, warmup)
                ld, swept = None, []
                if table is not None and sweep:
                    swept = worker_sweep(model, table, batch, rt, sweep, syn, steps, warmup)
                    ld = swept[-1]["loader img/s"]
                    rt.workers = workers
                elif table is not None:
                    ld = measure(model, real(table, batch, rt), rt, recipe, steps, warmup)
                used = swept[-1]["workers"] if swept else rt.workers
                row = {
                    "device": device_name(rt.device),
                    "backbone": name,
                    "px": size,
                    "batch": batch,
                    "precision": str(amp or "fp32").replace("torch.", ""),
                    "synthetic img/s": f"{syn:.1f}",
                    "loader img/s": f"{ld:.1f}" if ld else "–",
                    "loader/synthetic": f"{ld / syn:.2f}" if ld else "–",
                    "loader workers": used if ld else "–",
                }
                print(" | ".join(f"{k}={v}" for k, v in row.items()), flush=True)
                rows.append(row)
                records.append(
                    {
                        **row,
                        "synthetic img/s": syn,
                        "loader img/s": ld,
                        "loader/synthetic": ld / syn if ld else None,
                        "loader workers": used if ld else None,
                        "sweep": swept,
                    }
                )
                del model
                if rt.device.type == "cuda":
                    torch.cuda.empty_cache()
    if not rows:
        raise SystemExit("error: nothing measured (--device cuda without a CUDA device?)")
    table_md = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    table_md += "".join("| " + " | ".join(map(str, r.values())) + " |\n" for r in rows)
    print()
    print(table_md)
    if args.out:
        args.out.write_text(table_md)
    if args.json:
        args.json.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
