"""A1 — turn a raw dataset (or the embedded SynthArt) into the common processed format.

    python A1_preprocess.py --dataset synthart
    python A1_preprocess.py --dataset cub --source DIR [--download]
    python A1_preprocess.py --dataset apy --source DIR/attribute_data --images DIR/JPEGImages
    python A1_preprocess.py --dataset wikiart --source DIR [--attributions wikiart_attributions.csv]
        [--split-from preprocessed_wikiart_train.csv [preprocessed_wikiart_test.csv]]
    any of them: [--authors-quirks cub-tag-shift|wikiart-tag-cleaning|all|none]
    python A1_preprocess.py --dataset cub|apy|wikiart --source-type authors-release --source DIR
    python A1_preprocess.py --dataset folder --source DIR --name NAME   # your own images (README)

Writes data/<dataset>/ (folder: data/<NAME>/, plus dataset.json) (images/, labels.json, train.csv, test.csv, config.json) atomically:
a failed run leaves any earlier data/<dataset> untouched. A2's queries_*.csv/.json are kept when
the new split is identical to the old one, and removed with a warning otherwise. With
--source-type authors-release it imports the authors' released artifacts instead (src/release):
data/<dataset>/ with their split, tags and queries, and weights/<run>/ for every run found.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path

from src.argtypes import image_size, int_at_least
from src.artifacts import RELEASE_SOURCE, dataset_dir, stage_config
from src.atomic import atomic_dir
from src.cli import run_stage, seed_everything, setup_logging, stage_parser
from src.datasets.common import (
    SHORTER_SIDE,
    SourceOptions,
    carry_queries,
    write_dataset_config,
    write_processed,
)
from src.errors import SuiteError
from src.quirks import QUIRKS, parse_quirks
from src.release.convert import import_release
from src.tasks import DATASETS, check_dataset_name

FOLDER = "folder"  # the reader of your own images (src/datasets/folder.py)

log = logging.getLogger("src.A1")


def parse_args(argv: list[str] | None):
    p = stage_parser(__doc__.split("\n")[0])
    p.add_argument(
        "--dataset",
        required=True,
        choices=[*DATASETS, FOLDER],
        help="which dataset to prepare; folder: your own images (DIR/labels.csv, with --name)",
    )
    p.add_argument(
        "--name", help="folder: the dataset's name (data/NAME/, tasks NAME:attr, NAME:attr1+attr2)"
    )
    p.add_argument(
        "--source-type",
        choices=["raw", RELEASE_SOURCE],
        default="raw",
        help=f"raw: the dataset's own files; {RELEASE_SOURCE}: the authors' released weights, "
        "embeddings and queries (unpacked into --source; README: Reproducing from the authors' "
        "release)",
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
    p.add_argument(
        "--num-images", type=int_at_least(10), default=3000, help="synthart: number of images"
    )
    p.add_argument("--image-size", type=image_size, default=64, help="synthart: image side in px")
    p.add_argument(
        "--shorter-side",
        type=int_at_least(0),
        default=None,
        help=f"wikiart: resize so the shorter side is this many px, as the authors did (default "
        f"{SHORTER_SIDE}; 0 keeps the size); CUB images are kept as they are, aPY crops at full size",
    )
    p.add_argument(
        "--split-from",
        type=Path,
        nargs="+",
        metavar="CSV",
        help="wikiart: the authors' preprocessed_wikiart_train.csv (the rest is test) or their train "
        "and test CSVs: reproduces their split membership (default: seed-777 permutation of the "
        "source order)",
    )
    p.add_argument(
        "--authors-quirks",
        default="none",
        help="reproduce the authors' A1 bugs: cub-tag-shift (cub), wikiart-tag-cleaning (wikiart), "
        "a comma list, all or none (docs/deviations.md)",
    )
    return p.parse_args(argv)


def source_options(args, dataset: str) -> SourceOptions:
    """A1's flags → the typed options a reader takes; refuses flags that do not fit `dataset`."""
    quirks = parse_quirks(args.authors_quirks, "A1")
    if args.authors_quirks.strip() == "all":  # 'all' means those of this dataset
        quirks = tuple(q for q in quirks if dataset in QUIRKS[q].datasets)
    for q in quirks:
        check_quirk_applies(q, dataset)
    if args.shorter_side is not None and dataset != "wikiart":
        raise SuiteError(
            "--shorter-side applies to wikiart only (CUB images are kept as they are, aPY crops "
            "are written at full resolution, as the authors fed them); drop the flag"
        )
    if (args.name is not None) != (dataset == FOLDER):
        raise SuiteError("--dataset folder needs --name NAME; other datasets take no --name")
    if args.split_from and dataset != "wikiart":
        raise SuiteError("--split-from applies to wikiart only; drop the flag")
    if args.split_from and len(args.split_from) > 2:
        raise SuiteError("--split-from takes the authors' train CSV, or their train and test CSVs")
    return SourceOptions(
        source=args.source,
        images=args.images,
        attributions=args.attributions,
        split_from=tuple(args.split_from or ()),
        download=args.download,
        download_url=args.download_url,
        strict=args.strict,
        shorter_side=SHORTER_SIDE if args.shorter_side is None else args.shorter_side,
        num_images=args.num_images,
        image_size=args.image_size,
        seed=args.seed,
        quirks=quirks,
        name=args.name,
    )


# Flags of the raw readers, meaningless for a release (it carries its own split, tags and queries).
RAW_ONLY = ("images", "attributions", "download", "download_url", "strict", "shorter_side")


def release_quirks(args, dataset: str) -> tuple[str, ...]:
    """--authors-quirks for an import: the importer applies wikiart-tag-cleaning; CUB's tag shift
    is already in their files ('all' means what applies to the release of `dataset`)."""
    quirks = parse_quirks(args.authors_quirks, "A1")
    if args.authors_quirks.strip() == "all":
        return tuple(q for q in quirks if q == "wikiart-tag-cleaning" and dataset == "wikiart")
    for q in quirks:
        if q == "cub-tag-shift":
            raise SuiteError(
                "--authors-quirks cub-tag-shift: the authors' release already carries their "
                "shifted CUB tags and split; drop the quirk"
            )
        check_quirk_applies(q, dataset)
    return quirks


def check_quirk_applies(quirk: str, dataset: str) -> None:
    """Fail in one line when --authors-quirks names a quirk of another dataset."""
    if dataset not in QUIRKS[quirk].datasets:
        raise SuiteError(
            f"--authors-quirks {quirk} applies to {', '.join(QUIRKS[quirk].datasets)}, not {dataset}"
        )


def import_authors_release(args) -> None:
    """--source-type authors-release: convert their release into data/ and weights/ folders."""
    if args.dataset == FOLDER or args.name is not None:
        raise SuiteError(
            f"--source-type {RELEASE_SOURCE} takes cub, apy or wikiart, without --name"
        )
    given = [f"--{k.replace('_', '-')}" for k in RAW_ONLY if getattr(args, k) not in (None, False)]
    if args.split_from:
        given.append("--split-from")
    if given:
        raise SuiteError(
            f"{', '.join(given)} cannot go with --source-type {RELEASE_SOURCE} (the release carries its "
            "own split, tags and queries); drop it"
        )
    if args.source is None:
        raise SuiteError(
            f"--source-type {RELEASE_SOURCE} needs --source DIR (the unpacked release)"
        )
    quirks = release_quirks(args, args.dataset)
    t0 = time.time()
    runs = import_release(args.source, args.dataset, args.data_root, args.weights_root, quirks)
    log.info(
        "A1 %s: imported the authors' release %s → %s and runs %s (%.1f s)",
        args.dataset,
        args.source,
        dataset_dir(args.data_root, args.dataset),
        ", ".join(runs),
        time.time() - t0,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    seed_everything(args.seed)
    if args.source_type == RELEASE_SOURCE:
        return import_authors_release(args)
    opts = source_options(args, args.dataset)
    reader = importlib.import_module(f"src.datasets.{args.dataset}")
    name = check_dataset_name(args.name) if args.dataset == FOLDER else args.dataset
    out = dataset_dir(args.data_root, name)
    t0 = time.time()
    with atomic_dir(out) as tmp:
        data = reader.prepare(tmp, opts)
        write_processed(tmp, data)
        write_dataset_config(
            tmp,
            stage_config(
                args,
                quirks=list(opts.quirks),
                counts={"train": len(data.train), "test": len(data.test)},
                **data.notes,
            ),
        )
        dropped = carry_queries(out, tmp)  # A2's queries stay valid only for the same split
    if dropped:
        log.warning(
            "WARNING: the split changed, so A2's query files no longer match it and were removed: "
            "%s; re-run A2_make_queries.py for this dataset's tasks",
            ", ".join(p.name for p in dropped),
        )
    log.info(
        "A1 %s: %d train / %d test images, %s classes → %s (%.1f s)",
        name,
        len(data.train),
        len(data.test),
        ", ".join(f"{len(v)} {k}" for k, v in data.labels.items()),
        out,
        time.time() - t0,
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
