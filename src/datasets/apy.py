"""aPY (aPascal) reader: one sample per annotated object, cropped to its box; split = the two files.

--source is the attribute_data folder (apascal_train.txt, apascal_test.txt, attribute_names.txt),
--images the PASCAL VOC 2008 JPEGImages folder. Each object line
`<image> <category> <xmin> <ymin> <xmax> <ymax> <64 × 0/1>` becomes images/<split>/<stem>_<k>.png,
the k-th object of that image in that file, cropped like the authors' `img[ymin:ymax, xmin:xmax]`
and written losslessly at full resolution (the authors fed the crops, unresized, to `Resize`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from src.datasets.common import ImageWriter, Processed, SourceOptions, save_all
from src.errors import SuiteError
from src.tags import join_tags
from src.tasks import get_dataset

log = logging.getLogger(__name__)

FILES = {"train": "apascal_train.txt", "test": "apascal_test.txt"}
NAMES_FILE = "attribute_names.txt"

MANUAL_STEPS = (
    "aPY has no stable direct download; get it by hand: (1) the attribute annotations "
    "attribute_data.tar.gz from https://vision.cs.uiuc.edu/attributes/ (mirrored in "
    "https://github.com/BatsResearch/mazzetto-neurips22-code), unpacked to attribute_data/ "
    "(apascal_train.txt, apascal_test.txt, attribute_names.txt); (2) PASCAL VOC 2008 trainval, "
    "VOCtrainval_14-Jul-2008.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2008/, unpacked; "
    "(3) python A1_preprocess.py --dataset apy --source DIR/attribute_data "
    "--images DIR/VOCdevkit/VOC2008/JPEGImages"
)


@dataclass
class AObject:
    """One annotated object: where it comes from, where it goes, its labels."""

    image: str
    rel: str  # <split>/<stem>_<k>.png under images/
    category: str
    box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax as in the file
    tags: str


def prepare(out_dir: Path, opts: SourceOptions) -> Processed:
    """Crop every aPascal object into its own image and build the two splits."""
    (attr,) = get_dataset("apy").attributes  # "category"
    if opts.download:
        raise SuiteError(MANUAL_STEPS)
    if opts.source is None or opts.images is None:
        raise SuiteError(f"--dataset apy needs --source and --images; {MANUAL_STEPS}")
    source, images = Path(opts.source), Path(opts.images)
    names = read_attribute_names(source / NAMES_FILE)
    objects = {split: read_objects(source / f, split, names) for split, f in FILES.items()}
    if not images.is_dir():
        raise SuiteError(f"--images {images} is not a folder; {MANUAL_STEPS}")
    needed = {o.image for objs in objects.values() for o in objs}
    if not any((images / name).is_file() for name in needed):
        raise SuiteError(
            f"none of the {len(needed)} images named in {source} is in --images {images} "
            f"(e.g. {images / min(needed)}); point --images at VOC2008 JPEGImages"
        )

    # Clamp each box to its image (as numpy slicing does); empty boxes are skipped and counted.
    sizes: dict[str, tuple[int, int] | None] = {}
    jobs, empty = [], []
    for split, objs in objects.items():
        for o in objs:
            if o.image not in sizes:
                sizes[o.image] = image_size(images / o.image)
            box = clamp_box(o.box, sizes[o.image])
            if box is None:
                empty.append(o.rel)
                continue
            jobs.append((split, o, box))
    if empty:
        log.warning("aPY: %d object(s) with an empty box skipped (e.g. %s)", len(empty), empty[0])

    writer = ImageWriter(out_dir, opts.strict, fmt="PNG")  # lossless, full resolution
    work = ((images / o.image, o.rel, box) for _, o, box in jobs)
    ok = save_all(writer, work, total=len(jobs), desc="aPY objects")
    rows: dict[str, list[dict]] = {s: [] for s in FILES}
    for (split, o, _), saved in zip(jobs, ok, strict=True):
        if saved:
            rows[split].append({"image": f"images/{o.rel}", attr: o.category, "tags": o.tags})
    tables = {s: pd.DataFrame(r, columns=["image", attr, "tags"]) for s, r in rows.items()}
    classes = sorted({o.category for objs in objects.values() for o in objs})

    notes = {
        "source": str(source),
        "images": str(images),
        "objects": {s: len(o) for s, o in objects.items()},
        "image_storage": "crops as PNG (lossless), full resolution",
        "empty_boxes": len(empty),
        "empty_box_examples": empty[:20],
        "skipped_images": len(writer.skipped),
        "skipped_examples": writer.skipped[:20],
    }
    log.info(
        "aPY: %d + %d objects in %d source images, %d categories; %d empty boxes and %d "
        "unreadable crops skipped",
        len(objects["train"]),
        len(objects["test"]),
        len(sizes),
        len(classes),
        len(empty),
        len(writer.skipped),
    )
    return Processed(
        labels={attr: classes}, train=tables["train"], test=tables["test"], notes=notes
    )


def read_attribute_names(path: Path) -> list[str]:
    """attribute_names.txt: one name a line (names may hold spaces, e.g. 'Jet engine')."""
    if not path.is_file():
        raise SuiteError(f"{path} not found; {MANUAL_STEPS}")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise SuiteError(f"{path} is empty; {MANUAL_STEPS}")
    return names


def read_objects(path: Path, split: str, names: list[str]) -> list[AObject]:
    """Parse one aPascal annotation file; a malformed line fails naming the file and line."""
    if not path.is_file():
        raise SuiteError(f"{path} not found; {MANUAL_STEPS}")
    objects, seen = [], {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 6 + len(names):
                raise ValueError(f"{len(fields)} fields, expected {6 + len(names)}")
            image, category = fields[0], fields[1]
            box = tuple(int(v) for v in fields[2:6])
            values = np.array([int(v) for v in fields[6:]])
            if not np.isin(values, (0, 1)).all():
                raise ValueError("attribute values must be 0 or 1")
        except ValueError as e:
            raise SuiteError(
                f"{path} line {n}: malformed object line ({e}); expected '<image> <category> "
                f"<xmin> <ymin> <xmax> <ymax> <{len(names)} values 0/1>'"
            ) from None
        k = seen.get(image, 0)
        seen[image] = k + 1
        tags = join_tags([*(nm for nm, v in zip(names, values, strict=True) if v), category])
        rel = f"{split}/{Path(image).stem}_{k}.png"
        objects.append(AObject(image, rel, category, box, tags))
    if not objects:
        raise SuiteError(f"{path} holds no objects; {MANUAL_STEPS}")
    return objects


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header; None if unreadable (ImageWriter then reports it)."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, SyntaxError):
        return None


def clamp_box(
    box: tuple[int, int, int, int], size: tuple[int, int] | None
) -> tuple[int, int, int, int] | None:
    """Clamp (xmin, ymin, xmax, ymax) to a (w, h) image; None when nothing is left."""
    if size is None:  # unreadable: let ImageWriter skip it (or fail under --strict)
        return box
    w, h = size
    x0, y0 = min(max(box[0], 0), w), min(max(box[1], 0), h)
    x1, y1 = min(max(box[2], 0), w), min(max(box[3], 0), h)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1
