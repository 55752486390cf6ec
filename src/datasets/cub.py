"""CUB-200-2011 reader: species labels, attribute tags below the 0.8-quantile, seed-42 stratified split.

--source DIR holds CUB_200_2011/ (images.txt, images/, attributes/image_attribute_labels.txt) and
attributes.txt (beside CUB_200_2011/ as in the official archive, or inside it). `--download` fetches
the official archive into DIR first (SPEC §2). Images are kept as they are: hard links to the
originals under images/<class_dir>/ (copies where linking fails), never re-encoded, as the authors
fed the original JPEGs to the transforms.

Quirk `cub-tag-shift` (the authors' CSV round trip of the attribute table, SPEC §2): the image with
id k gets the attributes of the (k+1)-th image in id order; image 1's attributes are lost and the
last image is dropped (11,787 images, 8,250 / 3,537 instead of 11,788, 8,251 / 3,537).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedShuffleSplit

from src.datasets.common import ImageWriter, Processed, SourceOptions, save_all
from src.download import download_and_extract
from src.errors import SuiteError
from src.tags import join_tags
from src.tasks import get_dataset

log = logging.getLogger(__name__)

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
CUB_MD5 = "97eceeb196236b17998738112f37df78"
TAG_QUANTILE = 0.8  # keep attributes rarer than this quantile of all attribute frequencies
AUTHORS_THRESHOLD = 0.1849  # the value the authors computed and hard-coded
TEST_SIZE, SPLIT_SEED = 0.3, 42

LAYOUT = (
    "expected --source DIR with DIR/CUB_200_2011/{images.txt, images/, "
    "attributes/image_attribute_labels.txt} and DIR/attributes.txt (or "
    "CUB_200_2011/attributes/attributes.txt); get it from "
    "https://www.vision.caltech.edu/datasets/cub_200_2011/ or run A1 with --download"
)


def prepare(out_dir: Path, opts: SourceOptions) -> Processed:
    """Read CUB from --source (downloading it first with --download) into the processed format."""
    (attr,) = get_dataset("cub").attributes  # "species"
    if opts.source is None:
        raise SuiteError(f"--dataset cub needs --source DIR; {LAYOUT}")
    source = Path(opts.source)
    if opts.download:
        if find_root(source) is None:
            download_and_extract(opts.download_url or CUB_URL, CUB_MD5, source)
        else:
            log.info("CUB already present in %s; skipping the download", source)
    root = find_root(source)
    if root is None:
        raise SuiteError(f"{source / 'CUB_200_2011' / 'images.txt'} not found; {LAYOUT}")
    attr_file = find_attributes_file(root)
    if not (root / "images").is_dir():
        raise SuiteError(f"{root / 'images'} (the image folder) not found; {LAYOUT}")

    images = read_images(root / "images.txt")
    attr_names = read_attribute_names(attr_file)
    present = read_presence(
        root / "attributes" / "image_attribute_labels.txt", images, len(attr_names)
    )
    shifted = "cub-tag-shift" in opts.quirks
    if shifted:
        images, present = authors_tag_shift(images, present)
    frequency = present.mean(axis=0)
    threshold = float(np.quantile(frequency, TAG_QUANTILE))
    keep = frequency < threshold

    species = [p.split("/", 1)[0] for p in images["path"]]
    classes = sorted(set(species))
    kept_names = np.array(attr_names, dtype=object)[keep]
    tags = [join_tags([*kept_names[row[keep]], s]) for row, s in zip(present, species, strict=True)]
    table = pd.DataFrame({"image": [f"images/{p}" for p in images["path"]], attr: species})
    table["tags"] = tags

    sss = StratifiedShuffleSplit(n_splits=1, test_size=TEST_SIZE, random_state=SPLIT_SEED)
    train_idx, test_idx = next(sss.split(np.zeros(len(table)), species))

    writer = ImageWriter(out_dir, opts.strict, keep_original=True)
    jobs = ((root / "images" / p, p, None) for p in images["path"])
    ok = np.array(save_all(writer, jobs, total=len(images), desc="CUB images"), dtype=bool)
    train = table.iloc[train_idx][ok[train_idx]].reset_index(drop=True)
    test = table.iloc[test_idx][ok[test_idx]].reset_index(drop=True)

    notes = {
        "source": str(source),
        "tag_quantile": TAG_QUANTILE,
        "tag_threshold": threshold,
        "authors_tag_threshold": AUTHORS_THRESHOLD,
        "tag_attributes_kept": int(keep.sum()),
        "tag_attributes_total": len(attr_names),
        "split": f"StratifiedShuffleSplit(test_size={TEST_SIZE}, random_state={SPLIT_SEED}) by species",
        "image_storage": "original files, hard-linked"
        + (f" ({writer.copied} copied)" if writer.copied else ""),
        "tag_shift": "authors' (image k has image k+1's attributes)" if shifted else "none",
        "skipped_images": len(writer.skipped),
        "skipped_examples": writer.skipped[:20],
    }
    if shifted:
        log.info("CUB: authors' quirk cub-tag-shift: image k has image k+1's attributes")
    log.info(
        "CUB: %d images, %d species; tag threshold %.4f (0.8-quantile; authors 0.1849) keeps "
        "%d of %d attributes; %d unreadable images skipped",
        len(images),
        len(classes),
        threshold,
        keep.sum(),
        len(attr_names),
        len(writer.skipped),
    )
    return Processed(labels={attr: classes}, train=train, test=test, notes=notes)


def authors_tag_shift(images: pd.DataFrame, present: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """The authors' misalignment: the image with id k takes row k (0-based) of the attribute table
    sorted by id, i.e. the next image's attributes; ids outside 1..N-1 (the last image) are dropped.

    Their table is indexed by image id 1..N; a to_csv/read_csv round trip re-indexes it 0..N-1,
    after which paths are written by id into those rows and row 0 and the row added for id N are
    dropped (A1.Data-Preprocessing-CUB.py).
    """
    order = np.argsort(images["id"].to_numpy(), kind="stable")
    by_id = present[order]  # the attribute table after the round trip: row r = (r+1)-th id
    ids = images["id"].to_numpy()
    keep = (ids >= 1) & (ids < len(images))
    return images[keep].reset_index(drop=True), by_id[ids[keep]]


def find_root(source: Path) -> Path | None:
    """The CUB_200_2011 folder under `source` (or `source` itself if it is that folder)."""
    for root in (source / "CUB_200_2011", source):
        if (root / "images.txt").is_file():
            return root
    return None


def find_attributes_file(root: Path) -> Path:
    """attributes.txt: beside CUB_200_2011/ (official archive), in attributes/, or in the root."""
    candidates = [root.parent / "attributes.txt", root / "attributes" / "attributes.txt"]
    candidates.append(root / "attributes.txt")
    for c in candidates:
        if c.is_file():
            return c
    raise SuiteError(
        f"attributes.txt not found (looked at {', '.join(map(str, candidates))}); {LAYOUT}"
    )


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for every non-empty line of `path`, read lazily."""
    if not path.is_file():
        raise SuiteError(f"{path} not found; {LAYOUT}")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if fields:
                yield n, fields


def read_images(path: Path) -> pd.DataFrame:
    """images.txt → DataFrame(id, path) in file order; path = '<class_dir>/<file>.jpg'."""
    rows = []
    for n, fields in _lines(path):
        if len(fields) != 2 or not fields[0].isdigit() or "/" not in fields[1]:
            raise SuiteError(f"{path} line {n}: expected '<image_id> <class_dir>/<file>.jpg'")
        rows.append((int(fields[0]), fields[1]))
    df = pd.DataFrame(rows, columns=["id", "path"])
    if df["id"].duplicated().any():
        raise SuiteError(f"{path}: image id {df['id'][df['id'].duplicated()].iloc[0]} repeats")
    return df


def read_attribute_names(path: Path) -> list[str]:
    """attributes.txt ('<id> <name>', ids 1..K in order) → names in id order."""
    names = []
    for n, fields in _lines(path):
        if len(fields) != 2 or fields[0] != str(len(names) + 1):
            raise SuiteError(f"{path} line {n}: expected '{len(names) + 1} <attribute_name>'")
        names.append(fields[1])
    if not names:
        raise SuiteError(f"{path} is empty; {LAYOUT}")
    return names


def read_presence(path: Path, images: pd.DataFrame, n_attrs: int) -> np.ndarray:
    """image_attribute_labels.txt → bool matrix (images in images.txt order × attributes).

    Only the first three fields (image_id, attribute_id, is_present) are read: a few lines of the
    official file carry extra fields. A vectorised read handles the well-formed file; anything
    odd falls back to a line-by-line read that names the first bad line.
    """
    if not path.is_file():
        raise SuiteError(f"{path} not found; {LAYOUT}")
    ids = images["id"].to_numpy()
    try:
        values = np.loadtxt(path, usecols=(0, 1, 2), dtype=np.int64, ndmin=2)
        image_id, attr_id, is_present = values.T
        row = np.searchsorted(ids, image_id) if np.all(np.diff(ids) > 0) else None
        ok = (
            row is not None
            and np.isin(is_present, (0, 1)).all()
            and ((attr_id >= 1) & (attr_id <= n_attrs)).all()
            and (row < len(ids)).all()
            and (ids[np.minimum(row, len(ids) - 1)] == image_id).all()
        )
        if not ok:
            raise ValueError("value out of range")
    except ValueError:
        return _read_presence_lines(path, images, n_attrs)
    present = np.zeros((len(images), n_attrs), dtype=bool)
    present[row, attr_id - 1] = is_present.astype(bool)
    return present


def _read_presence_lines(path: Path, images: pd.DataFrame, n_attrs: int) -> np.ndarray:
    """The slow, precise reader: the same result, or an error naming the first bad line."""
    row_of = {int(i): r for r, i in enumerate(images["id"])}
    present = np.zeros((len(images), n_attrs), dtype=bool)
    for n, fields in _lines(path):
        try:
            image_id, attr_id, is_present = (int(v) for v in fields[:3])
            if is_present not in (0, 1) or not 1 <= attr_id <= n_attrs:
                raise ValueError
            row = row_of[image_id]
        except (ValueError, KeyError):
            raise SuiteError(
                f"{path} line {n}: expected '<image_id in images.txt> <attribute_id 1..{n_attrs}> "
                f"<is_present 0/1> ...', got {' '.join(fields[:5])!r}"
            ) from None
        present[row, attr_id - 1] = bool(is_present)
    return present
