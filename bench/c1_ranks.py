"""C1 with one process and with two ranks under torchrun on this machine: images per second.

    python bench/c1_ranks.py --run synthart_convnext_atto_e64_ft        # after `make demo`

Runs `C1_extract_embeddings.py --run RUN` on the processed data of --data-root into a scratch
weights root holding a copy of the run's encoder.pt: as one process (as many threads as usable
CPUs) and under `torchrun --standalone --nproc_per_node=2` (one thread per rank, torchrun's
default), alternating, --repeats times each. Reports the wall time of the whole command (process
starts and model loading included), images per second over it, the embedding time the ranks
record (part.json), and whether the two sets are the same bits. Prints markdown rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src  # noqa: E402, F401  (first: idle OpenMP threads sleep, as in the stages)

# isort: split
import numpy as np  # noqa: E402

from bench.scale import load, machine  # noqa: E402
from src.embeddings import load_embeddings  # noqa: E402
from src.threads import usable_cpus  # noqa: E402

C1 = str(ROOT / "C1_extract_embeddings.py")


def one_run(ranks: int, weights: Path, c1_args: list[str]) -> tuple[float, float]:
    """(wall seconds, embedding seconds summed over partitions) of one C1 into `weights`."""
    shutil.rmtree(weights / c1_args[1] / "embeddings", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    if ranks == 1:
        cmd = [sys.executable, C1, *c1_args]
        env["OMP_NUM_THREADS"] = str(usable_cpus())
    else:  # torchrun sets OMP_NUM_THREADS=1 per rank; `--` keeps its --run-path off C1's --run
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", C1, "--", *c1_args]  # fmt: skip
        env.pop("OMP_NUM_THREADS", None)
    t0 = time.time()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    parts = (weights / c1_args[1] / "embeddings").glob("part-*/part.json")
    return wall, sum(json.loads(p.read_text())["seconds"] for p in parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--data-root", default="data")
    p.add_argument("--weights-root", default="weights")
    p.add_argument("--partition-rows", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        sets = {}
        for ranks in (1, 2):
            w = Path(tmp) / f"w{ranks}"
            (w / args.run).mkdir(parents=True)
            shutil.copy2(Path(args.weights_root) / args.run / "encoder.pt", w / args.run)

        def c1_args(w: Path) -> list[str]:
            return ["--run", args.run, "--data-root", args.data_root, "--weights-root", str(w),
                    "--partition-rows", str(args.partition_rows), "--device", "cpu"]  # fmt: skip

        load0 = load()
        for _ in range(args.repeats):
            for ranks in (1, 2):
                w = Path(tmp) / f"w{ranks}"
                results[ranks].append(one_run(ranks, w, c1_args(w)))
                sets[ranks] = load_embeddings(w / args.run)
        load1 = load()
        rows = len(sets[1]["z"])
        same = all(sets[1][k].tobytes() == sets[2][k].tobytes() for k in sets[1])
    print(f"Machine: {machine()}; load average {load0} before, {load1} after.\n")
    print(f"C1 --run {args.run}: {rows} images, partitions of {args.partition_rows}, "
          f"medians of {args.repeats}; the two sets are {'the same bits' if same else 'DIFFERENT'}.\n")  # fmt: skip
    print(
        "| processes | threads each | wall s (whole command) | images/s | embedding s (all ranks) |"
    )
    print("|---|---|---|---|---|")
    for ranks, threads in ((1, usable_cpus()), (2, 1)):
        wall = float(np.median([r[0] for r in results[ranks]]))
        embed = float(np.median([r[1] for r in results[ranks]]))
        print(f"| {ranks} | {threads} | {wall:.1f} | {rows / wall:.0f} | {embed:.1f} |")


if __name__ == "__main__":
    main()
