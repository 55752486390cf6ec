"""The glyph collection: letters and digits rendered from the fonts matplotlib ships (DejaVu, STIX,
Computer Modern), written as a folder dataset (labels.csv), the own-images path's second demo.

Labels: `family` (sans, mono, serif, stix, cm) and `style` (regular, bold, italic, bolditalic);
tags: the character (case-insensitive) and its kind (upper, lower, digit), so "this letter, but
bold" keeps its context. Written by scripts/glyphs.py; used by the tests and bench/small_recipe.py.
"""

from __future__ import annotations

import string
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from src.atomic import atomic_dir
from src.errors import SuiteError

FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
# (family, style) → font file; Computer Modern has no bold italic
FACES = {
    ("sans", "regular"): "DejaVuSans.ttf",
    ("sans", "bold"): "DejaVuSans-Bold.ttf",
    ("sans", "italic"): "DejaVuSans-Oblique.ttf",
    ("sans", "bolditalic"): "DejaVuSans-BoldOblique.ttf",
    ("mono", "regular"): "DejaVuSansMono.ttf",
    ("mono", "bold"): "DejaVuSansMono-Bold.ttf",
    ("mono", "italic"): "DejaVuSansMono-Oblique.ttf",
    ("mono", "bolditalic"): "DejaVuSansMono-BoldOblique.ttf",
    ("serif", "regular"): "DejaVuSerif.ttf",
    ("serif", "bold"): "DejaVuSerif-Bold.ttf",
    ("serif", "italic"): "DejaVuSerif-Italic.ttf",
    ("serif", "bolditalic"): "DejaVuSerif-BoldItalic.ttf",
    ("stix", "regular"): "STIXGeneral.ttf",
    ("stix", "bold"): "STIXGeneralBol.ttf",
    ("stix", "italic"): "STIXGeneralItalic.ttf",
    ("stix", "bolditalic"): "STIXGeneralBolIta.ttf",
    ("cm", "regular"): "cmr10.ttf",
    ("cm", "bold"): "cmb10.ttf",
    ("cm", "italic"): "cmti10.ttf",
}
CHARACTERS = string.ascii_uppercase + string.ascii_lowercase + string.digits


def kind(c: str) -> str:
    """A character's kind tag: digit, upper or lower."""
    return "digit" if c.isdigit() else "upper" if c.isupper() else "lower"


def render(face: str, c: str, size: int, rng: np.random.Generator) -> Image.Image:
    """One glyph, black on white, centred with a jitter of a few pixels in place and size."""
    font = ImageFont.truetype(str(FONTS / face), int(size * rng.uniform(0.6, 0.75)))
    im = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(im)
    left, top, right, bottom = draw.textbbox((0, 0), c, font=font)
    dx, dy = rng.integers(-size // 12, size // 12 + 1, 2)
    xy = ((size - (right - left)) / 2 - left + dx, (size - (bottom - top)) / 2 - top + dy)
    draw.text(xy, c, fill="black", font=font)
    return im


def write_glyphs(
    root: Path, characters: str = CHARACTERS, renders: int = 1, size: int = 32, seed: int = 0
) -> Path:
    """root/<family>/<style>/<i>_<k>.png: `renders` renders of each character in every face,
    and root/labels.csv (image, family, style, tags). `root` must be new or empty (a folder that
    holds anything is never overwritten); the collection is built aside and moved in whole."""
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        what = "already exists and is not empty" if root.is_dir() else "is a file, not a folder"
        raise SuiteError(f"{root} {what}: give a new folder for the glyphs")
    root.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    with atomic_dir(root) as tmp:
        for (family, style), face in FACES.items():
            for i, c in enumerate(characters):
                for k in range(renders):
                    # 'A' and 'a' would clash on a case-insensitive file system: name by position
                    rel = f"{family}/{style}/{i:02d}_{k}.png"
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    render(face, c, size, rng).save(tmp / rel)
                    tags = f"char_{c.lower()}|{kind(c)}"
                    rows.append({"image": rel, "family": family, "style": style, "tags": tags})
        pd.DataFrame(rows).to_csv(tmp / "labels.csv", index=False)
    return root
