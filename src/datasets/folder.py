"""A1 reader for your own images: a folder with a labels.csv, no code (docs/datasets.md).

DIR/labels.csv: `image` (a path relative to DIR), one column per label attribute (class names),
optional `tags` ('|'-joined; absent → the image's label values, as attr=value, are its tags),
optional `split` (train/test; absent → a stratified 80/20 split on the first attribute, --seed).
Besides the processed format, it writes dataset.json: the registry entry (src/tasks.py) as data.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from src.artifacts import write_json
from src.datasets.common import SPLITS, ImageWriter, Processed, SourceOptions, save_all
from src.errors import SuiteError
from src.labels import nfc_names, unprintable
from src.paper import QUERY_MIN_TARGETS as MIN_TARGETS
from src.tags import TAG_SEP, join_tags
from src.tasks import DATASET_FILE, check_attribute_name, check_dataset_name

log = logging.getLogger(__name__)

LABELS_CSV = "labels.csv"
RESERVED_COLUMNS = ("image", "tags", "split")
QUERY_COLUMNS = ("query_id",)  # A2's queries_<task>.csv column: no attribute may take its name
TEST_FRACTION = 0.2
MIN_TEST = 2  # per class: a query needs a target of its condition besides itself


def read_labels_csv(source: Path) -> tuple[pd.DataFrame, list[str]]:
    """DIR/labels.csv checked (columns, paths, duplicates, classes); returns it and its attributes."""
    path = source / LABELS_CSV
    if not path.is_file():
        raise SuiteError(f"{path} not found: --source must be a folder holding {LABELS_CSV}")
    try:  # header=None: pandas would rename a repeated column ('a', 'a.1') before we see it
        df = pd.read_csv(path, dtype=str, keep_default_na=False, header=None)
    except pd.errors.EmptyDataError:
        raise SuiteError(f"{path} is empty: write a header (image, attributes…) and rows") from None
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise SuiteError(f"{path} is not a readable CSV ({str(e).splitlines()[0]})") from None
    df.columns = header_names(path, list(df.iloc[0]))
    df = df.iloc[1:].reset_index(drop=True)
    if "image" not in df.columns:
        raise SuiteError(f"{path} has no 'image' column (the image paths, relative to {source})")
    attrs = [c for c in df.columns if c not in RESERVED_COLUMNS]
    for a in attrs:
        if a in QUERY_COLUMNS:
            raise SuiteError(f"{path}: attribute column {a!r} is A2's query id column; rename it")
        check_attribute_name(a, str(path))
    if not attrs:
        raise SuiteError(f"{path} has no label column: add one column per attribute beside 'image'")
    if df.empty:
        raise SuiteError(f"{path} has a header but no rows")
    df = df.map(str.strip)
    for col in df.columns:  # names end up in files and one-line messages: printable only
        bad = df[col].map(unprintable)
        if bad.notna().any():
            row = int(np.argmax(bad.notna()))
            raise SuiteError(
                f"{path}: row {row + 2}, column {col!r} holds the unprintable character "
                f"{bad.iloc[row]} (a line break, tab or invisible mark); remove it"
            )
    for col in ("image", *attrs):
        blank = df[col] == ""
        if blank.any():
            raise SuiteError(f"{path}: row {int(np.argmax(blank)) + 2} has an empty {col!r}")
    for a in attrs:  # class names in NFC: one spelling per class, whatever the editor wrote
        df[a] = df[a].map(nfc_names(df[a].unique(), f"{path}, column {a!r}"))
    if "tags" in df.columns:  # a tag typed in NFD is the same tag as in NFC
        df["tags"] = [unicodedata.normalize("NFC", c) for c in df["tags"]]
    for rel in df["image"]:
        if not inside(rel):
            raise SuiteError(
                f"{path}: image {rel!r} is outside {source}; give paths relative to the folder"
            )
    df["image"] = [PurePosixPath(rel).as_posix() for rel in df["image"]]  # 'a//./b' → 'a/b'
    dup = df["image"].duplicated()
    if dup.any():
        raise SuiteError(f"{path}: image {df['image'][dup].iloc[0]!r} is listed twice")
    for a in attrs:
        if df[a].nunique() < 2:
            raise SuiteError(
                f"{path}: attribute {a!r} has one class ({df[a].iloc[0]!r}); a condition needs "
                "at least two (drop the column)"
            )
    if "split" in df.columns:
        bad = sorted(set(df["split"]) - set(SPLITS))
        if bad:
            raise SuiteError(f"{path}: split {bad[0]!r} is not train or test")
    return df, attrs


def header_names(path: Path, raw: list[str]) -> list[str]:
    """labels.csv's column names without surrounding spaces; two that become one name fail."""
    names: dict[str, str] = {}
    for column in raw:
        name = str(column).strip()
        if name in names:
            same = (
                f"{column!r} twice" if names[name] == column else f"{names[name]!r} and {column!r}"
            )
            raise SuiteError(
                f"{path}: the header has {same}, one column name once spaces are dropped; "
                "rename or merge them"
            )
        names[name] = column
    return list(names)


def inside(rel: str) -> bool:
    """Whether `rel` is a relative path that stays inside the folder (no root, drive or '..')."""
    posix, win = PurePosixPath(rel), PureWindowsPath(rel)
    return not (posix.is_absolute() or win.drive or win.root or ".." in posix.parts + win.parts)


def stratified_test(labels: pd.Series, seed: int) -> np.ndarray:
    """Test membership: round(20 %) of each class of `labels`, drawn with `seed`."""
    rng = np.random.default_rng([seed, 0xF01D])
    is_test = np.zeros(len(labels), dtype=bool)
    for cls in sorted(set(labels)):
        idx = np.flatnonzero(labels.to_numpy() == cls)
        is_test[rng.permutation(idx)[: round(len(idx) * TEST_FRACTION)]] = True
    return is_test


def check_test_classes(test: pd.DataFrame, classes: dict[str, list[str]], rule: str) -> None:
    """Fail when a class has fewer than MIN_TEST test images (its queries could find no target)."""
    for a, names in classes.items():
        counts = test[a].value_counts()
        for cls in names:
            n = int(counts.get(cls, 0))
            if n < MIN_TEST:
                raise SuiteError(
                    f"class {cls!r} of {a} has {n} readable test image(s) ({rule}); each class "
                    f"needs at least {MIN_TEST}: add images of it or set a 'split' column"
                )
        few = [c for c in names if counts.get(c, 0) <= MIN_TARGETS]
        if few:  # A2 needs MIN_TARGETS targets besides the query: no query will ask for these
            log.warning(
                "WARNING: %d class(es) of %s have %d or fewer test images (e.g. %r); A2 draws no "
                "query conditioned on them (SPEC §3 asks for %d targets besides the query)",
                len(few), a, MIN_TARGETS, few[0], MIN_TARGETS,
            )  # fmt: skip


def prepare(out_dir: Path, opts: SourceOptions) -> Processed:
    """Check labels.csv, store its readable images, split, and write the registry entry."""
    name = check_dataset_name(opts.name or "")
    if opts.source is None or not opts.source.is_dir():
        raise SuiteError(f"--dataset folder needs --source DIR (a folder), not {opts.source}")
    source = opts.source.resolve()
    df, attrs = read_labels_csv(source)
    classes = {a: sorted(set(df[a])) for a in attrs}
    if "split" in df.columns:
        rule = "the 'split' column of labels.csv"
        is_test = (df["split"] == "test").to_numpy()
    else:
        rule = f"stratified {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} on {attrs[0]}, seed {opts.seed}"
        is_test = stratified_test(df[attrs[0]], opts.seed)
    if "tags" in df.columns:
        if (df["tags"] == "").all():  # A2 could draw no query, E1 search no database
            raise SuiteError(
                f"{source / LABELS_CSV}: the tags column is empty; give images tags, or drop the "
                "column (each image's label values then are its tags)"
            )
        tag_source = "the 'tags' column of labels.csv"
        df["tags"] = [join_tags(c.split(TAG_SEP)) for c in df["tags"]]
    else:
        tag_source = "no tags column: each image's label values (attr=value) are its tags"
        df["tags"] = [join_tags(f"{a}={r[a]}" for a in attrs) for _, r in df.iterrows()]
    # stored as images/<path in DIR>, linked (or copied) as they are: no re-encoding
    writer = ImageWriter(out_dir, opts.strict, keep_original=True)
    jobs = ((source / rel, rel) for rel in df["image"])
    ok = np.array(save_all(writer, jobs, total=len(df), desc=f"{name} images"), dtype=bool)
    df["image"] = "images/" + df["image"]
    train = df[~is_test & ok].reset_index(drop=True)
    test = df[is_test & ok].reset_index(drop=True)
    if train.empty:
        raise SuiteError(f"no readable train image in {source} ({rule})")
    check_test_classes(test, classes, rule)
    entry = {
        "name": name,
        "description": f"your own images from {source}",
        "attributes": attrs,
        "classes": classes,
        "source": str(source),
        "split": rule,
        "tags": tag_source,
    }
    write_json(out_dir / DATASET_FILE, entry)
    notes = {
        "split": rule,  # REPORT.md's protocol line shows both
        "tag_source": tag_source,
        "folder": {
            "name": name,
            "source": str(source),
            "skipped_unreadable": len(writer.skipped),
            "skipped_files": writer.skipped[:20],
            "class_counts": {a: df[ok][a].value_counts().to_dict() for a in attrs},
        },
    }
    if writer.skipped:
        log.warning("skipped %d unreadable image(s) of %s", len(writer.skipped), source)
    return Processed(classes, train, test, notes)
