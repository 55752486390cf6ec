"""D1 on a budget: the student's precision@10 and D1's time against its epochs (issue 19).

    python bench/distill_epochs.py --task synthart-style --data-root D --weights-root W \
        --results-root R [--run RUN] [--epochs 5,10,20,49]

For each epoch count: D1 (the same seed) on the task's run, then E1 with only the student;
prints a markdown table (epochs, D1 seconds, precision@10 with its 95 % interval, mTS@10, the
difference from the last count's precision@10). Needs A1, A2, B1 and C1 done under the roots;
each D1 replaces the task's student file (copy a finished run's folders into scratch roots first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import D1_train_distill as d1  # noqa: E402
import E1_evaluate as e1  # noqa: E402
from src.method.student import student_path  # noqa: E402
from src.runs import resolve_run  # noqa: E402
from src.tasks import get_task  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", required=True)
    p.add_argument("--run")
    p.add_argument("--epochs", default="5,10,20,49")
    for root in ("data", "weights", "results"):
        p.add_argument(f"--{root}-root", type=Path, required=True)
    args = p.parse_args(argv)
    roots = ["--data-root", str(args.data_root), "--weights-root", str(args.weights_root),
             "--results-root", str(args.results_root)]  # fmt: skip
    task = get_task(args.task, args.data_root)
    run = resolve_run(args.weights_root, task.dataset, args.run)
    rows = []
    for epochs in [int(e) for e in args.epochs.split(",")]:
        common = ["--task", args.task, "--run", run, "--device", "cpu", *roots]
        d1.main([*common, "--epochs", str(epochs)])
        e1.main([*common, "--methods", "student"])
        student = student_path(args.weights_root / run, task.name, task.default_lambda)
        seconds = json.loads(student.with_suffix(".json").read_text())["seconds"]
        metrics = json.loads((args.results_root / run / task.name / "metrics.json").read_text())
        m = metrics["methods"]["student"]
        lo, hi = m["ci"]["paper_map@10"]
        rows.append((epochs, seconds, m["paper_map@10"], lo, hi, m["mts@10"]))
    last = rows[-1][2]
    print(f"\n{task.name}, run {run}, λ {task.default_lambda:g}; {platform.processor() or platform.machine()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load {os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| D1 epochs | D1 seconds | student precision@10 [95 % CI] | mTS@10 | Δ precision@10 vs "
          f"{rows[-1][0]} epochs |")  # fmt: skip
    print("|---|---|---|---|---|")
    for epochs, seconds, prec, lo, hi, mts in rows:
        print(f"| {epochs} | {seconds:.1f} | {prec:.3f} [{lo:.3f}, {hi:.3f}] | {mts:.3f} | "
              f"{prec - last:+.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
