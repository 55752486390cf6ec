"""A1 reader for SynthArt: generate the embedded dataset into the processed format (no source)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from src.datasets.common import Processed, SourceOptions
from src.errors import SuiteError
from src.synthart import GENRES, STYLES, generate, sample_labels
from src.tags import join_tags

log = logging.getLogger(__name__)

TEST_FRACTION = 0.2


def prepare(out_dir: Path, opts: SourceOptions) -> Processed:
    """Draw labels, paint `opts.num_images` PNGs of `opts.image_size` px and split them 80/20."""
    n, size, seed = opts.num_images, opts.image_size, opts.seed
    if n < 10:
        raise SuiteError(f"--num-images {n} is too small for SynthArt; use at least 10")
    if size < 16:
        raise SuiteError(f"--image-size {size} is too small for SynthArt; use at least 16")
    styles, genres = sample_labels(seed, n)
    is_test = np.zeros(n, dtype=bool)
    is_test[np.random.default_rng([seed, 0x5B17]).permutation(n)[: round(n * TEST_FRACTION)]] = True
    rows = []
    for split in ("train", "test"):
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sample = generate(seed, i, STYLES[styles[i]], GENRES[genres[i]], size)
        rel = f"images/{'test' if is_test[i] else 'train'}/{i:05d}.png"
        Image.fromarray(sample.image).save(out_dir / rel, format="PNG")
        rows.append((rel, sample.style, sample.genre, join_tags(sample.tags), is_test[i]))
    df = pd.DataFrame(rows, columns=["image", "style", "genre", "tags", "test"])
    train = df[~df.test].drop(columns="test").reset_index(drop=True)
    test = df[df.test].drop(columns="test").reset_index(drop=True)
    notes = {
        "synthart": {
            "num_images": n,
            "image_size": size,
            "style_counts": df["style"].value_counts().to_dict(),
            "genre_counts": df["genre"].value_counts().to_dict(),
        }
    }
    return Processed({"style": list(STYLES), "genre": list(GENRES)}, train, test, notes)
