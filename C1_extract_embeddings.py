"""C1 — embed every train and test image with a trained encoder (eval mode).

    python C1_extract_embeddings.py --dataset synthart            # run = the dataset's default run
    python C1_extract_embeddings.py --run cub_resnet50_e128_ft    # any B1 run
    python C1_extract_embeddings.py --dataset cub --train-transform test

Test images get the test transform. Train images get the encoder's training transform (random
crop and flips, seeded per image by --seed; aPY its square resize), as the authors' C1 did and
D1 distils on, or with --train-transform test the test transform; the default is the dataset's
registry entry (paper datasets: train; SynthArt: test). Writes weights/<run>/embeddings.npz (image,
split, label_<attr>, z) and metrics.json ({"test_accuracy": {attr: accuracy of the heads},
"train_transform": "train"|"test", "augmentation_seed": seed or null, …}), atomically.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from src.argtypes import int_at_least, run_name_arg
from src.artifacts import run_dir, stage_config, write_json
from src.atomic import atomic_files, stage_lock
from src.cli import add_device_arg, resolve_device, run_stage, setup_logging, stage_parser
from src.embeddings import TRAIN_TRANSFORMS, extract_embeddings, save_embeddings
from src.errors import SuiteError
from src.method.encoder import load_encoder
from src.runs import RUN_HELP, resolve_run
from src.tasks import DATASET_HELP, get_dataset
from src.training.engine import default_workers

log = logging.getLogger("src.C1")


def parse_args(argv: list[str] | None):
    p = stage_parser(__doc__.split("\n")[0])
    p.add_argument(
        "--dataset",
        metavar="DATASET",
        help=f"embed the dataset's only run (see --run): {DATASET_HELP}",
    )
    p.add_argument("--run", type=run_name_arg, help=RUN_HELP)
    p.add_argument(
        "--batch-size", type=int_at_least(1), default=256, help="images per forward pass"
    )
    p.add_argument(
        "--train-transform",
        choices=TRAIN_TRANSFORMS,
        help="transform for the train split's embeddings: the encoder's training transform "
        "(seeded random crop + flips, as the authors' C1) or its test transform "
        "(default: the dataset's registry entry; paper datasets: train, SynthArt: test)",
    )
    add_device_arg(p)
    args = p.parse_args(argv)
    if not args.dataset and not args.run:
        p.error("give --dataset or --run")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    run = resolve_run(args.weights_root, args.dataset, args.run)
    out = run_dir(args.weights_root, run)
    with stage_lock(out / "embeddings.npz"):
        extract(args, run, out)


def extract(args, run: str, out: Path) -> None:
    """Embed both splits and write embeddings.npz and metrics.json together (both or neither)."""
    device = resolve_device(args.device)
    model, config = load_encoder(out, device)
    if args.dataset and config["dataset"] != args.dataset:
        raise SuiteError(f"run {run} was trained on {config['dataset']}, not {args.dataset}")
    spec = get_dataset(config["dataset"], args.data_root)
    train_transform = args.train_transform or spec.c1_train_transform  # resolved, not written back
    t0 = time.time()
    workers = default_workers(device)
    arrays, accuracy = extract_embeddings(
        model,
        config,
        args.data_root,
        device,
        args.batch_size,
        workers,
        train_transform=train_transform,
        seed=args.seed,
    )
    seconds = time.time() - t0
    counts = {s: int((arrays["split"] == s).sum()) for s in ("train", "test")}
    with atomic_files(out, ["embeddings.npz", "metrics.json"]) as tmp:
        save_embeddings(tmp, arrays)
        write_json(
            tmp / "metrics.json",
            {
                "test_accuracy": accuracy,
                "train_transform": train_transform,  # which transform the train split got
                "augmentation_seed": args.seed if train_transform == "train" else None,
                **stage_config(
                    args,
                    {"train_transform": train_transform},
                    run=run,
                    counts=counts,
                    seconds=round(seconds, 2),
                ),
            },
        )
    path = out / "embeddings.npz"
    log.info(
        "C1 %s: %d train (%s transform) + %d test embeddings (E=%d) in %.1f s → %s; "
        "heads' test accuracy %s",
        run,
        counts["train"],
        train_transform,
        counts["test"],
        arrays["z"].shape[1],
        seconds,
        path,
        ", ".join(f"{a}={v:.3f}" for a, v in accuracy.items()),
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
