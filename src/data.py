"""The B1 image data: one split as a Dataset of (image tensor, label ids), decoded into memory
when it fits, so small datasets are read from disk once (B1, C1 and the throughput bench use it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader

from src.artifacts import dataset_dir
from src.datasets.common import read_labels, read_split
from src.errors import SuiteError
from src.labels import class_ids
from src.transforms import transform_parts

log = logging.getLogger(__name__)

CACHE_BYTES = 1 << 30  # decode a split into memory when it fits in about 1 GiB


def label_ids(
    df: pd.DataFrame, labels: Mapping[str, list[str]], attributes: Sequence[str], where: str
) -> torch.Tensor:
    """Class names → ids (N × attributes, int64), failing on a name labels.json does not list."""
    cols = []
    for a in attributes:
        if a not in df.columns or a not in labels:
            raise SuiteError(f"{where} or labels.json lacks attribute {a!r}; re-run A1")
        cols.append(torch.from_numpy(class_ids(df[a], a, labels[a], where)))
    return torch.stack(cols, dim=1)


def head_hits(logits: Mapping[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Per attribute, how many of a batch's label ids (label_ids' columns, the heads' order) the
    head's argmax gets right: the one accuracy count of B1's epochs and evaluation and of C1."""
    return torch.stack([(lg.argmax(1) == y[:, i]).sum() for i, lg in enumerate(logits.values())])


class ImageTable(torch.utils.data.Dataset):
    """Images of one split with their label ids; returns (image tensor, labels) per item.

    `pre` (deterministic PIL transforms) runs once per image when the split is cached in memory,
    `post` (augmentation, normalisation) on uint8 tensors every time.
    """

    def __init__(self, root: Path, images: Sequence[str], labels: torch.Tensor, pre, post):
        self.root, self.images, self.labels = root, list(images), labels
        self.pre, self.post = pre, post
        self.cache: list[torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def decode(self, i: int) -> torch.Tensor:
        path = self.root / self.images[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                for t in self.pre:
                    im = t(im)
                return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        except (OSError, ValueError) as e:
            raise SuiteError(f"cannot read image {path} ({e}); re-run A1") from None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.cache[i] if self.cache is not None else self.decode(i)
        for t in self.post:
            x = t(x)
        return x, self.labels[i]

    def fill_cache(self, workers: int) -> None:
        """Decode every image once (in parallel when workers > 0) and keep the uint8 tensors."""
        loader = DataLoader(_Decoder(self), batch_size=64, num_workers=workers, collate_fn=_as_list)
        # clone: tensors from workers live in shared memory, one file descriptor each
        self.cache = [x.clone() if workers else x for batch in loader for x in batch]

    def estimated_bytes(self) -> int:
        """Memory the cache would take: pre-transformed to image_size (aspect up to 2:1) or as stored."""
        if not self.images:
            return 0
        if self.pre:
            size = self.pre[0].size
            per = 3 * 2 * (size if isinstance(size, int) else max(size)) ** 2
        else:
            with Image.open(self.root / self.images[0]) as im:
                per = 3 * im.width * im.height
        return per * len(self.images)


def _as_list(batch: list) -> list:
    return batch


class _Decoder(torch.utils.data.Dataset):
    def __init__(self, table: ImageTable):
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.table.decode(i)


def load_split(
    data_root: Path, dataset: str, split: str, config: Mapping[str, Any], train: bool
) -> ImageTable:
    """One processed split as an ImageTable with the train or test transform of `config`."""
    df = read_split(data_root, dataset, split)
    labels = read_labels(data_root, dataset)
    ids = label_ids(df, labels, config["attributes"], f"{split}.csv of {dataset}")
    pre, post = transform_parts(config, train)
    return ImageTable(dataset_dir(data_root, dataset), df["image"].tolist(), ids, pre, post)


def maybe_cache(table: ImageTable, workers: int, name: str) -> None:
    """Decode the split into memory when it fits in CACHE_BYTES (else it streams from disk)."""
    if table.estimated_bytes() <= CACHE_BYTES:
        t0 = time.time()
        table.fill_cache(workers)
        log.info("decoded %d %s images into memory (%.1f s)", len(table), name, time.time() - t0)
