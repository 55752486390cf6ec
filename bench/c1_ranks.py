"""C1 with one process and with two ranks under torchrun on this machine: images per second.

    python bench/c1_ranks.py --run synthart_convnext_atto_e64_ft        # after `make demo`

Runs `C1_extract_embeddings.py --run RUN` on the processed data of --data-root into a scratch
weights root holding a copy of the run's encoder.pt: as one process with as many threads as usable
CPUs, as one process with one thread, and under `torchrun --standalone --nproc_per_node=2` (one
thread per rank, torchrun's default), in turn, --repeats times each. Reports the wall time of the
whole command (process starts and model loading included), images per second over it, the
embedding time the ranks record (part.json), and how each set compares with the two-rank one:
the same bits, or the largest difference. Prints markdown rows.
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


CONFIGS = ((1, usable_cpus()), (1, 1), (2, 1))  # (processes, threads each)


def one_run(ranks: int, threads: int, weights: Path, c1_args: list[str]) -> tuple[float, float]:
    """(wall seconds, embedding seconds summed over partitions) of one C1 into `weights`."""
    shutil.rmtree(weights / c1_args[1] / "embeddings", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, C1, *c1_args]
    if ranks > 1:  # `--` keeps torchrun's own --run-path off C1's --run
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", C1, "--", *c1_args]  # fmt: skip
    t0 = time.time()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - t0
    parts = (weights / c1_args[1] / "embeddings").glob("part-*/part.json")
    return wall, sum(json.loads(p.read_text())["seconds"] for p in parts)


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> str:
    if all(a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes() for k in a):
        return "the same bits"
    rows = int((a["z"] != b["z"]).any(1).sum())
    return f"{rows} rows differ, largest Δz {np.abs(a['z'] - b['z']).max():.1e}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--data-root", default="data")
    p.add_argument("--weights-root", default="weights")
    p.add_argument("--partition-rows", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results: dict[tuple[int, int], list[tuple[float, float]]] = {c: [] for c in CONFIGS}
        sets = {}
        for ranks, threads in CONFIGS:
            w = Path(tmp) / f"w{ranks}x{threads}"
            (w / args.run).mkdir(parents=True)
            shutil.copy2(Path(args.weights_root) / args.run / "encoder.pt", w / args.run)

        def c1_args(w: Path) -> list[str]:
            return ["--run", args.run, "--data-root", args.data_root, "--weights-root", str(w),
                    "--partition-rows", str(args.partition_rows), "--device", "cpu"]  # fmt: skip

        load0 = load()
        for _ in range(args.repeats):
            for ranks, threads in CONFIGS:
                w = Path(tmp) / f"w{ranks}x{threads}"
                results[ranks, threads].append(one_run(ranks, threads, w, c1_args(w)))
                sets[ranks, threads] = load_embeddings(w / args.run)
        load1 = load()
    rows = len(sets[CONFIGS[-1]]["z"])
    print(f"Machine: {machine()}; load average {load0} before, {load1} after.\n")
    print(f"C1 --run {args.run}: {rows} images, partitions of {args.partition_rows}, "
          f"medians of {args.repeats}.\n")  # fmt: skip
    print("| processes | threads each | wall s (whole command) | images/s "
          "| embedding s (all ranks) | set against the two ranks' |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for ranks, threads in CONFIGS:
        wall = float(np.median([r[0] for r in results[ranks, threads]]))
        embed = float(np.median([r[1] for r in results[ranks, threads]]))
        same = compare(sets[ranks, threads], sets[CONFIGS[-1]])
        print(f"| {ranks} | {threads} | {wall:.1f} | {rows / wall:.0f} | {embed:.1f} | {same} |")


if __name__ == "__main__":
    main()
