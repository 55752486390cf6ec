"""The registry: every dataset and every task the suite knows, in one place.

A dataset or task differs from another only by its entry here (label attributes, transforms,
training defaults, condition attributes, default λ), never by `if dataset == ...` branches.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from src.argtypes import fraction, image_size, int_at_least, nonnegative_float, positive_float
from src.artifacts import dataset_dir, run_name
from src.errors import SuiteError
from src.quirks import QUIRKS

# The train transform's random flips: none; h = horizontal; hv = horizontal and vertical (the
# authors'). Not every collection is flip-invariant: icons, text, many product or medical images.
FLIPS = ("none", "h", "hv")
SCHEDULES = ("step", "cosine")  # StepLR(lr_step, lr_gamma), the authors'; cosine decay to 0
OPTIMIZERS = ("adam", "adamw")  # torch.optim.Adam (the authors'), AdamW
# Batch mixing in B1: none, or CutMix (Yun et al. 2019): a random box of another image of the batch
# pasted in, the loss weighted between both images' labels by the box's area.
MIXES = ("none", "cutmix")

# B1's training precision: the authors trained in fp32; bf16 autocast, or fp16 autocast with a
# GradScaler, on any device (CPU autocast too); "auto" = the accelerator's mixed precision on CUDA
# (bf16, fp16 where bf16 is unsupported) and fp32 on the CPU (the SynthArt demo's).
PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class Recipe:
    """How B1 trains an encoder; the defaults are the authors' code (SPEC §4).

    Fields with a `help` become B1's override flags (`--lr` …), parsed by their `type` (validated
    when parsed) or limited to their `choices`. The demo's own fields go into
    config.json only when set, so an authors' run records exactly the authors' settings.
    """

    backbone: str = field(default="convnext_base", metadata={"help": "backbone"})
    pretrained: str = field(
        default="imagenet",
        metadata={"help": "backbone weights: imagenet, none, or PATH to a torchvision state dict"},
    )
    embedding_size: int = field(
        default=256,
        metadata={"help": "embedding size E (paper: 64, 128, 256)", "type": int_at_least(1)},
    )
    epochs: int = field(default=30, metadata={"help": "training epochs", "type": int_at_least(1)})
    batch_size: int = field(  # ≥ 2: BatchNorm needs two samples per batch
        default=64,
        metadata={"help": "batch size (per process under torchrun)", "type": int_at_least(2)},
    )
    lr: float = field(default=0.01, metadata={"help": "learning rate", "type": positive_float})
    weight_decay: float = field(
        default=1e-6, metadata={"help": "weight decay", "type": nonnegative_float}
    )
    optimizer: str = field(
        default="adam",
        metadata={
            "demo": True,
            "help": "adam (weight decay added to the gradient, the authors') or adamw (decoupled "
            "weight decay)",
            "choices": OPTIMIZERS,
        },
    )
    lr_step: int = field(
        default=10,
        metadata={"help": "StepLR: epochs between learning-rate drops", "type": int_at_least(1)},
    )
    lr_gamma: float = field(
        default=0.1, metadata={"help": "StepLR: factor of each drop", "type": positive_float}
    )
    image_size: int = field(
        default=224, metadata={"help": "input size in px (crop side)", "type": image_size}
    )
    random_resized_crop: bool = False  # the paper text's augmentation (--recipe paper)
    checkpoint_every: int = field(
        default=10,
        metadata={
            "help": "write checkpoint.pt every N epochs (and at the end)",
            "type": int_at_least(1),
        },
    )
    precision: str = field(
        default="fp32",  # the authors' (SPEC §4)
        metadata={
            "help": "fp32; bf16 autocast; fp16 autocast with a GradScaler; auto: bf16/fp16 on "
            "CUDA, fp32 on the CPU",
            "choices": PRECISIONS,
        },
    )
    schedule: str = field(
        default="step",
        metadata={
            "demo": True,
            "help": "learning-rate schedule: step (StepLR every --lr-step epochs, the authors') or "
            "cosine (decay to 0 after the warm-up)",
            "choices": SCHEDULES,
        },
    )
    warmup_epochs: float = field(
        default=0.0,
        metadata={
            "demo": True,
            "help": "epochs of linear learning-rate warm-up before the schedule",
            "type": nonnegative_float,
        },
    )
    label_smoothing: float = field(
        default=0.0,
        metadata={
            "demo": True,
            "help": "label smoothing of each head's cross-entropy (the authors': 0)",
            "type": fraction,
        },
    )
    # None: the dataset's (Dataset.flips); B1 records the flips it used
    flips: str | None = field(
        default=None,
        metadata={
            "help": "random flips in training: none, h (horizontal) or hv (and vertical); "
            "the authors' and the paper's recipes take the dataset's (hv; aPY none)",
            "choices": FLIPS,
        },
    )

    mix: str = field(
        default="none",
        metadata={
            "demo": True,
            "help": "batch mixing: none, or cutmix (a random box of another image pasted in, the "
            "loss shared between both images' labels by the box's area)",
            "choices": MIXES,
        },
    )
    # Settings from the collection's size (0: none; Recipe.sized): enough epochs to show the
    # network `images_seen` training images, at least `epochs` and at most `max_epochs`; and the
    # recipe's `mix` only where that shows each image more than `epochs` times.
    images_seen: int = field(default=0, metadata={"demo": True})
    max_epochs: int = field(default=0, metadata={"demo": True})

    def epochs_for(self, train_images: int) -> int:
        """The epochs for a train split of `train_images` images (see images_seen)."""
        if not self.images_seen:
            return self.epochs
        wanted = -(-self.images_seen // max(train_images, 1))  # ceil
        return max(self.epochs, min(wanted, self.max_epochs or wanted))

    def sized(self, train_images: int) -> tuple[Recipe, str]:
        """This recipe for a train split of `train_images`, and the one line that says what the
        size chose (empty for a recipe without a size rule)."""
        if not self.images_seen:
            return self, ""
        epochs = self.epochs_for(train_images)
        mix = self.mix if epochs > self.epochs else "none"  # a short schedule needs no mixing
        below = -(-self.images_seen // self.epochs)
        note = (
            f"{epochs} epochs, mix {mix}, for {train_images} train images (the recipe: "
            f"{self.images_seen:,} images seen in {self.epochs} to {self.max_epochs} epochs, "
            f"{self.mix} below {below:,} images; --epochs and --mix set them)"
        )
        return replace(self, epochs=epochs, mix=mix), note

    def as_dict(self) -> dict[str, Any]:
        """The recipe as config.json and checkpoint.pt store it (demo-only fields when set)."""
        out = asdict(self)
        for f in fields(self):
            if f.metadata.get("demo") and out[f.name] == f.default:
                del out[f.name]
        return out


# The authors' B1 defaults (SPEC §4): used for every real dataset.
AUTHORS_TRAINING = Recipe()

# The paper text's recipe (SPEC §4), reachable with `B1_train_encoder.py --recipe paper`.
PAPER_TEXT_TRAINING = replace(
    AUTHORS_TRAINING, epochs=100, weight_decay=1e-4, lr_step=30, random_resized_crop=True
)


@dataclass(frozen=True)
class Dataset:
    """A dataset: its label attributes (one classifier head each) and how images are fed."""

    name: str
    attributes: tuple[str, ...]
    description: str
    square_resize: bool = False  # aPY: resize to a square, no crop (SPEC §2)
    flips: str = "hv"  # the authors' train transform's flips (aPY's train_square: none)
    # C1 embeds the train split with the encoder's "train" transform (the authors' C1; D1 distils
    # on these) or its "test" transform; `C1_extract_embeddings.py --train-transform` overrides.
    c1_train_transform: str = "train"
    training: Recipe = AUTHORS_TRAINING
    user: bool = False  # read from <data_root>/<name>/dataset.json (A1 --dataset folder)
    classes: dict[str, int] = field(default_factory=dict)  # class count per attribute (user only)


@dataclass(frozen=True)
class Task:
    """A retrieval task: a dataset, the attributes a query conditions on, and the default λ."""

    name: str
    dataset: str
    conditions: tuple[str, ...]
    default_lambda: float
    paper_column: str | None  # column name in the paper's tables, None for SynthArt and users'
    user: bool = False  # a task on a user dataset (NAME:attr), not comparable with the paper


# `--recipe small`: a small ConvNeXt from scratch for any dataset, on a CPU, offline (no weights to
# download), without tuning: ConvNeXt's own from-scratch ingredients (AdamW, warm-up, cosine, label
# smoothing) sized for 2 cores. Measured on 3,888 icons of 8 icon themes (bench/RESULTS.md).
SMALL_TRAINING = replace(
    AUTHORS_TRAINING,
    backbone="convnext_atto",  # 3.4 M parameters, the demo's: ~7 s an epoch of 3,000 images, 2 cores
    pretrained="none",  # offline: nothing to download
    embedding_size=64,  # a few dozen classes need no more; Backward Search and D1 cost less
    epochs=20,  # at least: ≤ 15 min on a busy 2-core CPU for a few thousand images
    images_seen=60_000,  # what 20 epochs show of the 3,110 icons; fewer images get more epochs
    max_epochs=100,  # at most: 594 images memorised by 100 (train accuracy 0.99, issue 30)
    batch_size=32,  # ~100 steps an epoch on a few thousand images
    optimizer="adamw",  # with Adam's L2 decay the icons' test accuracy swung by up to 0.3
    lr=1e-3,  # the demo's 2e-3 blew up one icon run at its peak (0.64 theme accuracy, not 0.75)
    weight_decay=0.05,  # ConvNeXt's from-scratch value with AdamW
    schedule="cosine",  # decays within whatever --epochs is (StepLR's steps suit 30 epochs)
    warmup_epochs=1.0,  # full lr on a fresh network's first steps destabilises it
    label_smoothing=0.1,  # over-confident heads overfit small collections
    mix="cutmix",  # below 3,000 images: 600 emoji 0.47 → 0.62 (set); 3,110 icons lost 0.04
    flips="none",  # assumes nothing of the collection; on the icons h flips lost 0.05 of context
    image_size=48,  # the demo's; 64 px costs 1.8× an epoch
    checkpoint_every=4,
    precision="auto",  # mixed precision on CUDA, fp32 on the CPU
)

# SynthArt's preset (the demo's, B1 ≤ 90 s on 2 cores) differs from the small recipe where it was
# tuned first: 12 epochs, lr 2e-3 after a half-epoch warm-up, Adam with the authors' weight decay,
# no label smoothing, horizontal flips. Kept so that `make demo` stays as it was.
SYNTHART_TRAINING = replace(
    SMALL_TRAINING,
    epochs=12,
    lr=2e-3,
    warmup_epochs=0.5,
    optimizer="adam",
    weight_decay=1e-6,
    label_smoothing=0.0,
    flips="h",  # SynthArt's styles and genres survive a mirror (not the vertical flip)
    images_seen=0,  # 12 epochs, whatever the size
    max_epochs=0,
    mix="none",
)

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in [
        Dataset("cub", ("species",), "CUB-200-2011 birds, 200 species"),
        Dataset(
            "apy",
            ("category",),
            "aPascal objects cropped to their boxes, 20 categories",
            square_resize=True,
            flips="none",
        ),
        Dataset("wikiart", ("style", "genre"), "WikiArt paintings, 27 styles and 11 genres"),
        Dataset(
            "synthart",
            ("style", "genre"),
            "SynthArt: the embedded procedural dataset (no download)",
            training=SYNTHART_TRAINING,
            c1_train_transform="test",  # no authors' protocol; keeps `make demo` as it was
        ),
    ]
}

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("cub-bird", "cub", ("species",), 0.51, "CUB"),
        Task("apy-category", "apy", ("category",), 0.7, "aPY"),
        Task("wikiart-style", "wikiart", ("style",), 1.1, "WikiArt-style"),
        Task("wikiart-multi", "wikiart", ("style", "genre"), 3.2, "WikiArt-multi"),
        Task("synthart-style", "synthart", ("style",), 1.0, None),
        Task("synthart-multi", "synthart", ("style", "genre"), 2.0, None),
    ]
}


# User datasets (A1 --dataset folder): the registry entry is data, <data_root>/<NAME>/dataset.json.
DATASET_FILE = "dataset.json"
RESERVED = (*DATASETS, "folder")  # built-in names, and A1's reader
# Lower-case, no '-' or '.': one safe folder name, and "NAME-attr" task names split unambiguously.
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")
# attribute names: also no '-'; ≤ 28 so a two-condition task name stays a run name (≤ 100)
ATTR_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,27}")
# B1's default recipe for a user dataset (--recipe default): the authors' (convnext_base from
# ImageNet weights, E = 256, 30 epochs); every B1 override flag applies.
USER_TRAINING = AUTHORS_TRAINING
# λ of a user task: 1.0 for one condition, 2.0 for two (SynthArt's defaults); --lambda overrides.
USER_LAMBDA = {1: 1.0, 2: 2.0}
USER_TASK_SYNTAX = "NAME:attr or NAME:attr1+attr2"
# The --task / --dataset help of every stage (resolved after parsing, once --data-root is known).
TASK_HELP = (
    f"a task: {', '.join(TASKS)}, or {USER_TASK_SYNTAX} on your own dataset "
    "(python -m src.tasks --data-root DIR lists them)"
)
DATASET_HELP = f"{', '.join(DATASETS)}, or the NAME of your own dataset (A1 --dataset folder)"


def check_dataset_name(name: str) -> str:
    """`name` if it may name a user dataset (safe, not a built-in's), else fail."""
    if name in RESERVED:
        raise SuiteError(
            f"--name {name!r} is reserved (built-in: {', '.join(RESERVED)}); pick another"
        )
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise SuiteError(
            f"--name {name!r} is not a dataset name: use 1-40 of a-z 0-9 _ starting with a letter"
        )
    return name


def check_attribute_name(attr: str, where: str) -> str:
    """`attr` if it may name a label attribute (it becomes part of task and file names)."""
    if not ATTR_RE.fullmatch(attr):
        raise SuiteError(
            f"{where}: attribute column {attr!r} is not a usable name: use 1-28 of A-Z a-z 0-9 _ "
            "starting with a letter (rename the column)"
        )
    return attr


def read_user_dataset(data_root: str | Path, name: str) -> Dataset | None:
    """The user dataset `name` from <data_root>/<name>/dataset.json, None when there is none."""
    if name in RESERVED or not NAME_RE.fullmatch(name):
        return None
    path = dataset_dir(data_root, name) / DATASET_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta["attributes"], list):  # a string would be read as its letters
            raise TypeError("'attributes' is not a list")
        attrs = tuple(meta["attributes"])
        classes = {a: len(meta["classes"][a]) for a in attrs}
        description = str(meta.get("description", "your own images"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SuiteError(
            f"{path} is not a dataset entry ({type(e).__name__}: {e}); re-run A1_preprocess.py "
            f"--dataset folder --source DIR --name {name}"
        ) from None
    usable = all(isinstance(a, str) and ATTR_RE.fullmatch(a) for a in attrs)
    if not attrs or not usable or len(set(attrs)) < len(attrs):
        raise SuiteError(
            f"{path} lists no usable attributes (names of A-Z a-z 0-9 _, each once); re-run "
            f"A1_preprocess.py --dataset folder --source DIR --name {name}"
        )
    return Dataset(
        name,
        attrs,
        description,
        # your collection is searched whole (E2 --database all): its train images are embedded
        # as they are, not as randomly cropped and flipped training views
        c1_train_transform="test",
        training=USER_TRAINING,
        user=True,
        classes=classes,
    )


def user_datasets(data_root: str | Path | None) -> list[Dataset]:
    """Every user dataset under `data_root` (folders holding a dataset.json), by name."""
    if data_root is None or not Path(data_root).is_dir():
        return []
    found = (
        read_user_dataset(data_root, p.parent.name)
        for p in Path(data_root).glob("*/" + DATASET_FILE)
    )
    return sorted((d for d in found if d is not None), key=lambda d: d.name)


def get_dataset(name: str, data_root: str | Path | None = None) -> Dataset:
    """Look a dataset up: a built-in, else a user dataset under `data_root`; or fail listing both."""
    if name in DATASETS:
        return DATASETS[name]
    user = read_user_dataset(data_root, name) if data_root is not None else None
    if user is None:
        known = [*DATASETS, *(d.name for d in user_datasets(data_root))]
        raise SuiteError(
            f"unknown dataset {name!r}; choose one of: {', '.join(known)} (your own images: "
            "A1_preprocess.py --dataset folder --source DIR --name NAME)"
        )
    return user


def user_task_name(dataset: str, conditions: tuple[str, ...]) -> str:
    """The file-safe name of a user task: NAME:a+b → NAME-a-b (results/<run>/NAME-a-b, queries_…)."""
    return "-".join((dataset, *conditions))


def user_task(spec: Dataset, conditions: tuple[str, ...]) -> Task:
    """The task on user dataset `spec` conditioning on `conditions` (1 or 2 of its attributes)."""
    wrong = [a for a in conditions if a not in spec.attributes]
    if wrong:
        raise SuiteError(
            f"dataset {spec.name} has no attribute {wrong[0]!r}; its attributes: "
            f"{', '.join(spec.attributes)}"
        )
    if len(conditions) not in USER_LAMBDA or len(set(conditions)) != len(conditions):
        raise SuiteError(
            f"a task on {spec.name} conditions on one attribute or two different ones "
            f"({USER_TASK_SYNTAX}), not {'+'.join(conditions)!r}"
        )
    name = user_task_name(spec.name, conditions)
    return Task(name, spec.name, conditions, USER_LAMBDA[len(conditions)], None, user=True)


def get_task(name: str, data_root: str | Path | None = None) -> Task:
    """Look a task up: a built-in, else NAME:attr / NAME:attr1+attr2 (or its file name NAME-attr-…)
    on a user dataset under `data_root`; or fail with the one-line list of valid tasks."""
    if name in TASKS:
        return TASKS[name]
    dataset, sep, rest = name.partition(":")
    conditions = tuple(rest.split("+")) if sep else ()
    if not sep:  # the file-safe form: names hold no '-', so the first '-' ends the dataset
        dataset, _, rest = name.partition("-")
        conditions = tuple(rest.split("-")) if rest else ()
    spec = read_user_dataset(data_root, dataset) if data_root is not None else None
    if spec is None or not conditions:
        user = [f"{d.name}:{a}" for d in user_datasets(data_root) for a in d.attributes]
        extra = f", {', '.join(user)}" if user else ""
        raise SuiteError(
            f"unknown task {name!r}; choose one of: {', '.join(TASKS)}{extra}, or "
            f"{USER_TASK_SYNTAX} for a dataset of your own (A1 --dataset folder)"
        )
    return user_task(spec, conditions)


def tasks_of(dataset: str, data_root: str | Path | None = None) -> list[Task]:
    """All tasks defined on a dataset, in registry order (a user dataset: each attribute, then each
    ordered pair of attributes)."""
    if dataset in DATASETS or data_root is None:
        return [t for t in TASKS.values() if t.dataset == dataset]
    spec = get_dataset(dataset, data_root)
    attrs = spec.attributes
    pairs = [(a, b) for a in attrs for b in attrs if a != b]
    return [user_task(spec, c) for c in [(a,) for a in attrs] + pairs]


def default_run(dataset: str) -> str:
    """The run name B1 writes with the dataset's default flags (what C1/D1/E1/E2 use without --run)."""
    # a user dataset trains with USER_TRAINING: no need to read its entry
    t = DATASETS[dataset].training if dataset in DATASETS else USER_TRAINING
    return run_name(dataset, t.backbone, t.embedding_size, frozen=False)


def describe_tasks(data_root: str | Path | None) -> str:
    """Every task, built-in and under `data_root`, with its attributes, class counts and λ."""
    lines = []
    for spec in [*DATASETS.values(), *user_datasets(data_root)]:
        classes = spec.classes or _class_counts(data_root, spec.name)
        counts = ", ".join(
            f"{a} ({classes[a]} classes)" if a in classes else a for a in spec.attributes
        )
        lines.append(f"{spec.name}: {spec.description} — attributes: {counts}")
        for t in tasks_of(spec.name, data_root):
            if spec.user and len(t.conditions) > 1 and t.conditions != spec.attributes[:2]:
                continue  # pairs: list one, the syntax says the rest
            shown = f"{t.dataset}:{'+'.join(t.conditions)}" if t.user else t.name
            lines.append(
                f"  {shown:<28} conditions {'+'.join(t.conditions):<20} λ {t.default_lambda:g}"
            )
        if spec.user and len(spec.attributes) > 1:
            lines.append(f"  (any {spec.name}:attr1+attr2 of two different attributes, λ 2)")
    return "\n".join(lines)


def _class_counts(data_root: str | Path | None, name: str) -> dict[str, int]:
    """Classes per attribute from A1's labels.json when the dataset is prepared, else {}."""
    path = Path(data_root or ".") / name / "labels.json"
    try:
        return {a: len(v) for a, v in json.loads(path.read_text(encoding="utf-8")).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}  # not prepared yet (or unreadable): the listing shows the attribute names only


def paper_tasks(dataset: str) -> list[str]:
    """The names of a paper dataset's tasks (what the reproduce scripts run), or fail."""
    paper = [t for t in TASKS.values() if t.paper_column]
    names = [t.name for t in paper if t.dataset == dataset]
    if not names:
        datasets = ", ".join(dict.fromkeys(t.dataset for t in paper))
        raise SuiteError(f"DATASET must be one of {datasets} (got {dataset!r})")
    return names


def main(argv: list[str] | None = None) -> int:
    """`python -m src.tasks [--data-root data]`: print every task the suite knows.

    `--paper-tasks D` prints D's paper tasks on one line and, on a second, the E1 quirks that
    apply to D (comma-joined, maybe empty): what scripts/reproduce*.sh read from the registry.
    """
    import argparse

    p = argparse.ArgumentParser(description="List every dataset and task (built-in and yours).")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--paper-tasks", metavar="DATASET", help="print a paper dataset's tasks")
    args = p.parse_args(argv)
    try:
        if args.paper_tasks is None:
            print(describe_tasks(args.data_root))
            return 0
        names = paper_tasks(args.paper_tasks)
    except SuiteError as e:  # e.g. a damaged dataset.json under --data-root
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(" ".join(names))
    e1 = [q.name for q in QUIRKS.values() if q.stage == "E1" and args.paper_tasks in q.datasets]
    print(",".join(e1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
