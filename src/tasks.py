"""The registry: every dataset and every task the suite knows, in one place.

A dataset or task differs from another only by its entry here (label attributes, transforms,
training defaults, condition attributes, default λ), never by `if dataset == ...` branches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from src.cli import image_size, int_at_least, nonnegative_float, positive_float
from src.errors import SuiteError

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
    lr: float = field(default=0.01, metadata={"help": "Adam learning rate", "type": positive_float})
    weight_decay: float = field(
        default=1e-6, metadata={"help": "Adam weight decay", "type": nonnegative_float}
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
    # "step": StepLR(lr_step, lr_gamma); "cosine": cosine decay to 0 (the demo's)
    schedule: str = field(default="step", metadata={"demo": True})
    warmup_epochs: float = field(default=0.0, metadata={"demo": True})  # linear warm-up first
    # the authors' train transform flips vertically too; the demo's upright scenes do not
    vertical_flip: bool = field(default=True, metadata={"demo": True})

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
    # C1 embeds the train split with the encoder's "train" transform (the authors' C1; D1 distils
    # on these) or its "test" transform; `C1_extract_embeddings.py --train-transform` overrides.
    c1_train_transform: str = "train"
    training: Recipe = AUTHORS_TRAINING


@dataclass(frozen=True)
class Task:
    """A retrieval task: a dataset, the attributes a query conditions on, and the default λ."""

    name: str
    dataset: str
    conditions: tuple[str, ...]
    default_lambda: float
    paper_column: str | None  # column name in the paper's tables, None for SynthArt


# The demo recipe: a small ConvNeXt from scratch, sized for 2 CPU cores (B1 ≤ 90 s). Tuned on
# SynthArt: 48 px (textures survive, epochs cost half of 64 px), Adam with a cosine schedule after a
# half-epoch warm-up, and no vertical flip (upright scene layout is what tells genres apart; with the
# authors' vertical flip genre reached 0.85 in 12 epochs, without it 0.92).
SYNTHART_TRAINING = replace(
    AUTHORS_TRAINING,
    backbone="convnext_atto",
    pretrained="none",
    embedding_size=64,
    epochs=12,
    batch_size=32,
    lr=2e-3,
    weight_decay=1e-6,
    schedule="cosine",  # instead of StepLR(lr_step, lr_gamma)
    warmup_epochs=0.5,
    vertical_flip=False,
    image_size=48,
    checkpoint_every=4,
    precision="auto",  # what the demo always did: mixed precision on CUDA, fp32 on the CPU
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


def get_dataset(name: str) -> Dataset:
    """Look a dataset up by name, or fail with the list of known names."""
    if name not in DATASETS:
        raise SuiteError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def get_task(name: str) -> Task:
    """Look a task up by name, or fail with the list of known names."""
    if name not in TASKS:
        raise SuiteError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


def tasks_of(dataset: str) -> list[Task]:
    """All tasks defined on a dataset, in registry order."""
    return [t for t in TASKS.values() if t.dataset == dataset]


def default_run(dataset: str) -> str:
    """The run name B1 writes with the dataset's default flags (what C1/D1/E1/E2 use without --run)."""
    from src.artifacts import run_name

    t = get_dataset(dataset).training
    return run_name(dataset, t.backbone, t.embedding_size, frozen=False)
