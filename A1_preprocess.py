"""A1 — turn a raw dataset (or the embedded SynthArt) into the common processed format.

    python A1_preprocess.py --dataset synthart
    python A1_preprocess.py --dataset cub --source DIR [--download]
    python A1_preprocess.py --dataset apy --source DIR/attribute_data --images DIR/JPEGImages
    python A1_preprocess.py --dataset wikiart --source DIR [--attributions wikiart_attributions.csv]

Writes data/<dataset>/ (images/, labels.json, train.csv, test.csv, config.json) atomically:
a failed run leaves any earlier data/<dataset> untouched.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path

from src.artifacts import atomic_dir, dataset_dir, stage_config
from src.cli import run_stage, seed_everything, setup_logging, stage_parser
from src.datasets.common import write_dataset_config, write_processed
from src.tasks import DATASETS, get_dataset

log = logging.getLogger("backward_search")


def parse_args(argv: list[str] | None):
    p = stage_parser(__doc__.split("\n")[0])
    p.add_argument(
        "--dataset", required=True, choices=list(DATASETS), help="which dataset to prepare"
    )
    p.add_argument(
        "--source",
        type=Path,
        help="raw data folder (cub: holds CUB_200_2011/; apy: attribute_data/; wikiart: parquet shards or one folder per style)",
    )
    p.add_argument("--images", type=Path, help="apy: the PASCAL VOC 2008 JPEGImages folder")
    p.add_argument(
        "--attributions",
        type=Path,
        help="wikiart: the authors' wikiart_attributions.csv (tags); without it tags fall back to genre+style+artist",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="cub: fetch, verify and extract the official archive into --source",
    )
    p.add_argument(
        "--download-url",
        default=None,
        help="cub: archive URL (default: the official CaltechDATA address)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on the first unreadable image instead of skipping it",
    )
    p.add_argument("--num-images", type=int, default=3000, help="synthart: number of images")
    p.add_argument("--image-size", type=int, default=64, help="synthart: image side in px")
    p.add_argument(
        "--shorter-side",
        type=int,
        default=256,
        help="real datasets: resize so the shorter side is this many px (0 keeps the size)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    seed_everything(args.seed)
    spec = get_dataset(args.dataset)
    reader = importlib.import_module(f"src.datasets.{spec.name}")
    out = dataset_dir(args.data_root, spec.name)
    t0 = time.time()
    with atomic_dir(out) as tmp:
        data = reader.prepare(tmp, args)
        write_processed(tmp, data)
        write_dataset_config(
            tmp,
            stage_config(
                args, counts={"train": len(data.train), "test": len(data.test)}, **data.notes
            ),
        )
    log.info(
        "A1 %s: %d train / %d test images, %s classes → %s (%.1f s)",
        spec.name,
        len(data.train),
        len(data.test),
        ", ".join(f"{len(v)} {k}" for k, v in data.labels.items()),
        out,
        time.time() - t0,
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
