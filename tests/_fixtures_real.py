"""Miniature copies of the real datasets' raw formats (CUB, aPY, WikiArt) and an A1 runner."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import A1_preprocess
from src.cli import run_stage


def run_a1(capsys, *argv: str) -> tuple[int, str, str]:
    """Run A1 as the command line would; (exit code, stdout, the `error: …` lines of stderr)."""
    capsys.readouterr()
    rc = run_stage(A1_preprocess.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    errors = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error:")]
    return rc, out, "\n".join(errors)


def read_out(data_root: Path, dataset: str) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict]:
    """labels.json, train.csv, test.csv and config.json of a processed dataset."""
    d = data_root / dataset
    labels = json.loads((d / "labels.json").read_text())
    train = pd.read_csv(d / "train.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(d / "test.csv", dtype=str, keep_default_na=False)
    config = json.loads((d / "config.json").read_text())
    return labels, train, test, config


def leftovers(data_root: Path) -> list[str]:
    """Anything a failed run left in the data root (final folders or temporary ones)."""
    return sorted(p.name for p in data_root.iterdir()) if data_root.exists() else []


def picture(w: int, h: int, seed: int) -> Image.Image:
    """A small RGB picture with some structure (so JPEG encoding is realistic)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    y, x = np.mgrid[0:h, 0:w]
    arr = (base + np.stack([x * 3, y * 5, (x + y) * 2], -1)) % 256
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def jpeg_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# CUB

CUB_SPECIES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
CUB_PER_SPECIES = 10
# Attribute j is present in exactly 3*j of the 30 images: frequencies 0.0, 0.1, …, 1.0.
# Their 0.8-quantile (linear rule, position 0.8 * 10 = 8) is the 9th value, 0.8 (by hand). Only
# attributes strictly rarer are tags: j = 0..7; j = 8 (exactly at the threshold), 9, 10 are not.
CUB_ATTRS = [f"has_part_{j}::value_({j})" for j in range(11)]
CUB_THRESHOLD = 0.8
CUB_KEPT = CUB_ATTRS[:8]


def make_cub(source: Path, attributes_at: str = "beside") -> dict:
    """Write a CUB_200_2011 miniature under `source`; returns what the test needs to check."""
    root = source / "CUB_200_2011"
    (root / "attributes").mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = len(CUB_SPECIES) * CUB_PER_SPECIES
    # images.txt in an order that is NOT grouped by species (the split must follow file order)
    species = [CUB_SPECIES[i % len(CUB_SPECIES)] for i in range(n)]
    paths = [f"{s}/{s.split('.')[1]}_{i:04d}_{i}.jpg" for i, s in enumerate(species)]
    for i, p in enumerate(paths):
        (root / "images" / p).parent.mkdir(parents=True, exist_ok=True)
        picture(20 + i % 15, 24 + (i * 7) % 17, i).save(root / "images" / p)
    (root / "images.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(paths)))

    attr_text = "".join(f"{j + 1} {a}\n" for j, a in enumerate(CUB_ATTRS))
    where = {
        "beside": source / "attributes.txt",
        "inside": root / "attributes" / "attributes.txt",
        "root": root / "attributes.txt",
    }[attributes_at]
    where.write_text(attr_text)

    present = np.zeros((n, len(CUB_ATTRS)), dtype=bool)
    for j in range(len(CUB_ATTRS)):
        present[rng.permutation(n)[: 3 * j], j] = True
    lines = []
    for i in range(n):
        for j in range(len(CUB_ATTRS)):
            line = f"{i + 1} {j + 1} {int(present[i, j])} {1 + (i + j) % 4} {(i * j) % 13}.5"
            if (i * len(CUB_ATTRS) + j) % 37 == 5:  # the official file has a few such lines
                line += " 0 1"
            lines.append(line + "\n")
    (root / "attributes" / "image_attribute_labels.txt").write_text("".join(lines))
    return {"paths": paths, "species": species, "present": present}


# ---------------------------------------------------------------------------------------------
# aPY

APY_NAMES = ["2D Boxy", "3D Boxy", "Occluded", "Tail", "Jet engine"] + [
    f"Attr {k}" for k in range(5, 64)
]


def apy_line(image: str, category: str, box: tuple[int, int, int, int], on: list[int]) -> str:
    values = ["1" if k in on else "0" for k in range(len(APY_NAMES))]
    return " ".join([image, category, *map(str, box), *values]) + "\n"


def make_apy(base: Path) -> dict:
    """attribute_data/ and JPEGImages/ miniatures: several objects per image, a box out of bounds."""
    src, imgs = base / "attribute_data", base / "JPEGImages"
    src.mkdir(parents=True)
    imgs.mkdir(parents=True)
    (src / "attribute_names.txt").write_text("".join(f"{n}\n" for n in APY_NAMES))
    sizes = {
        "2008_000001.jpg": (40, 30),
        "2008_000002.jpg": (36, 36),
        "2008_000003.jpg": (32, 24),
        "2008_000004.jpg": (30, 40),
    }
    for name, (w, h) in sizes.items():
        im = Image.new("RGB", (w, h), (200, 30, 30))
        im.paste((30, 30, 200), (w // 2, 0, w, h))  # right half blue
        im.save(imgs / name, quality=95)
    train = [
        ("2008_000001.jpg", "aeroplane", (2, 3, 12, 20), [0, 4]),  # left (red) part
        ("2008_000001.jpg", "person", (22, 1, 38, 29), [2]),  # right (blue) part
        ("2008_000001.jpg", "person", (10, 5, 30, 25), []),
        ("2008_000002.jpg", "dog", (-5, 4, 50, 30), [3]),  # out of bounds: clamped to 0..36
        ("2008_000003.jpg", "cat", (40, 2, 50, 10), [1]),  # entirely outside: empty, skipped
    ]
    test = [
        ("2008_000004.jpg", "bottle", (1, 1, 11, 21), [0, 1]),
        ("2008_000004.jpg", "dog", (5, 20, 25, 39), [3, 2]),
        ("2008_000001.jpg", "aeroplane", (0, 0, 40, 30), [4]),
    ]
    (src / "apascal_train.txt").write_text("".join(apy_line(*o) for o in train))
    (src / "apascal_test.txt").write_text("".join(apy_line(*o) for o in test))
    (src / "ayahoo_test.txt").write_text("")  # unused by the protocol
    return {"source": src, "images": imgs, "train": train, "test": test, "sizes": sizes}


# ---------------------------------------------------------------------------------------------
# WikiArt

WIKI_STYLES = ["Impressionism", "Cubism", "Ukiyo_e"]
WIKI_GENRES = ["landscape", "portrait", "Unknown Genre"]
WIKI_ARTISTS = ["Unknown Artist", "claude-monet", "pablo-picasso", "hokusai"]


def hf_metadata(features: dict | None = None) -> dict[bytes, bytes]:
    """The 'huggingface' schema metadata the hub's parquet shards carry."""
    features = features or {
        "image": {"_type": "Image"},
        "artist": {"names": WIKI_ARTISTS, "_type": "ClassLabel"},
        "genre": {"names": WIKI_GENRES, "_type": "ClassLabel"},
        "style": {"names": WIKI_STYLES, "_type": "ClassLabel"},
    }
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def wiki_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows like huggan/wikiart's: image {bytes, path}, integer artist/genre/style."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        artist = int(rng.integers(0, len(WIKI_ARTISTS)))
        path = f"{WIKI_ARTISTS[artist]}_painting-{i}.jpg" if i % 5 else None  # some without path
        im = picture(20 + i % 20, 22 + (i * 3) % 19, 100 + i)
        rows.append(
            {
                "image": {"bytes": jpeg_bytes(im), "path": path},
                "artist": artist,
                "genre": int(rng.integers(0, len(WIKI_GENRES))),
                "style": int(rng.integers(0, len(WIKI_STYLES))),
            }
        )
    return rows


def write_shard(path: Path, rows: list[dict], metadata: dict | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [("image", image_t), ("artist", pa.int64()), ("genre", pa.int64()), ("style", pa.int64())],
        metadata=metadata,
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=4)


def make_wikiart_parquet(source: Path, sizes=(12, 9), metadata: dict | None = None) -> list[dict]:
    """Shards named like the hub's (data/train-0000k-of-0000n.parquet); rows in source order."""
    rows = wiki_rows(sum(sizes))
    meta = hf_metadata() if metadata is None else metadata
    start = 0
    for k, size in enumerate(sizes):
        shard = source / "data" / f"train-{k:05d}-of-{len(sizes):05d}.parquet"
        write_shard(shard, rows[start : start + size], meta)
        start += size
    return rows


def make_wikiart_folders(source: Path) -> list[str]:
    """DIR/<Style>/<artist>_<title>.jpg; returns the `<Style>/<file>` keys in sorted order."""
    keys = []
    for s, style in enumerate(WIKI_STYLES):
        for k in range(4):
            artist = WIKI_ARTISTS[1 + (s + k) % 3]
            key = f"{style}/{artist}_work-{s}-{k}.jpg"
            (source / key).parent.mkdir(parents=True, exist_ok=True)
            picture(24 + k, 30 - k, 10 * s + k).save(source / key)
            keys.append(key)
    return sorted(keys)
