"""C1 — embed every train and test image with a trained encoder (eval mode, test transform).

    python C1_extract_embeddings.py --dataset synthart            # run = the dataset's default run
    python C1_extract_embeddings.py --run cub_resnet50_e128_ft    # any B1 run

Writes weights/<run>/embeddings.npz (image, split, label_<attr>, z) and metrics.json
({"test_accuracy": {attr: accuracy of the heads}}), atomically.
"""

from __future__ import annotations

import logging
import sys
import time

from src.artifacts import run_dir, stage_config, write_json
from src.cli import LOGGER, add_device_arg, resolve_device, run_stage, setup_logging, stage_parser
from src.embeddings import extract_embeddings, save_embeddings
from src.encoder import load_encoder
from src.engine import default_workers
from src.errors import SuiteError
from src.hints import hint
from src.tasks import DATASETS, default_run

log = logging.getLogger(LOGGER)


def parse_args(argv: list[str] | None):
    p = stage_parser(__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=list(DATASETS), help="use the dataset's default run")
    p.add_argument(
        "--run", help="a run name under --weights-root (default: the dataset's default run)"
    )
    p.add_argument("--batch-size", type=int, default=256)
    add_device_arg(p)
    args = p.parse_args(argv)
    if not args.dataset and not args.run:
        p.error("give --dataset or --run")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    run = args.run or default_run(args.dataset)
    out = run_dir(args.weights_root, run)
    if not (out / "encoder.pt").exists():
        dataset = args.dataset or "D"
        raise SuiteError(
            f"{out / 'encoder.pt'} not found: run {hint('B1', '--dataset', dataset)} first"
        )
    device = resolve_device(args.device)
    model, config = load_encoder(out, device)
    if args.dataset and config["dataset"] != args.dataset:
        raise SuiteError(f"run {run} was trained on {config['dataset']}, not {args.dataset}")
    t0 = time.time()
    workers = default_workers(device)
    arrays, accuracy = extract_embeddings(
        model, config, args.data_root, device, args.batch_size, workers
    )
    path = save_embeddings(out, arrays)
    seconds = time.time() - t0
    counts = {s: int((arrays["split"] == s).sum()) for s in ("train", "test")}
    write_json(
        out / "metrics.json",
        {
            "test_accuracy": accuracy,
            **stage_config(args, run=run, counts=counts, seconds=round(seconds, 2)),
        },
    )
    log.info(
        "C1 %s: %d train + %d test embeddings (E=%d) in %.1f s → %s; heads' test accuracy %s",
        run,
        counts["train"],
        counts["test"],
        arrays["z"].shape[1],
        seconds,
        path,
        ", ".join(f"{a}={v:.3f}" for a, v in accuracy.items()),
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
