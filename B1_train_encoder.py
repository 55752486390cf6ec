"""B1 — train the encoder (backbone → embedding z → one head per label attribute) on a dataset.

    python B1_train_encoder.py --dataset synthart                     # the demo recipe (CPU, ~1 min)
    python B1_train_encoder.py --dataset cub                          # the authors' recipe (GPU)
    python B1_train_encoder.py --dataset cub --recipe paper           # the paper text's recipe
    python B1_train_encoder.py --dataset shop --recipe small          # any dataset: CPU, offline
    python B1_train_encoder.py --dataset cub --backbone resnet50 --embedding-size 128 [--freeze-backbone]
    python B1_train_encoder.py --dataset cub --precision bf16         # mixed precision (authors: fp32)
    torchrun --nproc_per_node=4 B1_train_encoder.py --dataset wikiart # DDP, one process per GPU

Writes weights/<run>/ (run = <dataset>_<backbone>_e<E>_<ft|frozen>): encoder.pt, checkpoint.pt,
config.json, train_log.csv, curves.png, train.log, built aside and moved in together (a failed
run leaves the previous ones as they were); checkpoint.pt stays in place, `--resume` continues
from it.
"""

from __future__ import annotations

import logging
import sys
from argparse import SUPPRESS
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pandas as pd

from src.argtypes import int_at_least, run_name_arg
from src.artifacts import run_dir, run_name, stage_config, write_json
from src.atomic import atomic_files, stage_lock
from src.cli import (
    add_device_arg,
    resolve_device,
    run_stage,
    seed_everything,
    stage_parser,
    staged_log,
)
from src.datasets.common import read_labels, read_split
from src.errors import SuiteError
from src.hints import a1_hint
from src.method.encoder import BACKBONES, check_image_size, encoder_config
from src.quirks import parse_quirks
from src.report.drawing import draw_training_curves
from src.tasks import (
    AUTHORS_TRAINING,
    DATASET_HELP,
    PAPER_TEXT_TRAINING,
    SMALL_TRAINING,
    SYNTHART_TRAINING,
    Recipe,
    get_dataset,
)
from src.training.engine import make_runtime, schedule_warnings
from src.training.loop import train_encoder

log = logging.getLogger("src.B1")


def override_flags() -> dict[str, tuple[Callable[[str], Any], str, tuple | None]]:
    """Recipe field → (argparse type, help, choices) for every field that has a flag; the type
    validates the value when parsed (Recipe metadata "type"); the help shows the presets."""
    out = {}
    for f in fields(Recipe):
        if "help" not in f.metadata:
            continue
        text = f.metadata["help"] + (": " + ", ".join(BACKBONES) if f.name == "backbone" else "")
        # a None preset (flips) means the dataset's own value
        presets = {n: getattr(r, f.name) or "dataset's" for n, r in RECIPES.items()}
        if len(set(map(str, presets.values()))) == 1:
            text += f" (preset: {presets['authors']})"
        else:
            text += " (presets: " + ", ".join(f"{n} {v}" for n, v in presets.items()) + ")"
        typ = f.metadata.get("type", str if "choices" in f.metadata else type(f.default))
        out[f.name] = (typ, text, f.metadata.get("choices"))
    return out


# The named recipes --recipe picks from (default: the dataset's preset), and the demo's.
RECIPES = {
    "authors": AUTHORS_TRAINING,
    "paper": PAPER_TEXT_TRAINING,
    "small": SMALL_TRAINING,
    "synthart demo": SYNTHART_TRAINING,
}
OVERRIDES = override_flags()
B1_DATASET_HELP = DATASET_HELP + (
    "; the processed dataset (A1) to train on; the run is written to weights/<run>, "
    "<run> = <dataset>_<backbone>_e<E>_<ft|frozen>, where C1, D1, E1 and E2 find it as the "
    "dataset's only run (with several runs, give them --run <run>)"
)
OUTPUTS = ["encoder.pt", "config.json", "train_log.csv", "curves.png", "train.log"]


def parse_args(argv: list[str] | None):
    p = stage_parser(__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, metavar="DATASET", help=B1_DATASET_HELP)
    p.add_argument(
        "--run",
        type=run_name_arg,
        help="name the run yourself instead of <dataset>_<backbone>_e<E>_<ft|frozen> (replicate "
        "seeds: <run>-seed<N>, which REPORT.md gathers); later stages then need --run too when "
        "the dataset has several runs",
    )
    p.add_argument(
        "--recipe",
        choices=["default", "authors", "paper", "small"],
        default="default",
        help="default: the dataset's registry preset (authors' code; demo recipe for synthart); "
        "authors: the authors' code; paper: the paper text (100 epochs, wd 1e-4, StepLR 30, "
        "RandomResizedCrop); small: a small backbone from scratch for a CPU, offline, any "
        "dataset (docs/stages.md)",
    )
    for key, (typ, text, choices) in OVERRIDES.items():
        flag = "--" + key.replace("_", "-")
        p.add_argument(flag, type=typ, choices=choices, default=SUPPRESS, help=text)
    p.add_argument(
        "--freeze-backbone", action="store_true", help="train only reduction and heads (Table 3)"
    )
    p.add_argument(
        "--authors-quirks",
        default="none",
        help="reproduce the authors' B1 setting frozen-train-mode (a frozen backbone left in "
        "train mode; needs --freeze-backbone), all or none (docs/deviations.md)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from weights/<run>/checkpoint.pt"
    )
    p.add_argument(
        "--workers", type=int_at_least(0), default=None, help="DataLoader workers (default: auto)"
    )
    add_device_arg(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    spec = get_dataset(args.dataset, args.data_root)
    base = spec.training if args.recipe == "default" else RECIPES[args.recipe]
    resolved = {}
    if base.images_seen:  # epochs and mixing from the collection's size (the small recipe)
        base, rule = base.sized(len(read_split(args.data_root, spec.name, "train")))
        resolved = {"epochs": base.epochs, "mix": base.mix, "size_rule": rule}
    recipe = replace(base, **{k: v for k, v in vars(args).items() if k in OVERRIDES})
    recipe = replace(recipe, flips=recipe.flips or spec.flips)  # config.json records the flips
    if recipe.backbone not in BACKBONES:
        raise SuiteError(
            f"unknown backbone {recipe.backbone!r}; choose one of: {', '.join(BACKBONES)}"
        )
    check_image_size(recipe.backbone, recipe.image_size, recipe.pretrained)  # before weights/<run>
    labels = read_labels(args.data_root, spec.name)
    missing = [a for a in spec.attributes if a not in labels]
    if missing:
        raise SuiteError(f"labels.json of {spec.name} lacks {missing}; re-run {a1_hint(spec.name)}")
    quirks = parse_quirks(args.authors_quirks, "B1")
    if "frozen-train-mode" in quirks and not args.freeze_backbone:
        if args.authors_quirks.strip() != "all":
            raise SuiteError(
                "--authors-quirks frozen-train-mode applies to a frozen backbone: add "
                "--freeze-backbone or drop the quirk"
            )
        quirks = ()  # 'all' means those that apply to this run
    extra = {"frozen_train_mode": True} if quirks else {}  # encoder.pt records it when applied
    config = encoder_config(
        spec.name,
        recipe.backbone,
        recipe.embedding_size,
        args.freeze_backbone,
        {a: labels[a] for a in spec.attributes},
        recipe.image_size,
        spec.square_resize,
        pretrained=str(recipe.pretrained),
        random_resized_crop=recipe.random_resized_crop,
        flips=recipe.flips,
        **extra,
    )
    run = args.run or run_name(
        spec.name, recipe.backbone, recipe.embedding_size, args.freeze_backbone
    )
    out = run_dir(args.weights_root, run)
    rt = make_runtime(resolve_device(args.device), args.workers, recipe.precision)

    def train(stage: Path) -> None:
        """Train into `stage` (checkpoint.pt into `out`); the main process writes config.json."""
        seed_everything(args.seed)
        log.info(
            "B1 %s on %s (%d process%s, %s): %s",
            run,
            rt.device,
            rt.world,
            "es" if rt.world > 1 else "",
            rt.precision,
            ", ".join(f"{k}={v}" for k, v in recipe.as_dict().items()),
        )
        if "size_rule" in resolved:
            log.info("B1: %s", resolved["size_rule"])
        for line in schedule_warnings(recipe):
            log.warning(line)
        data_root = Path(args.data_root)
        result = train_encoder(
            config, recipe, data_root, stage, rt, args.seed, args.resume, checkpoint_dir=out
        )
        if not rt.main:
            return
        draw_training_curves(pd.read_csv(stage / "train_log.csv"), stage / "curves.png")
        write_json(
            stage / "config.json",
            stage_config(
                args,
                resolved,
                run=run,
                recipe=recipe.as_dict(),
                encoder=config,
                device=str(rt.device),
                processes=rt.world,
                precision=rt.precision,
                quirks=list(quirks),
                result=result,
            ),
        )
        log.info(
            "B1 %s: test accuracy %s in %.1f s → %s",
            run,
            ", ".join(f"{a}={v:.3f}" for a, v in result["test_accuracy"].items()),
            result["seconds"],
            out / "encoder.pt",
        )

    if not rt.main:  # other DDP ranks train alongside and write nothing
        logging.basicConfig(level=logging.WARNING, force=True)
        train(out)
        return
    # The run folder's files are built aside and moved in together; checkpoint.pt stays in `out`.
    with stage_lock(out), atomic_files(out, OUTPUTS) as stage:
        # with --resume the log goes on where it was
        with staged_log(stage / "train.log", out / "train.log" if args.resume else None):
            train(stage)


if __name__ == "__main__":
    sys.exit(run_stage(main))
