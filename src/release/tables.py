"""The authors' tables as ours: label maps, split, tags (as their code builds them) and queries.

Read from their pickles and CSVs (SPEC §10) through the restricted unpickler; used by convert.py.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from src.datasets.wikiart import attribution_tags, image_key
from src.errors import SuiteError
from src.release.reader import ATTRIBUTE, THEIRS
from src.release.unpickle import load_pickle
from src.tags import join_tags
from src.tasks import get_dataset, get_task

log = logging.getLogger(__name__)


def as_int(v: Any, where: str) -> int:
    """A class id stored as int, numpy integer/array, 0-d tensor or digit string."""
    try:
        if isinstance(v, torch.Tensor | np.ndarray):
            v = v.reshape(-1)[0].item() if v.size else None
        return int(v)
    except (TypeError, ValueError, IndexError):
        raise SuiteError(f"{where}: class id {v!r} is not an integer") from None


def read_labels(path: Path, dataset: str) -> dict[str, list[str]]:
    """Their label map → {our attribute: class names in id order} for the dataset's attributes."""
    raw = load_pickle(path)
    out: dict[str, list[str]] = {}
    for attr in get_dataset(dataset).attributes:
        theirs = THEIRS[attr]
        try:
            num2label = {as_int(k, str(path)): str(v) for k, v in raw[theirs]["num2label"].items()}
            label2num = {str(k): as_int(v, str(path)) for k, v in raw[theirs]["label2num"].items()}
        except (KeyError, TypeError, AttributeError):
            raise SuiteError(
                f"{path} has no {theirs!r} entry with 'num2label' and 'label2num' dicts"
            ) from None
        if sorted(num2label) != list(range(len(num2label))) or not num2label:
            raise SuiteError(f"{path}: {theirs} class ids are not 0..{len(num2label) - 1}")
        names = [num2label[i] for i in range(len(num2label))]
        if label2num != {n: i for i, n in enumerate(names)}:
            raise SuiteError(f"{path}: {theirs} num2label and label2num disagree")
        out[attr] = names
    return out


def tag_cell(key: str, value: Any, dataset: str, quirks: Sequence[str], where: Path) -> str:
    """One image's tags as their code builds them (SPEC §2), '|'-joined.

    CUB/aPY: the comma-split attributes + the class (their E1: the class directory for CUB, the
    category in the file name for aPY). WikiArt [genre, style, media, tag]: items lower-cased
    without spaces, empty items dropped; with the `wikiart-tag-cleaning` quirk their exact string
    cleaning (substring "nan" deleted, single-pass ',,' → ','), which can keep an empty tag — the
    A1 reader's rule (`attribution_tags`), so an import and a rebuild give the same tags.
    """
    n = 4 if dataset == "wikiart" else 2
    if not isinstance(value, list | tuple) or len(value) != n:
        raise SuiteError(f"{where}: tags of {key!r} are not a list of {n} fields")
    if dataset == "wikiart":
        fields = ("" if _missing(v) else str(v) for v in value)  # Genre, Style, Media, tag
        return attribution_tags(*fields, authors="wikiart-tag-cleaning" in quirks)
    attrs = "" if _missing(value[1]) else str(value[1])
    cls = key.split("/")[0] if dataset == "cub" else key.split("_")[-2]
    return join_tags([*attrs.split(","), cls])


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def read_split(
    path: Path, dataset: str, labels: Mapping[str, list[str]], tags: Mapping, quirks, tags_path
) -> pd.DataFrame:
    """Their preprocessed_<DS>_<split>.csv (path, class ids) → image, class names, tags."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    needed = ["path", *(THEIRS[a] for a in labels)]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise SuiteError(f"{path} lacks columns {missing} (expected {', '.join(needed)})")
    keys = [image_key(p) for p in df["path"]]
    out = pd.DataFrame({"image": [f"images/{k}" for k in keys]})
    for attr, names in labels.items():
        ids = [as_int(v, str(path)) for v in df[THEIRS[attr]]]
        bad = [i for i in ids if not 0 <= i < len(names)]
        if bad:
            raise SuiteError(f"{path}: {THEIRS[attr]} id {bad[0]} outside 0..{len(names) - 1}")
        out[attr] = [names[i] for i in ids]
    absent = [k for k in keys if k not in tags]
    if absent:
        raise SuiteError(
            f"{tags_path} has no tags for {len(absent)} images of {path} (e.g. {absent[0]})"
        )
    out["tags"] = [tag_cell(k, tags[k], dataset, quirks, tags_path) for k in keys]
    if out["image"].duplicated().any():
        raise SuiteError(f"{path} lists {out['image'][out['image'].duplicated()].iloc[0]} twice")
    return out


def read_queries(path: Path, task_name: str, labels, test: pd.DataFrame) -> pd.DataFrame:
    """Their query pickle → our queries CSV rows (query_id = their key, in key order)."""
    task = get_task(task_name)
    raw = load_pickle(path)
    if not isinstance(raw, dict) or not raw:
        raise SuiteError(f"{path} is not a non-empty dict of queries")
    tags_of = dict(zip(test["image"], test["tags"], strict=True))
    rows = []
    for k in sorted(raw, key=lambda x: as_int(x, str(path))):
        q = raw[k]
        try:
            key, cond, their_tags = q["candidate"], q["condition"], q.get("candidate_tags", "")
        except (KeyError, TypeError):
            raise SuiteError(f"{path}: query {k!r} lacks 'candidate' or 'condition'") from None
        image = f"images/{image_key(key)}"
        if image not in tags_of:
            raise SuiteError(f"{path}: query {k!r} image {key!r} is not in the test split")
        row = {"query_id": as_int(k, str(path)), "image": image}
        if sorted(ATTRIBUTE.get(a, a) for a in cond) != sorted(task.conditions):
            raise SuiteError(f"{path}: query {k!r} conditions on {list(cond)}, not {task.name}'s")
        for a in task.conditions:
            name = str(cond[THEIRS[a]])
            if name not in labels[a]:
                raise SuiteError(f"{path}: query {k!r} condition {name!r} is no {a} class")
            row[a] = name
        row["tags"] = tags_of[image]  # the query image's tags, as their E1 computes mTS with
        row["authors_tags"] = str(their_tags)  # their candidate_tags string, verbatim
        rows.append(row)
    ids = [r["query_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise SuiteError(f"{path}: query ids repeat")
    return pd.DataFrame(
        rows, columns=["query_id", "image", *task.conditions, "tags", "authors_tags"]
    )
