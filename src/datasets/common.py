"""The processed format every reader writes and every later stage reads.

data/<dataset>/images/…      resized images (shorter side 256 px; SynthArt as generated)
data/<dataset>/labels.json   {attribute: [class names in id order]}
data/<dataset>/train.csv     image, <one column per label attribute: class name>, tags
data/<dataset>/test.csv      same columns; tags joined with '|'
data/<dataset>/config.json   how A1 produced it
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from src.artifacts import dataset_dir, read_json, require, write_csv, write_json
from src.errors import SuiteError
from src.hints import a1_hint

log = logging.getLogger("backward_search")

TAG_SEP = "|"
SPLITS = ("train", "test")
SHORTER_SIDE = 256  # the authors resized every image so its shorter side is 256 px


@dataclass
class Processed:
    """A processed dataset in memory: label vocabularies and the two splits."""

    labels: dict[str, list[str]]
    train: pd.DataFrame
    test: pd.DataFrame
    notes: dict = field(default_factory=dict)  # counts, skipped files, warnings → config.json


def join_tags(tags) -> str:
    """Tags as one CSV cell: unique, order kept, joined with '|'."""
    seen: dict[str, None] = {}
    for t in tags:
        t = str(t).strip()
        if t and t not in seen:
            seen[t] = None
    return TAG_SEP.join(seen)


def split_tags(cell) -> frozenset[str]:
    """The set of tags stored in one CSV cell (empty cell → empty set)."""
    if not isinstance(cell, str) or not cell:
        return frozenset()
    return frozenset(t for t in cell.split(TAG_SEP) if t)


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
    return read_json(dataset_dir(data_root, dataset) / "labels.json", a1_hint(dataset))


def read_split(data_root: str | Path, dataset: str, split: str) -> pd.DataFrame:
    """One split of a processed dataset; class names and tags as strings (empty tags → '')."""
    path = require(dataset_dir(data_root, dataset) / f"{split}.csv", a1_hint(dataset))
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return df


class ImageWriter:
    """Open, optionally crop and resize, and save source images; count or refuse unreadable ones."""

    def __init__(self, out_dir: Path, strict: bool, shorter_side: int | None = SHORTER_SIDE):
        self.out_dir = out_dir
        self.strict = strict
        self.shorter_side = shorter_side
        self.skipped: list[str] = []

    def save(self, src, rel: str, box: tuple[int, int, int, int] | None = None) -> bool:
        """Write `src` (a path or a file-like object) to images/<rel> as JPEG; False if unreadable."""
        try:
            with Image.open(src) as im:
                im = im.convert("RGB")
                if box is not None:
                    im = im.crop(box)
                    if im.width < 1 or im.height < 1:
                        raise ValueError(f"empty box {box}")
                if self.shorter_side:
                    im = resize_shorter(im, self.shorter_side)
                dst = self.out_dir / "images" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                im.save(dst, format="JPEG", quality=95)
            return True
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            name = src if isinstance(src, (str, Path)) else rel
            if self.strict:
                raise SuiteError(
                    f"unreadable image {name}: {e} (drop --strict to skip such files)"
                ) from None
            log.warning("skipping unreadable image %s: %s", name, e)
            self.skipped.append(str(name))
            return False


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
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=total, desc=desc, unit="img") as bar,
    ):
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
