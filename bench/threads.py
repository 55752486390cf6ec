"""Threads on a shared CPU: D1 and B1 with 1 and 2 threads, quiet and beside a competing load,
with idle OpenMP threads sleeping (the suite's default) or spinning (libgomp's own default).

    python bench/threads.py [--data-root data --weights-root weights] [--repeats 3]
    python bench/threads.py --stages D1 --threads 1,2 --policies PASSIVE --loads none,1,2

Needs the demo's data and run (`make demo`); B1 writes a run named bench_threads beside it. Each
stage runs as a child process (D1: --epochs 3 on synthart-multi; B1: --epochs 1) with --threads 1,
2, or none ("default": D1 then computes on two threads and runs Backward Search's loops on one). A
load of n starts n busy processes for the duration ("1": another developer's job beside ours;
"none": no added load — on a shared machine not an idle one, hence the load average). The wait
policy is set through OMP_WAIT_POLICY ("default": libgomp's spin-then-sleep, i.e. the suite before
it set PASSIVE). Prints a markdown table: median wall time per condition and the load
average before each run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIN = "while True: pass"


def command(stage: str, args, threads: str) -> list[str]:
    """The stage's command line; threads "default" passes no --threads (the suite's default)."""
    roots = ["--data-root", str(args.data_root), "--weights-root", str(args.weights_root)]
    roots += ["--results-root", str(args.results_root)]
    roots += [] if threads == "default" else ["--threads", threads]
    if stage == "D1":
        return [sys.executable, "D1_train_distill.py", "--task", "synthart-multi", "--epochs", "3",
                "--run", args.run] + roots  # fmt: skip
    return [sys.executable, "B1_train_encoder.py", "--dataset", "synthart", "--epochs", "1",
            "--run", "bench_threads"] + roots  # fmt: skip


def timed(cmd: list[str], policy: str) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}  # "default" is no policy libgomp knows
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--weights-root", type=Path, default=Path("weights"))
    p.add_argument("--results-root", type=Path, default=Path("results"))
    p.add_argument("--run", default="synthart_convnext_atto_e64_ft", help="D1's encoder run")
    p.add_argument("--stages", default="D1,B1")
    p.add_argument("--threads", default="1,2,default", help="counts, or default (no --threads)")
    p.add_argument("--policies", default="PASSIVE,default")
    p.add_argument("--loads", default="none,1", help="none, or a number of busy processes")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cpus = len(os.sched_getaffinity(0))
    print(f"{cpus} usable CPUs; load before: {os.getloadavg()}", flush=True)
    print(
        "| stage | threads | idle threads | competing load | wall s (median) | runs | load before |"
    )
    print("|---|---|---|---|---|---|---|")
    for load in args.loads.split(","):
        spinners = []
        if load != "none":
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(int(load))]
            time.sleep(2)
        try:
            for stage in args.stages.split(","):
                for threads in args.threads.split(","):
                    for policy in args.policies.split(","):
                        before = "/".join(f"{x:.2f}" for x in os.getloadavg())
                        cmd = command(stage, args, threads)
                        runs = [timed(cmd, policy) for _ in range(args.repeats)]
                        idle = (
                            "sleep"
                            if policy == "PASSIVE"
                            else "spin"
                            if policy == "ACTIVE"
                            else "spin, then sleep"
                        )
                        print(
                            f"| {stage} | {threads} | {idle} | {load} | "
                            f"{statistics.median(runs):.1f} | {', '.join(f'{r:.1f}' for r in runs)} "
                            f"| {before} |",
                            flush=True,
                        )
        finally:
            for s in spinners:
                s.kill()
                s.wait()


if __name__ == "__main__":
    main()
