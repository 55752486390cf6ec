"""WikiArt reader: huggan/wikiart parquet shards or one folder per style → style + genre labels, tags.

Sources (--source DIR):
- parquet: DIR/**/*.parquet as published on the Hugging Face hub (columns image {bytes, path},
  artist, genre, style as integer ClassLabels whose names sit in the schema's "huggingface"
  metadata). Shards are read in file-name order, a few rows at a time.
- folders: DIR/<Style>/<artist>_<title>.jpg (the original WikiArt layout); the genre then comes
  from --attributions (else every image is "Unknown Genre").
Images go to images/<Style>/<file>.jpg, resized so the shorter side is 256 px (as the authors did,
for WikiArt only). Split: rows in source order permuted with numpy seed 777, the first
floor(0.8 n) train (SPEC §2). The authors permuted the rows of their own wclasses.csv, so that
membership differs; --split-from takes their preprocessed_wikiart_train.csv (and optionally the
test CSV; columns path, artist, genre, style) and reproduces it.

Tags (--attributions, the authors' table with columns path, Genre, Style, Media, tag): tag items,
media items, genre and style, split on commas, lower-cased, spaces removed, empty items dropped.
Quirk `wikiart-tag-cleaning` applies the authors' rule instead (see `authors_tag_items`).
A table row belongs to the image whose key `<Style>/<file name>` equals the last two components
of the row's `path` (the source file name: parquet image.path, or the file in the style folder).
Without the table, tags are genre + style + artist: mTS@10 is then far less informative.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.datasets.common import ImageWriter, Processed, SourceOptions, save_all
from src.errors import SuiteError
from src.tags import join_tags
from src.tasks import get_dataset

log = logging.getLogger(__name__)

SPLIT_SEED, TRAIN_FRACTION = 777, 0.8
UNKNOWN_GENRE = "Unknown Genre"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ATTRIBUTION_COLUMNS = ["path", "Genre", "Style", "Media", "tag"]
BATCH_ROWS = 32

MANUAL_STEPS = (
    "WikiArt has no direct archive to fetch; download the huggan/wikiart parquet files from the "
    "Hugging Face hub, e.g. `huggingface-cli download huggan/wikiart --repo-type dataset "
    "--local-dir DIR`, then run `python A1_preprocess.py --dataset wikiart --source DIR "
    "[--attributions wikiart_attributions.csv]` (a folder per style with <artist>_<title>.jpg "
    "files also works as DIR)"
)
NO_TABLE_WARNING = (
    "no --attributions table: tags fall back to genre + style + artist, so mTS@10 is far less "
    "informative than in the paper"
)


@dataclass
class Painting:
    """One source row: where its image goes and its labels (image bytes are not kept)."""

    rel: str  # <Style>/<file>.jpg under images/
    key: str  # <Style>/<source file name>: what an attributions row's path is matched against
    style: str
    genre: str
    artist: str


def prepare(out_dir: Path, opts: SourceOptions) -> Processed:
    """Convert WikiArt (parquet shards or style folders) into the processed format."""
    style_attr, genre_attr = get_dataset("wikiart").attributes  # "style", "genre"
    if opts.download:
        raise SuiteError(MANUAL_STEPS)
    if opts.source is None:
        raise SuiteError(f"--dataset wikiart needs --source DIR; {MANUAL_STEPS}")
    source = Path(opts.source)
    if not source.is_dir():
        raise SuiteError(f"--source {source} is not a folder; {MANUAL_STEPS}")
    authors_tags = "wikiart-tag-cleaning" in opts.quirks
    table = read_attributions(opts.attributions, authors_tags) if opts.attributions else None
    split_files = [read_split_file(f) for f in opts.split_from]  # checked before the long part

    writer = ImageWriter(out_dir, opts.strict, fmt="JPEG", shorter_side=opts.shorter_side)
    shards = sorted(source.rglob("*.parquet"))
    paintings: list[Painting] = []
    if shards:
        layout = "parquet"
        names = class_names(shards[0])
        total = sum(_parquet_rows(s) for s in shards)
        jobs = parquet_jobs(shards, names, paintings)
    else:
        layout = "style folders"
        files = style_folder_files(source)
        total = len(files)
        genre_of = {} if table is None else dict(zip(table.index, table["Genre"], strict=True))
        jobs = folder_jobs(files, genre_of, paintings)
    ok = np.array(save_all(writer, jobs, total=total, desc="WikiArt images"), dtype=bool)

    if layout == "parquet":
        labels = {style_attr: names["style"], genre_attr: names["genre"]}
    else:
        labels = {
            style_attr: sorted({p.style for p in paintings}),
            genre_attr: sorted({p.genre for p in paintings}),
        }
        if labels[genre_attr] == [UNKNOWN_GENRE]:
            log.warning(
                "WARNING: no genre labels (style folders without --attributions): every image is "
                "%r, so the wikiart-multi task is meaningless",
                UNKNOWN_GENRE,
            )

    tags, matched = tag_column(paintings, table, authors_tags)
    df = pd.DataFrame(
        {
            "image": [f"images/{p.rel}" for p in paintings],
            style_attr: [p.style for p in paintings],
            genre_attr: [p.genre for p in paintings],
            "tags": tags,
        }
    )
    n = len(df)
    if split_files:
        train_idx, test_idx, split_notes = split_from_files([p.key for p in paintings], split_files)
        split_rule = f"the authors' split files ({', '.join(map(str, opts.split_from))})"
    else:
        train_idx, test_idx = split_indices(n)
        split_notes = {}
        split_rule = (
            f"numpy RandomState({SPLIT_SEED}).permutation, first floor({TRAIN_FRACTION} n) train"
        )
    train = df.iloc[train_idx][ok[train_idx]].reset_index(drop=True)
    test = df.iloc[test_idx][ok[test_idx]].reset_index(drop=True)

    tag_source = "attributions" if table is not None else "genre+style+artist (fallback)"
    notes = {
        "source": str(source),
        "layout": layout,
        "rows": n,
        "split": split_rule,
        **split_notes,
        "image_shorter_side": opts.shorter_side or None,
        "tag_source": tag_source,
        "tag_cleaning": "authors' (quirk wikiart-tag-cleaning)" if authors_tags else "suite",
        "attributions": str(opts.attributions) if opts.attributions else None,
        "attributions_matched": matched,
        "skipped_images": len(writer.skipped),
        "skipped_examples": writer.skipped[:20],
    }
    if table is None:
        notes["warning"] = NO_TABLE_WARNING
        log.warning("WARNING: %s", NO_TABLE_WARNING)
    log.info(
        "WikiArt (%s): %d rows, %d styles, %d genres; tags from %s%s; %d unreadable images skipped",
        layout,
        n,
        len(labels[style_attr]),
        len(labels[genre_attr]),
        tag_source,
        f" ({matched} of {n} rows matched)" if table is not None else "",
        len(writer.skipped),
    )
    return Processed(labels=labels, train=train, test=test, notes=notes)


def split_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The authors' split: rows permuted with numpy seed 777, the first floor(0.8 n) train."""
    perm = np.random.RandomState(SPLIT_SEED).permutation(n)
    n_train = int(n * TRAIN_FRACTION)
    return perm[:n_train], perm[n_train:]


def read_split_file(path: Path) -> list[str]:
    """The `<Style>/<file>` keys of an authors' preprocessed_wikiart_{train,test}.csv, in order."""
    path = Path(path)
    hint = (
        "expected the authors' preprocessed_wikiart_train.csv or _test.csv (columns path, artist, "
        "genre, style; path ends in <Style>/<file>)"
    )
    if not path.is_file():
        raise SuiteError(f"--split-from {path} not found; {hint}")
    try:
        paths = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=["path"])["path"]
    except ValueError as e:  # no 'path' column, or not a CSV
        raise SuiteError(f"--split-from {path}: {e}; {hint}") from None
    keys = [image_key(p) for p in paths]
    if not keys:
        raise SuiteError(f"--split-from {path} lists no images; {hint}")
    dup = pd.Series(keys)[pd.Series(keys).duplicated()]
    if len(dup):
        raise SuiteError(f"--split-from {path}: image {dup.iloc[0]!r} is listed twice")
    return keys


def image_key(path: str) -> str:
    """`<class dir>/<file>`: the last two components of a path written on any OS; how the
    authors' tables (attributions, split CSVs, tags, queries, E1) name an image."""
    return "/".join(str(path).replace("\\", "/").split("/")[-2:])


def split_from_files(
    keys: list[str], files: list[list[str]]
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train/test rows as the authors' split files list them (their order): with the train file
    alone every other image is test; with both, images in neither are left out (and counted)."""
    rows: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        rows.setdefault(k, []).append(i)
    if len(files) == 2 and set(files[0]) & set(files[1]):
        both = sorted(set(files[0]) & set(files[1]))
        raise SuiteError(
            f"--split-from: {len(both)} images are in both the train and the test file "
            f"(e.g. {both[0]!r}); give the authors' train file first, then their test file"
        )
    taken: list[list[int]] = []
    unmatched = []
    for listed in files:
        idx = []
        for k in listed:
            if rows.get(k):
                idx.append(rows[k].pop(0))  # the same key twice in the source: in source order
            else:
                unmatched.append(k)
        taken.append(idx)
    if not any(taken):
        raise SuiteError(
            f"--split-from: no listed image matches the source: rows are matched on "
            f"'<Style>/<file>' (e.g. file {files[0][0]!r} vs image {keys[0] if keys else None!r})"
        )
    rest = sorted(i for left in rows.values() for i in left)
    if len(files) == 1:
        train, test, left_out = taken[0], rest, []
    else:
        (train, test), left_out = taken, rest
    if unmatched:
        log.warning(
            "WARNING: %d image(s) of the split files are not in the source (e.g. %s)",
            len(unmatched),
            unmatched[0],
        )
    if left_out:
        log.warning(
            "WARNING: %d source image(s) are in neither split file and are left out (e.g. %s)",
            len(left_out),
            keys[left_out[0]],
        )
    notes = {
        "split_unmatched": len(unmatched),
        "split_unmatched_examples": unmatched[:20],
        "split_left_out": len(left_out),
        "split_left_out_examples": [keys[i] for i in left_out[:20]],
    }
    return np.array(train, dtype=int), np.array(test, dtype=int), notes


# ---------------------------------------------------------------------------------------------
# Sources


def class_names(shard: Path) -> dict[str, list[str]]:
    """ClassLabel names of style, genre and artist from a shard's "huggingface" schema metadata."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(shard).metadata or {}
    except Exception as e:  # pyarrow raises several types for a non-parquet file
        raise SuiteError(f"{shard} is not a readable parquet file ({e}); {MANUAL_STEPS}") from None
    try:
        info = json.loads(meta[b"huggingface"])
        features = info.get("info", info).get("features", {})
        names = {a: [str(n) for n in features[a]["names"]] for a in ("style", "genre")}
        names["artist"] = [str(n) for n in features.get("artist", {}).get("names", [])]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise SuiteError(
            f"{shard}: the parquet schema lacks the 'huggingface' metadata with ClassLabel names "
            f"for style and genre; use the huggan/wikiart shards as published ({MANUAL_STEPS})"
        ) from None
    return names


def _parquet_rows(shard: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(shard).metadata.num_rows
    except Exception as e:
        raise SuiteError(f"{shard} is not a readable parquet file ({e})") from None


def parquet_jobs(
    shards: list[Path], names: dict[str, list[str]], out: list[Painting]
) -> Iterator[tuple]:
    """Yield ImageWriter jobs shard by shard, a few rows at a time; append each row to `out`."""
    import pyarrow.parquet as pq

    used: set[str] = set()
    for shard in shards:
        pf = pq.ParquetFile(shard)
        missing = {"image", "style", "genre"} - set(pf.schema_arrow.names)
        if missing:
            raise SuiteError(f"{shard} lacks columns {sorted(missing)}; {MANUAL_STEPS}")
        if class_names(shard) != names:
            raise SuiteError(f"{shard}: class names differ from {shards[0].name}'s")
        columns = [c for c in ("image", "style", "genre", "artist") if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            cols = batch.to_pydict()
            for i, image in enumerate(cols["image"]):
                n = len(out)
                style = _label(names, "style", cols["style"][i], shard)
                genre = _label(names, "genre", cols["genre"][i], shard)
                artist_id = cols["artist"][i] if "artist" in cols else None
                artist = (
                    names["artist"][artist_id]
                    if artist_id is not None and 0 <= artist_id < len(names["artist"])
                    else ""
                )
                src_name = Path(str((image or {}).get("path") or f"{n:06d}.jpg")).name
                rel = _unique(f"{_safe(style)}/{Path(src_name).stem}.jpg", used)
                out.append(Painting(rel, f"{style}/{src_name}", style, genre, artist))
                data = (image or {}).get("bytes") or b""
                yield io.BytesIO(data), rel, None


def _label(names: dict[str, list[str]], attr: str, value, shard: Path) -> str:
    if value is None or not 0 <= int(value) < len(names[attr]):
        raise SuiteError(
            f"{shard}: {attr} value {value!r} is not a class id 0..{len(names[attr]) - 1}"
        )
    return names[attr][int(value)]


def style_folder_files(source: Path) -> list[Path]:
    """Image files in DIR/<Style>/, styles and files in name order."""
    files = sorted(
        p
        for d in source.iterdir()
        if d.is_dir()
        for p in d.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise SuiteError(
            f"{source} holds neither *.parquet shards nor <Style>/<artist>_<title>.jpg folders; "
            f"{MANUAL_STEPS}"
        )
    return files


def folder_jobs(files: list[Path], genre_of: dict[str, str], out: list[Painting]) -> Iterator:
    """Yield ImageWriter jobs for style-folder files; append each to `out`."""
    used: set[str] = set()
    for f in files:
        style = f.parent.name
        key = f"{style}/{f.name}"
        genre = genre_of.get(key, "") or UNKNOWN_GENRE
        artist = f.stem.split("_", 1)[0]
        rel = _unique(f"{_safe(style)}/{f.stem}.jpg", used)
        out.append(Painting(rel, key, style, genre, artist))
        yield f, rel, None


def _safe(name: str) -> str:
    return name.replace("/", "_").replace("\\", "_").strip() or "_"


def _unique(rel: str, used: set[str]) -> str:
    """`rel`, or `rel` with _1, _2 … before the suffix if already taken."""
    out, k = rel, 0
    while out in used:
        k += 1
        out = f"{rel[:-4]}_{k}.jpg"
    used.add(out)
    return out


# ---------------------------------------------------------------------------------------------
# Tags


def read_attributions(path: Path, pandas_na: bool = False) -> pd.DataFrame:
    """The authors' attributions table, indexed by `<Style>/<file>` (last two path components).

    Missing values are empty strings. With `pandas_na` (the authors' reading) pandas' NA markers
    ('NaN', 'None', 'NA', 'null', …) count as missing too, as their default `read_csv` made them.
    """
    path = Path(path)
    if not path.is_file():
        raise SuiteError(
            f"--attributions {path} not found; it is the authors' wikiart_attributions.csv "
            "(columns path, Genre, Style, Media, tag), or drop the flag for fallback tags"
        )
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=pandas_na, usecols=ATTRIBUTION_COLUMNS)
    except ValueError as e:
        raise SuiteError(
            f"{path}: expected columns {', '.join(ATTRIBUTION_COLUMNS)} ({e})"
        ) from None
    df = df.fillna("")
    df.index = [image_key(p) for p in df["path"]]
    df = df[~df.index.duplicated(keep="last")]  # as the authors' dict: the last row wins
    return df


def tag_items(*fields: str) -> list[str]:
    """Comma-separated fields → items lower-cased with spaces removed; empty items dropped."""
    items = []
    for field_ in fields:
        for item in str(field_).split(","):
            item = item.lower().replace(" ", "")
            if item:
                items.append(item)
    return items


def authors_tag_items(*fields: str) -> list[str]:
    """The authors' cleaning (their evaluation's, which produced mTS): missing fields left out,
    the rest joined with ',', every "nan" deleted (also inside words: banana → baa), spaces
    removed, ONE pass of replace(',,', ',') (so ',,,' leaves an empty item), lower-cased, outer
    commas stripped, split on ','."""
    text = ",".join(f.replace("nan", "") for f in fields if f != "")
    text = text.replace("nan", "").replace(" ", "").replace(",,", ",").lower().strip(",")
    return text.split(",")


def tag_column(
    paintings: list[Painting], table: pd.DataFrame | None, authors: bool = False
) -> tuple[list[str], int]:
    """Tags per painting and how many attributions rows matched (0 without a table); `authors`
    applies the authors' cleaning (quirk wikiart-tag-cleaning), which can keep an empty tag."""
    if table is None:
        if authors:
            return [
                join_tags(authors_tag_items(p.genre, p.style, p.artist), keep_empty=True)
                for p in paintings
            ], 0
        return [join_tags(tag_items(p.genre, p.style, p.artist)) for p in paintings], 0
    rows = table.reindex([p.key for p in paintings])
    matched = int(rows["path"].notna().sum())
    if paintings and matched == 0:
        raise SuiteError(
            f"no row of the attributions table matches an image: rows are matched on "
            f"'<Style>/<file>' (e.g. table {table.index[0]!r} vs image {paintings[0].key!r})"
        )
    if matched < len(paintings):
        log.warning(
            "WARNING: %d of %d images have no attributions row; their tags are empty (A2 and "
            "E1 leave untagged images out)",
            len(paintings) - matched,
            len(paintings),
        )
    rows = rows.fillna("")
    tags = [
        attribution_tags(r.Genre, r.Style, r.Media, r.tag, authors)
        if r.path
        else ""  # no row: no tags (the authors' lookup would have failed)
        for r in rows[["path", "Genre", "Style", "Media", "tag"]].itertuples(index=False)
    ]
    return tags, matched


def attribution_tags(genre: str, style: str, media: str, tag: str, authors: bool = False) -> str:
    """One image's tags cell from its attributions fields ('' = missing): the suite's rule, or with
    `authors` (quirk wikiart-tag-cleaning) their cleaning, which can keep an empty tag.

    Shared by this reader and the release importer, so both build WikiArt tags the same way.
    """
    if authors:  # their field order (Genre, Style, Media, tag) matters for the ',,' pass
        return join_tags(authors_tag_items(genre, style, media, tag), keep_empty=True)
    return join_tags(tag_items(tag, media, genre, style))
