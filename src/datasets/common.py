"""The processed format every reader writes and every later stage reads.

data/<dataset>/images/…      CUB: the original JPEGs (hard links or copies); aPY: lossless PNG crops at
                             full resolution; WikiArt: JPEG, shorter side 256 px; SynthArt as generated
data/<dataset>/labels.json   {attribute: [class names in id order]}
data/<dataset>/train.csv     image, <one column per label attribute: class name>, tags
data/<dataset>/test.csv      same columns; tags joined with '|' (a trailing '|' marks an empty tag)
data/<dataset>/config.json   how A1 produced it (arguments, counts, the authors' quirks applied)
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from src.artifacts import dataset_dir, read_json, read_table, write_csv, write_json
from src.errors import SuiteError
from src.hints import a1_hint
from src.labels import unprintable
from src.progress import progress
from src.tasks import get_dataset

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
SHORTER_SIDE = 256  # the authors resized WikiArt (only WikiArt) so its shorter side is 256 px


@dataclass(frozen=True)
class SourceOptions:
    """What A1's flags tell a dataset reader: where the raw data is and how to convert it."""

    source: Path | None = None  # the raw data folder
    images: Path | None = None  # apy: PASCAL VOC 2008 JPEGImages
    attributions: Path | None = None  # wikiart: the authors' wikiart_attributions.csv
    split_from: tuple[Path, ...] = ()  # wikiart: the authors' preprocessed train (and test) CSVs
    download: bool = False
    download_url: str | None = None
    strict: bool = False  # fail on the first unreadable image instead of skipping it
    shorter_side: int = SHORTER_SIDE  # wikiart: resize target (0 keeps the size)
    num_images: int = 3000  # synthart
    image_size: int = 64  # synthart
    seed: int = 0
    quirks: tuple[str, ...] = ()  # the authors' A1 bugs to reproduce (src/quirks.py)
    name: str | None = None  # folder: the dataset's name (data/<name>/)


@dataclass
class Processed:
    """A processed dataset in memory: label vocabularies and the two splits."""

    labels: dict[str, list[str]]
    train: pd.DataFrame
    test: pd.DataFrame
    notes: dict = field(default_factory=dict)  # counts, skipped files, warnings → config.json


def write_processed(out_dir: Path, data: Processed) -> None:
    """Validate and write labels.json, train.csv, test.csv into `out_dir`."""
    attrs = list(data.labels)
    cols = ["image", *attrs, "tags"]
    for split in SPLITS:
        df = getattr(data, split)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise SuiteError(f"internal: {split} table lacks columns {missing}")
        for a in attrs:
            unknown = set(df[a]) - set(data.labels[a])
            if unknown:
                raise SuiteError(
                    f"internal: {split} has {a} values outside labels.json: {sorted(unknown)[:5]}"
                )
        if len(df) == 0:
            raise SuiteError(f"the {split} split is empty; check the source data")
        write_csv(out_dir / f"{split}.csv", df[cols].reset_index(drop=True))
    write_json(out_dir / "labels.json", data.labels)


def read_labels(data_root: str | Path, dataset: str) -> dict[str, list[str]]:
    """labels.json of a processed dataset: {attribute: [class names]} for every label attribute."""
    path = dataset_dir(data_root, dataset) / "labels.json"
    labels = read_json(path, a1_hint(dataset))
    attrs = get_dataset(dataset, data_root).attributes
    if not isinstance(labels, dict) or not all(
        isinstance(labels.get(a), list) and labels[a] for a in attrs
    ):
        raise SuiteError(
            f"{path} does not list the classes of {', '.join(attrs)}; re-run {a1_hint(dataset)}"
        )
    for a in attrs:  # a class is one printable name, listed once
        names = labels[a]
        bad = [n for n in names if not isinstance(n, str) or not n or unprintable(n)]
        if bad or len(set(names)) < len(names):
            what = f"the class {bad[0]!r} of {a}" if bad else f"a class of {a} twice"
            raise SuiteError(f"{path} lists {what}; re-run {a1_hint(dataset)}")
    return labels


def split_columns(dataset: str, data_root: str | Path | None = None) -> list[str]:
    """The columns of train.csv / test.csv: image, one per label attribute, tags."""
    return ["image", *get_dataset(dataset, data_root).attributes, "tags"]


def read_split(
    data_root: str | Path, dataset: str, split: str, columns: list[str] | None = None
) -> pd.DataFrame:
    """One split of a processed dataset; class names and tags as strings (empty tags → '').
    `columns`: only these (each still required)."""
    path = dataset_dir(data_root, dataset) / f"{split}.csv"
    if columns is not None:
        return read_table(path, columns, a1_hint(dataset), only=True)
    return read_table(path, split_columns(dataset, data_root), a1_hint(dataset))


QUERY_FILES = ("queries_*.csv", "queries_*.json")


def carry_queries(old_dir: Path, new_dir: Path) -> list[Path]:
    """Keep A2's query files across a re-run of A1 when the split is unchanged; return the removed.

    Queries name test images and class names, so they stay valid exactly when labels.json,
    train.csv and test.csv are byte-identical (same membership, labels and tags); otherwise they
    are dropped, and the caller says so loudly.
    """
    found = sorted(p for pattern in QUERY_FILES for p in old_dir.glob(pattern))
    if not found:
        return []
    same = all(
        (old_dir / n).is_file() and (old_dir / n).read_bytes() == (new_dir / n).read_bytes()
        for n in ("labels.json", "train.csv", "test.csv")
    )
    if not same:
        return found
    for p in found:
        shutil.copy2(p, new_dir / p.name)
    return []


class ImageWriter:
    """Store source images under images/: check each decodes, then link it as it is, or crop,
    optionally resize, and save it (PNG lossless, or JPEG); count or refuse unreadable ones."""

    def __init__(
        self,
        out_dir: Path,
        strict: bool,
        *,
        keep_original: bool = False,
        fmt: str = "PNG",
        shorter_side: int = 0,
    ):
        self.out_dir = out_dir
        self.strict = strict
        self.keep_original = keep_original  # hard-link (else copy) the file: no re-encoding
        self.fmt = fmt
        self.shorter_side = shorter_side  # 0: keep the size
        self.skipped: list[str] = []
        self.copied = 0  # kept originals that could not be hard-linked
        self._lock = threading.Lock()  # save() runs on several threads

    def save(self, src, rel: str, box: tuple[int, int, int, int] | None = None) -> bool:
        """Write `src` (a path or a file-like object) to images/<rel>; False if unreadable."""
        try:
            if isinstance(src, (str, Path)) and Path(src).exists() and not Path(src).is_file():
                raise OSError(f"not a regular file: {src}")  # a pipe or device would block
            with Image.open(src) as im:
                im.load()  # decode fully: a truncated file fails here, not in B1
                dst = self.out_dir / "images" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if self.keep_original:
                    self._link(Path(src), dst)
                    return True
                im = im.convert("RGB")
                if box is not None:
                    im = im.crop(box)
                    if im.width < 1 or im.height < 1:
                        raise ValueError(f"empty box {box}")
                if self.shorter_side:
                    im = resize_shorter(im, self.shorter_side)
                if self.fmt == "JPEG":
                    im.save(dst, format="JPEG", quality=95)
                else:
                    im.save(dst, format=self.fmt)
            return True
        except (
            UnidentifiedImageError,
            Image.DecompressionBombError,
            OSError,
            ValueError,
            SyntaxError,
        ) as e:  # a bomb (> 2× Pillow's pixel limit) is skipped like the rest
            name = src if isinstance(src, (str, Path)) else rel
            if self.strict:
                raise SuiteError(
                    f"unreadable image {name}: {e} (drop --strict to skip such files)"
                ) from None
            log.warning("skipping unreadable image %s: %s", name, e)
            self.skipped.append(str(name))
            return False

    def _link(self, src: Path, dst: Path) -> None:
        """A hard link to `src`; a byte copy where linking fails (another file system, no links)."""
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
        try:
            shutil.copyfile(src, dst)
        except OSError as e:  # a write error, not an unreadable source: never skip silently
            raise SuiteError(f"cannot copy {src} to {dst}: {e}") from None
        with self._lock:
            self.copied += 1


def resize_shorter(im: Image.Image, shorter: int) -> Image.Image:
    """Resize so the shorter side is `shorter` px, keeping the aspect ratio."""
    w, h = im.size
    scale = shorter / min(w, h)
    if scale == 1:
        return im
    return im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)


def write_dataset_config(out_dir: Path, config: dict) -> None:
    write_json(out_dir / "config.json", config)


def save_all(
    writer: ImageWriter, jobs, total: int | None = None, desc: str = "images"
) -> list[bool]:
    """Run `writer.save(src, rel, box)` over `jobs` on a few threads (Pillow decodes and resizes
    without the GIL), with a progress bar; returns, in job order, whether each image was written.

    At most a few jobs are in flight at a time, so `jobs` may be a generator over large sources
    (e.g. image bytes read shard by shard). An error (e.g. under --strict) stops the remaining jobs.
    """
    workers = max(1, min(8, os.cpu_count() or 1))
    results: list[bool] = []
    pending: deque = deque()
    bar = progress(
        (), f"A1 {desc}", total=total, unit="img"
    )  # tqdm on a terminal, log lines otherwise
    with ThreadPoolExecutor(max_workers=workers) as pool, bar:
        try:
            for job in jobs:
                pending.append(pool.submit(writer.save, *job))
                if len(pending) >= 4 * workers:
                    results.append(pending.popleft().result())
                    bar.update()
            while pending:
                results.append(pending.popleft().result())
                bar.update()
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    return results
