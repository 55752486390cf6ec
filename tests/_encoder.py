"""Test helpers of the encoder part: a tiny processed dataset written in the A1 format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from src.artifacts import write_csv, write_json

STYLES = ["red", "green", "blue"]
GENRES = ["square", "stripes"]


def make_tiny_dataset(
    data_root: Path, dataset: str = "synthart", n_train: int = 24, n_test: int = 12, size: int = 32
) -> Path:
    """data_root/<dataset>/ with labels.json, train.csv, test.csv and PNGs (colour = style, shape = genre)."""
    rng = np.random.default_rng(0)
    root = Path(data_root) / dataset
    (root / "images").mkdir(parents=True, exist_ok=True)
    tables = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            s, g = i % len(STYLES), (i // len(STYLES)) % len(GENRES)
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            img[..., s] += 150
            if g == 0:
                img[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
            else:
                img[:, ::8] = 255
            rel = f"images/{split}_{i:03d}.png"
            Image.fromarray(img).save(root / rel)
            rows.append(
                {
                    "image": rel,
                    "style": STYLES[s],
                    "genre": GENRES[g],
                    "tags": f"t{i % 5}|{GENRES[g]}",
                }
            )
        tables[split] = pd.DataFrame(rows)
        write_csv(root / f"{split}.csv", tables[split])
    write_json(root / "labels.json", {"style": STYLES, "genre": GENRES})
    return root
