"""C1 — embed every train and test image with a trained encoder (eval mode), partition by partition.

    python C1_extract_embeddings.py --dataset synthart            # run = the dataset's default run
    python C1_extract_embeddings.py --run cub_resnet50_e128_ft    # any B1 run
    torchrun --nproc_per_node=8 C1_extract_embeddings.py --dataset wikiart   # every GPU (and node)
    srun --ntasks=16 python C1_extract_embeddings.py --dataset wikiart       # SLURM

Test images get the test transform. Train images get the encoder's training transform (random
crop and flips, seeded per image by --seed; aPY its square resize), as the authors' C1 did and
D1 distils on, or with --train-transform test the test transform; the default is the dataset's
registry entry (paper datasets: train; SynthArt: test). The rows (train then test) are cut into
partitions of --partition-rows; rank r of a launch of W processes (torchrun's RANK/WORLD_SIZE or
SLURM's SLURM_PROCID/SLURM_NTASKS) embeds partitions r, r + W, … and writes each as soon as it is
done (weights/<run>/embeddings.partial/part-NNNNN/: z.npy, image.npy, split.npy, label_<attr>.npy).
The rank that finds every partition written publishes the set as weights/<run>/embeddings/ with
manifest.json, and metrics.json ({"test_accuracy": {attr: accuracy of the heads},
"train_transform": "train"|"test", "augmentation_seed": seed or null, …}). A rerun computes only
the partitions missing. The set is the same bits whatever the number of ranks (with the same
threads per process: docs/stages.md).
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from pathlib import Path

from src.argtypes import int_at_least, run_name_arg
from src.artifacts import run_dir, stage_config, write_json
from src.cli import add_device_arg, resolve_device, run_stage, setup_logging, stage_parser
from src.embeddings import TRAIN_TRANSFORMS, Extraction, plan, test_accuracy
from src.errors import SuiteError
from src.hints import hint
from src.method.encoder import load_encoder
from src.partitions import FOLDER, begin, done, finish, write_partition
from src.ranks import Rank, rank_device, this_rank
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
        "--partition-rows",
        type=int_at_least(1),
        default=100_000,
        help="rows per partition: the unit a rank writes (and a rerun recomputes) at once",
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
    extract(args, run, run_dir(args.weights_root, run), this_rank())


def finish_command(args, run: str, train_transform: str) -> str:
    """The C1 command that finishes (or recomputes) this set, whatever launched it."""
    flags = ["--run", run, "--batch-size", str(args.batch_size)]
    flags += ["--partition-rows", str(args.partition_rows), "--train-transform", train_transform]
    flags += ["--seed", str(args.seed)] if train_transform == "train" else []
    for flag, value, default in (("--data-root", args.data_root, "data"),
                                 ("--weights-root", args.weights_root, "weights")):  # fmt: skip
        flags += [flag, str(value)] if str(value) != default else []
    return hint("C1", *flags)


def extract(args, run: str, out: Path, rank: Rank) -> None:
    """Embed this rank's missing partitions; publish the set (and metrics.json) when complete."""
    import torch  # here, not above `src` (its import chooses the OpenMP wait policy first)

    device = rank_device(resolve_device(args.device), rank, torch.cuda.device_count())
    model, config = load_encoder(out, device)
    if args.dataset and config["dataset"] != args.dataset:
        raise SuiteError(f"run {run} was trained on {config['dataset']}, not {args.dataset}")
    spec = get_dataset(config["dataset"], args.data_root)
    train_transform = args.train_transform or spec.c1_train_transform  # resolved, not written back
    workers = default_workers(device, rank.local_world)
    job = Extraction(model, config, args.data_root, device, args.batch_size, workers,
                     train_transform=train_transform, seed=args.seed)  # fmt: skip
    settings = {
        "train_transform": train_transform,
        "seed": args.seed if train_transform == "train" else None,
        "batch_size": args.batch_size,
    }
    command = finish_command(args, run, train_transform)
    the_plan = plan(out, args.data_root, job, args.partition_rows, settings, command)
    partial = begin(out, the_plan)
    if partial is None:
        log.info("C1 %s: %s already holds these embeddings; nothing to do", run, out / FOLDER)
        return
    t0, written = time.time(), 0
    for p in the_plan.mine(rank):
        if p in done(partial):  # looked up each time: another launch may have written it
            continue
        if not partial.exists():  # the set was published meanwhile (every partition was there)
            break
        t = time.time()
        arrays, info = job.embed(*the_plan.bounds(p))
        who = {"rank": rank.rank, "world": rank.world, "host": socket.gethostname()}
        info |= {"seconds": round(time.time() - t, 3), "device": str(device), **who}
        written += write_partition(partial, the_plan, p, arrays, info) is not None
    counts = {s: len(table) for s, _, table in job.splits}

    def write_metrics(infos: list[dict]) -> None:
        accuracy = test_accuracy(infos, job.attrs)
        seconds = sum(float(i["seconds"]) for i in infos)  # embedding time over all ranks
        write_json(
            out / "metrics.json",
            {
                "test_accuracy": accuracy,
                "train_transform": train_transform,  # which transform the train split got
                "augmentation_seed": args.seed if train_transform == "train" else None,
                **stage_config(
                    args,
                    {"train_transform": train_transform},
                    run=run,
                    counts=counts,
                    partitions=the_plan.count,
                    seconds=round(seconds, 2),
                ),
            },
        )
        log.info(
            "C1 %s: %d train (%s transform) + %d test embeddings (E=%d) in %d partitions, "
            "%.1f s of embedding → %s; heads' test accuracy %s",
            run, counts["train"], train_transform, counts["test"], config["embedding_size"],
            the_plan.count, seconds, out / FOLDER,
            ", ".join(f"{a}={v:.3f}" for a, v in accuracy.items()),
        )  # fmt: skip

    if not finish(out, the_plan, write_metrics):
        log.info(
            "C1 %s rank %d/%d: %d partition(s) written in %.1f s; the set is not complete yet "
            "(other ranks still writing, or one was stopped: `%s` finishes it)",
            run, rank.rank, rank.world, written, time.time() - t0, command,
        )  # fmt: skip


if __name__ == "__main__":
    sys.exit(run_stage(main))
