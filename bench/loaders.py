"""Do loader worker processes pay on a CPU? C1's extraction with 0, 1, 2 workers, and per image the
decoding against the model's forward pass.

    python bench/loaders.py [--data-root data] [--run synthart_convnext_atto_e64_ft] [--workers 0,1,2]
    python bench/loaders.py --jpeg 1024x768 --image-size 224 --backbones convnext_atto,convnext_base

First part (needs a finished run, e.g. after `make demo`): `extract_embeddings` of the run on its
dataset, wall time per worker count (images stream from disk: C1 does not cache). Second part: a
JPEG of --jpeg pixels (WikiArt's are about a megapixel) decoded and test-transformed in the main
process, against one forward pass per image of each backbone at --image-size, batch 32: the share
of a C1 step a worker could take off the main process at most. Prints markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src  # noqa: E402, F401  (first: idle OpenMP threads spin or sleep as in the stages)

# isort: split
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from src.embeddings import extract_embeddings  # noqa: E402
from src.method.encoder import build_encoder, encoder_config, load_encoder  # noqa: E402
from src.transforms import image_transform  # noqa: E402


def c1_rows(args) -> list[str]:
    run = ROOT / args.weights_root / args.run
    model, config = load_encoder(run)
    rows = []
    for w in args.workers:
        t0 = time.perf_counter()
        arrays, _ = extract_embeddings(model, config, args.data_root, torch.device("cpu"), 256, w)
        sec = time.perf_counter() - t0
        n = len(arrays["z"])
        rows.append(
            f"| C1 {args.run} | {w} | {sec:.1f} s | {n / sec:.0f} img/s | {os.getloadavg()[0]:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def jpeg_rows(args) -> list[str]:
    w, h = (int(x) for x in args.jpeg.split("x"))
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    labels = {"style": [str(i) for i in range(27)]}
    rows = []
    for name in args.backbones:
        config = encoder_config("x", name, 256, False, labels, args.image_size, False)
        tf = image_transform(config, train=False)
        t0, n = time.perf_counter(), 20
        for _ in range(n):
            with Image.open(io.BytesIO(buf.getvalue())) as im:
                x = tf(im.convert("RGB"))
        decode = (time.perf_counter() - t0) / n
        model = build_encoder(config).eval()
        batch = x.unsqueeze(0).repeat(32, 1, 1, 1)
        with torch.no_grad():
            model(batch)
            t0 = time.perf_counter()
            model(batch)
            forward = (time.perf_counter() - t0) / 32
        rows.append(
            f"| {name} {args.image_size} px, {args.jpeg} JPEG | {1e3 * decode:.1f} ms | "
            f"{1e3 * forward:.1f} ms | {decode / (decode + forward):.0%} | {os.getloadavg()[0]:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--weights-root", type=Path, default=Path("weights"))
    p.add_argument("--run", default="synthart_convnext_atto_e64_ft")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--jpeg", default="1024x768", help="W×H of the decoded JPEG")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--backbones", default="convnext_atto,convnext_base")
    p.add_argument("--skip-c1", action="store_true")
    args = p.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    args.backbones = args.backbones.split(",")
    print(f"torch threads {torch.get_num_threads()}, CPUs {len(os.sched_getaffinity(0))}")
    if not args.skip_c1:
        print("| extraction | workers | wall | rate | load (1 min) |\n|---|---|---|---|---|")
        c1_rows(args)
    print("| image | decode + transform | forward per image | decode share | load |")
    print("|---|---|---|---|---|")
    jpeg_rows(args)


if __name__ == "__main__":
    main()
