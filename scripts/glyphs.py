"""Write the glyph collection as a folder dataset, to try README's "Your own images" commands on.

Letters and digits in 19 faces of matplotlib's fonts, for anyone without a collection at hand.

    python scripts/glyphs.py DIR [--renders 3] [--size 48] [--seed 0]

DIR (new, or empty) gets <family>/<style>/<i>_<k>.png and labels.csv: labels `family` (sans, mono,
serif, stix, cm) and `style` (regular, bold, italic, bolditalic), tags the character and its kind
(src/glyphs.py). Offline, seconds. Then, e.g.:

    python A1_preprocess.py --dataset folder --source DIR --name glyphs
    python B1_train_encoder.py --dataset glyphs --recipe small && python C1_extract_embeddings.py --dataset glyphs
    for s in A2_make_queries D1_train_distill E1_evaluate E2_visualize; do python $s.py --task glyphs:style; done
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.argtypes import int_at_least  # noqa: E402
from src.cli import run_stage, setup_logging  # noqa: E402
from src.glyphs import CHARACTERS, FACES, write_glyphs  # noqa: E402

log = logging.getLogger("src.glyphs")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, metavar="DIR", help="a new (or empty) folder to write")
    p.add_argument(
        "--renders",
        type=int_at_least(1),
        default=3,
        help="images per face and character, each jittered in place and size (default 3)",
    )
    p.add_argument(
        "--size", type=int_at_least(16, 1024), default=48, help="image side in px (default 48)"
    )
    p.add_argument("--seed", type=int_at_least(0), default=0, help="the jitter's seed (default 0)")
    args = p.parse_args(argv)
    setup_logging()
    write_glyphs(args.out, renders=args.renders, size=args.size, seed=args.seed)
    n = len(FACES) * len(CHARACTERS) * args.renders
    log.info("wrote %d glyphs (%d faces) and %s", n, len(FACES), args.out / "labels.csv")


if __name__ == "__main__":
    sys.exit(run_stage(main))
