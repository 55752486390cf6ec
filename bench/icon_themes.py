"""A real collection nobody here made: designer icon themes rasterised into a folder dataset.

    apt-get install papirus-icon-theme breeze-icon-theme oxygen-icon-theme elementary-xfce-icon-theme \
        tango-icon-theme numix-icon-theme moka-icon-theme faenza-icon-theme librsvg2-bin
    python bench/icon_themes.py --out DIR        # → DIR/labels.csv + DIR/<theme>/<context>/<name>.png

Labels: `theme` (the icon theme) and `context` (the icon's folder: apps, places, devices, …); tags:
the words of the icon's name (`user-home` → user|home). Each theme contributes up to --per-theme
icons, preferring names that most themes draw (so "this icon, but in Papirus" has an answer), one
image per drawing (aliases that are symlinks to one file count once). SVGs are rasterised with
rsvg-convert, PNGs resized; both flattened on white at --size px. What README's "Your own images"
commands were timed on (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
from PIL import Image

THEMES = ("Papirus", "breeze", "oxygen", "elementary-xfce", "Tango", "Numix", "Moka", "Faenza")
CONTEXTS = {  # folder name → context label (the freedesktop icon-theme contexts)
    "actions": "actions",
    "apps": "apps",
    "applications": "apps",
    "categories": "categories",
    "devices": "devices",
    "emblems": "emblems",
    "emotes": "emotes",
    "emoticons": "emotes",
    "mimetypes": "mimetypes",
    "mimes": "mimetypes",
    "places": "places",
    "status": "status",
}
SIZE = re.compile(r"(\d+)(?:x\d+)?(@2x)?")
MIN_CONTEXT = 40  # contexts rarer than this over the whole set are left out (A1 needs test images)


def size_rank(parts: tuple[str, ...], suffix: str) -> tuple[int, int] | None:
    """How well a file's size folder suits a 64-px raster (lower is better); None: no size folder."""
    for part in parts:
        if part == "scalable" and suffix == ".svg":
            return (1, 0)
        m = SIZE.fullmatch(part)
        if m:
            px = int(m.group(1)) * (2 if m.group(2) else 1)
            if px in (48, 64):
                return (0, abs(px - 64))
            return (2 if px > 64 else 3, abs(px - 64))
    return None


def find_icons(theme_dir: Path) -> dict[tuple[str, str], Path]:
    """(context, icon name) → the best-sized file of that icon in one theme (no symbolic icons)."""
    best: dict[tuple[str, str], tuple[tuple[int, int], Path]] = {}
    for path in theme_dir.rglob("*"):
        if path.suffix not in (".svg", ".png") or "symbolic" in path.as_posix():
            continue
        parts = path.relative_to(theme_dir).parts[:-1]
        context = next((CONTEXTS[p] for p in parts if p in CONTEXTS), None)
        rank = size_rank(parts, path.suffix)
        if context is None or rank is None or not path.is_file():
            continue
        key = (context, path.stem)
        if key not in best or rank < best[key][0]:
            best[key] = (rank, path)
    return {k: p for k, (_, p) in best.items()}


def rasterise(src: Path, dst: Path, size: int) -> bool:
    """src (SVG or PNG) → dst, an RGB PNG of size×size flattened on white; False if unreadable."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix == ".svg":
        cmd = ["rsvg-convert", "-w", str(size), "-h", str(size), "-a", "-o", str(dst), str(src)]
        if subprocess.run(cmd, capture_output=True, timeout=60).returncode != 0:
            return False
        src = dst
    try:
        with Image.open(src) as im:
            on_white(im, size).save(dst)
    except OSError:
        return False
    return True


def on_white(im: Image.Image, size: int) -> Image.Image:
    """An image (any mode, transparency kept) shrunk to fit size×size, centred on white, RGB."""
    im = im.convert("RGBA")
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), "white")
    canvas.alpha_composite(im, ((size - im.width) // 2, (size - im.height) // 2))
    return canvas.convert("RGB")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="the folder to write (replaced)")
    p.add_argument("--icons", type=Path, default=Path("/usr/share/icons"))
    p.add_argument("--themes", default=",".join(THEMES), help="comma-separated theme folders")
    p.add_argument("--per-theme", type=int, default=525)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if shutil.which("rsvg-convert") is None:
        print("error: rsvg-convert not found: apt-get install librsvg2-bin", file=sys.stderr)
        return 2
    themes = [t.strip() for t in args.themes.split(",") if t.strip()]
    missing = [t for t in themes if not (args.icons / t).is_dir()]
    if missing:
        print(f"error: no theme {missing[0]} under {args.icons}: install it", file=sys.stderr)
        return 2
    found = {t: find_icons(args.icons / t) for t in themes}
    drawn_by = defaultdict(int)  # icon name → how many themes draw it
    for icons in found.values():
        for name in {n for _, n in icons}:
            drawn_by[name] += 1
    rng = random.Random(args.seed)
    chosen = []
    for theme, icons in found.items():
        keys = sorted(icons)
        rng.shuffle(keys)
        keys.sort(key=lambda k: -drawn_by[k[1]])  # shared names first, random among equals
        seen_files: set[Path] = set()
        for context, name in keys:
            real = icons[(context, name)].resolve()
            if real in seen_files:
                continue  # an alias (symlink) of an icon already taken
            seen_files.add(real)
            chosen.append((theme, context, name, icons[(context, name)]))
            if len(seen_files) == args.per_theme:
                break
    counts = pd.Series([c for _, c, _, _ in chosen]).value_counts()
    chosen = [row for row in chosen if counts[row[1]] >= MIN_CONTEXT]
    if args.out.exists():
        shutil.rmtree(args.out)
    rows = []
    for theme, context, name, src in chosen:
        rel = f"{theme}/{context}/{name}.png"
        if rasterise(src, args.out / rel, args.size):
            words = [w for w in re.split(r"[-_.+]+", name.lower()) if w]
            rows.append({"image": rel, "theme": theme, "context": context, "tags": "|".join(words)})
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "labels.csv", index=False)
    print(f"{len(table)} icons → {args.out / 'labels.csv'}")
    print(table.groupby(["theme"]).size().to_string())
    print(table.groupby(["context"]).size().to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
