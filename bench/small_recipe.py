"""`B1 --recipe small` on a folder dataset: the heads' test accuracy beside chance, and B1's time.

    python bench/small_recipe.py --glyphs --root SCRATCH                 # matplotlib's fonts' glyphs
    python bench/small_recipe.py --source DIR --name icons --root SCRATCH [-- --flips none]

--glyphs writes the glyph collection (src/glyphs.py, as scripts/glyphs.py does: 19 faces ×
62 characters × --renders) as SCRATCH/source first (a new SCRATCH). Then A1 (--dataset folder) and B1 with
--recipe small (and any B1 flags after `--`) under SCRATCH/{data,weights}, on the CPU; prints one
markdown row: images, per-attribute test accuracy, chance (the majority test class), seconds, load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import A1_preprocess as a1  # noqa: E402
import B1_train_encoder as b1  # noqa: E402
from src.glyphs import write_glyphs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="scratch folder (written)")
    p.add_argument("--source", type=Path, help="a folder dataset (DIR/labels.csv)")
    p.add_argument("--name", default="glyphs")
    p.add_argument("--glyphs", action="store_true", help="write the glyph collection as --source")
    p.add_argument("--renders", type=int, default=3, help="glyph renders per face and character")
    args = p.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    source = args.source
    if args.glyphs:
        source = write_glyphs(args.root / "source", renders=args.renders, size=48)
    if source is None:
        p.error("give --source DIR or --glyphs")
    data, weights = args.root / "data", args.root / "weights"
    a1.main(["--dataset", "folder", "--source", str(source), "--name", args.name,
             "--data-root", str(data)])  # fmt: skip
    load = os.getloadavg()[0]
    t0 = time.time()
    b1.main(["--dataset", args.name, "--recipe", "small", "--device", "cpu", "--data-root",
             str(data), "--weights-root", str(weights), *extra])  # fmt: skip
    seconds = time.time() - t0
    (conf,) = [json.loads(c.read_text()) for c in weights.glob(f"{args.name}_*/config.json")]
    test = pd.read_csv(data / args.name / "test.csv", dtype=str)
    accuracy = conf["result"]["test_accuracy"]
    chance = {a: test[a].value_counts(normalize=True).iloc[0] for a in accuracy}
    train = len(pd.read_csv(data / args.name / "train.csv"))
    cells = ", ".join(f"{a} {v:.3f} (chance {chance[a]:.3f})" for a, v in accuracy.items())
    print(f"| {args.name} | {train:,} / {len(test):,} | {' '.join(extra) or '—'} | {cells} | "
          f"{seconds / 60:.1f} min | {load:.1f} → {os.getloadavg()[0]:.1f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
