"""Idle OpenMP threads, quiet and on a busy CPU: B1, D1 and E1 under three fixed wait policies and
the suite's default, which chooses one from the CPU share it gets at start (src/wait_policy.py).

    python bench/threads.py                          # the whole table (after `make demo`)
    python bench/threads.py --stages D1 --loads 2 --repeats 1

Each stage runs as a child process, timed whole (start-up included), on the demo's run:
B1 `--epochs 2` on SynthArt (the demo trains 12, the first half epoch of them warming up),
D1 `--epochs 4` on synthart-multi (the demo distils 49), E1 on synthart-multi (the demo's E1 adds
`--sweep`). They write into a scratch copy of the run (a temporary --weights-root and
--results-root), so the demo's artifacts stay as they are. Settings: `passive`
(OMP_WAIT_POLICY=PASSIVE: sleep at once, the suite's policy before the default chose),
`spin20000` (GOMP_SPINCOUNT=20000: spin ~0.5 ms, then sleep), `active` (OMP_WAIT_POLICY=ACTIVE:
spin for good), `default` (neither set: the suite's choice, shown per run as s = spun, p = slept).
Loads: `none` (nothing added: on a shared machine not an idle one, hence the load average) or a
number of busy processes (`while True: pass`) started for the condition. Prints a markdown table:
the median wall time of --repeats runs per cell, the default's against the best fixed setting.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIN = "while True: pass"
SETTINGS = {
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin20000": {"GOMP_SPINCOUNT": "20000"},
    "active": {"OMP_WAIT_POLICY": "ACTIVE"},
    "default": {},
}
TASK = "synthart-multi"
RUN_FILES = ("encoder.pt", "config.json", "embeddings.npz", "metrics.json", f"student_{TASK}_*")


def commands(args, weights: Path, results: Path) -> dict[str, list[str]]:
    """Each stage's command line on the scratch roots."""
    roots = ["--data-root", str(args.data_root), "--weights-root", str(weights)]
    roots += ["--results-root", str(results)]
    py = sys.executable
    return {
        "B1": [py, "B1_train_encoder.py", "--dataset", "synthart", "--epochs", "2",
               "--run", "bench_threads", *roots],
        "D1": [py, "D1_train_distill.py", "--task", TASK, "--epochs", "4", "--run", args.run,
               *roots],
        "E1": [py, "E1_evaluate.py", "--task", TASK, "--run", args.run, *roots],
    }  # fmt: skip


def timed(cmd: list[str], setting: str) -> tuple[float, str]:
    """Wall seconds of one run, and what idle threads did in it (s: spun, p: slept)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    t0 = time.perf_counter()
    out = subprocess.run(
        cmd, cwd=ROOT, env={**env, **SETTINGS[setting]}, check=True, capture_output=True, text=True
    ).stdout
    wall = time.perf_counter() - t0
    chose = re.search(r"idle threads (spin|sleep|as set)", out)
    return wall, {"spin": "s", "sleep": "p"}.get(chose.group(1), "") if chose else "?"


def cell(median: float, runs: list[tuple[float, str]], choices: bool) -> str:
    """The median, then each run (with the default's choice: s spun, p slept)."""
    each = ", ".join(f"{w:.1f}{c if choices else ''}" for w, c in runs)
    return f"{median:.1f} ({each})"


def loadavg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, default=ROOT / "data")
    p.add_argument("--weights-root", type=Path, default=ROOT / "weights")
    p.add_argument("--run", default="synthart_convnext_atto_e64_ft", help="the demo's run")
    p.add_argument("--stages", default="B1,D1,E1")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--loads", default="none,2", help="none, or a number of busy processes")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    settings = args.settings.split(",")
    source = args.weights_root / args.run
    if not (source / "encoder.pt").is_file():
        sys.exit(f"error: {source}/encoder.pt not found: run `make demo` first (or give --run)")
    with tempfile.TemporaryDirectory(prefix="bench_threads_") as tmp:
        weights, results = Path(tmp, "weights"), Path(tmp, "results")
        (weights / args.run).mkdir(parents=True)
        for pattern in RUN_FILES:  # what D1 and E1 read
            for f in source.glob(pattern):
                shutil.copy2(f, weights / args.run / f.name)
        cmds = commands(args, weights, results)
        print(f"{len(os.sched_getaffinity(0))} usable CPUs; load average {loadavg()}", flush=True)
        head = " | ".join(settings)
        print(f"| stage | added load | {head} | default / best fixed | load before |")
        print("|---|---|" + "---|" * len(settings) + "---|---|")
        for load in args.loads.split(","):
            spinners = []
            if load != "none":
                spinners = [
                    subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(int(load))
                ]
                time.sleep(2)
            try:
                for stage in args.stages.split(","):
                    before = loadavg()
                    runs: dict[str, list[tuple[float, str]]] = {s: [] for s in settings}
                    for _ in range(args.repeats):  # settings interleaved: drift hits them alike
                        for s in settings:
                            runs[s].append(timed(cmds[stage], s))
                    med = {s: statistics.median(w for w, _ in r) for s, r in runs.items()}
                    cells = [cell(med[s], runs[s], s == "default") for s in settings]
                    fixed = [med[s] for s in settings if s != "default"]
                    ratio = (
                        f"{med['default'] / min(fixed):.2f}×" if "default" in med and fixed else ""
                    )
                    label = "none" if load == "none" else f"{load} busy processes"
                    print(
                        f"| {stage} | {label} | {' | '.join(cells)} | {ratio} | {before} |",
                        flush=True,
                    )
            finally:
                for sp in spinners:
                    sp.kill()
                    sp.wait()
        print(f"load average after: {loadavg()}")


if __name__ == "__main__":
    main()
