"""README's "Your own images" CPU block, verbatim, on a small collection (issue 30).

The block is read from README.md and run with bash exactly as printed, only its placeholders
replaced (DIR, shop, colour, colour=red, my.jpg; bench/own_images.py). No flag beyond README's: B1
takes its epochs from the collection's size, A2 as many queries as the small test split allows.

The collection: glyphs of matplotlib's fonts, 14 characters in the sans, serif and Computer Modern
faces, `cm` cut to 9 images (too few to be a query's condition): 121 images. Smaller than the few
hundred a user would bring, for CI's sake only: B1's cost is its 100-epoch cap times the train
images, so ~100 train images keep it near a minute on two quiet cores; two families of 56 images
keep the ≥ 10 test images per class that A2 needs for any query at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench.own_images import readme_script
from src.glyphs import write_glyphs
from src.paper import QUERIES
from src.tasks import SMALL_TRAINING

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("A1_preprocess", "A2_make_queries", "B1_train_encoder", "C1_extract_embeddings",
          "D1_train_distill", "E1_evaluate", "E2_visualize")  # fmt: skip
NAME, ATTR = "glyphs", "family"
RUN = f"{NAME}_{SMALL_TRAINING.backbone}_e{SMALL_TRAINING.embedding_size}_ft"
TASK = f"{NAME}-{ATTR}"


def small_collection(root: Path) -> Path:
    """121 glyph images: sans and serif 56 each, `cm` 9 (fewer than A2's 10 targets)."""
    source = write_glyphs(root, characters="ABCDEabcde0123")
    labels = pd.read_csv(source / "labels.csv")
    keep = labels["family"].isin(["sans", "serif"])
    keep |= (labels["family"] == "cm") & (labels.groupby("family").cumcount() < 9)
    labels[keep].to_csv(source / "labels.csv", index=False)
    return source


def test_readme_own_images_block_runs_verbatim_on_a_small_collection(tmp_path):
    source = small_collection(tmp_path / "source")
    picture = source / pd.read_csv(source / "labels.csv")["image"].iloc[-1]
    work = tmp_path / "work"  # README's default roots data/, weights/, results/ land here
    work.mkdir()
    for stage in STAGES:  # `python A1_preprocess.py` as README types it, from this folder
        (work / f"{stage}.py").symlink_to(ROOT / f"{stage}.py")
    script = readme_script(source, NAME, ATTR, "family=sans", picture)
    assert "--recipe small" in script and "--num-queries" not in script and "--epochs" not in script
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True,
                          text=True, timeout=1500)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    data, weights, results = work / "data" / NAME, work / "weights" / RUN, work / "results" / RUN
    # every stage wrote its artifacts (B1 && C1 on one line: bash -e would not stop at B1)
    config = json.loads((weights / "config.json").read_text())
    train = len(pd.read_csv(data / "train.csv"))
    assert config["recipe"]["epochs"] == SMALL_TRAINING.epochs_for(train) == 100
    assert config["recipe"]["mix"] == "cutmix"  # a small collection: CutMix (Recipe.sized)
    assert config["resolved"]["size_rule"].startswith("100 epochs, mix cutmix")
    assert (weights / "metrics.json").exists()  # C1
    meta = json.loads((data / f"queries_{TASK}.json").read_text())
    queries = pd.read_csv(data / f"queries_{TASK}.csv")
    assert 0 < len(queries) == meta["num_queries"] < QUERIES and meta["note"]
    assert "cm" not in set(queries[ATTR])  # 2 test images of cm: never a condition
    assert list(weights.glob(f"student_{TASK}_lam*.pt"))  # D1
    metrics = json.loads((results / TASK / "metrics.json").read_text())
    assert metrics["n_queries"] == len(queries)  # E1
    report = (results / "REPORT.md").read_text()
    assert meta["note"] in report and "Small test split" in report
    assert list((results / TASK / "figures").glob("*_all.png"))  # E2 --image … --database all
