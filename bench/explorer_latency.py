"""Benchmark: how fast the explorer answers an interaction, alone or with clients side by side
(target ≤ 100 ms: on a 16k-image database for one client; median with 8 clients on the demo).

    python bench/explorer_latency.py [--data-root data --weights-root weights] [--task synthart-style]
                                     [--size 16384] [--queries 20] [--clients 1] [--device cpu]

Reads a finished run (after C1; `make demo` makes one) and grows its test split to --size images by
tiling the embeddings with noise (labels and tags tiled with them; --size 0: the test split as it
is), then serves the explorer on a free loopback port (uvicorn, as E3 does) and times, per query (a
database image), each interaction the page sends for Backward Search: a new λ, a new condition, and
a switch back to Backward Search from another method — from the POST to the parsed JSON answer (the
top-10, the metrics, the walk on the map), in wall time. --clients N: N pages at once, each a
process of its own (bench/explorer_page.py: as browsers, they share no lock of the server's, only
its CPUs) on its own connection with --queries queries of its own. Reports the CPU time the server
and the pages spent per answer. Writes nothing (the map is fitted in memory). Prints a markdown table and the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import src  # noqa: E402, F401  (first: idle OpenMP threads spin or sleep as in the stages)

# isort: split
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from src.cli import resolve_device, run_stage, setup_logging  # noqa: E402
from src.evaluation.space import SearchSpace, load_space  # noqa: E402
from src.explorer.app import create_app  # noqa: E402
from src.explorer.projection import fit_projection  # noqa: E402
from src.explorer.server import THREADS, serving  # noqa: E402
from src.explorer.session import Explorer  # noqa: E402
from src.method.index import in_memory_search  # noqa: E402
from src.runs import resolve_run  # noqa: E402
from src.tags import tag_matrix  # noqa: E402
from src.tasks import get_task  # noqa: E402
from src.threads import usable_cpus, use_threads  # noqa: E402

LAMBDAS = (1 / 16, 0.25, 1.0, 4.0, 16.0)
PAGE = Path(__file__).with_name("explorer_page.py")  # one page, a process of its own


def grown(space: SearchSpace, size: int, seed: int = 0) -> SearchSpace:
    """The space's database tiled to `size` rows; each copy's embeddings get Gaussian noise of a
    tenth of the per-dimension spread, so that no two rows are the same."""
    rng = np.random.default_rng(seed)
    n = len(space)
    idx = np.arange(size) % n
    z = space.vectors(np.arange(n)).cpu().numpy()
    noisy = z[idx] + (idx != np.arange(size))[:, None] * rng.normal(
        0, 0.1 * z.std(0), (size, z.shape[1])
    )
    noisy = noisy.astype(np.float32)
    searcher = in_memory_search(noisy)  # the queries' z0 are read from its rows too
    keys = np.array([k if i < n else f"{k}~{i // n}" for i, k in enumerate(space.images[idx])])
    cells = space.tag_cells[idx]
    tags, _ = tag_matrix(cells, space.vocab)
    labels = {a: ids[torch.as_tensor(idx)] for a, ids in space.label_ids.items()}
    return dataclasses.replace(
        space,
        images=keys,
        split=space.split[idx],
        db=searcher.db,
        searcher=searcher,
        label_ids=labels,
        tag_cells=cells,
        tags=tags,
        embedded=pd.Index(keys),  # the queries' z0 are read from here
        store=searcher.db.store,
        embedded_labels={a: ids.cpu().numpy() for a, ids in labels.items()},
        counters={},  # counted over the grown labels, not the base's
    )


def plan(rows: np.ndarray, n_cls: dict[str, int], seed: int) -> list[dict]:
    """One page's interactions, per query (a database image): the query picked (not timed: a new
    query, not an interaction), five new λ, a new condition per attribute, and a switch to kNN and
    back to Backward Search (the switch back timed)."""
    rng = np.random.default_rng(seed)
    steps = []
    for row in rows:
        cond = {a: int(rng.integers(n)) for a, n in n_cls.items()}
        body = {"row": int(row), "conditions": cond, "method": "backward_search", "lam": 1.0}
        steps.append({"body": body, "kind": None})
        steps += [{"body": {**body, "lam": lam}, "kind": "new λ"} for lam in LAMBDAS]
        for a, n in n_cls.items():
            cond = {**cond, a: (cond[a] + 1) % n}
            steps.append({"body": {**body, "conditions": cond}, "kind": "new condition"})
        body = {**body, "conditions": cond}
        steps.append({"body": {**body, "method": "knn"}, "kind": None})
        steps.append({"body": body, "kind": "method → Backward Search"})
    return steps


def server_cpu(explorer: Explorer) -> float:
    """CPU seconds of the server so far: this process's and its search processes' (from /proc)."""
    ticks = 0
    for p in explorer.searchers.processes:
        fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return time.process_time() + ticks / os.sysconf("SC_CLK_TCK")


def run_pages(port: int, plans: list[list[dict]]) -> list[dict]:
    """Each plan asked by a page of its own (bench/explorer_page.py, a process), all at once."""
    pages = [
        subprocess.Popen(
            [sys.executable, str(PAGE), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in plans
    ]
    for page, steps in zip(pages, plans, strict=True):  # every page under way before any is read
        page.stdin.write(json.dumps(steps))
        page.stdin.close()
    done = [json.loads(page.stdout.read()) for page in pages]
    if any(page.wait() for page in pages):
        raise RuntimeError("a page failed (its error is printed above)")
    return done


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--weights-root", type=Path, default=Path("weights"))
    p.add_argument("--task", default="synthart-style")
    p.add_argument("--size", type=int, default=16384)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    setup_logging()
    task = get_task(args.task, args.data_root)
    run = resolve_run(args.weights_root, task.dataset, None)
    base = load_space(args.data_root, args.weights_root, task, run, resolve_device(args.device))
    space = grown(base, args.size) if args.size else base
    t0 = time.perf_counter()
    projection = fit_projection(space)
    fit_s = time.perf_counter() - t0
    explorer = Explorer(space, projection, task.default_lambda)
    rng = np.random.default_rng(1)
    rows = rng.choice(len(space), size=args.queries * args.clients, replace=False)
    n_cls = {a: len(space.labels[a]) for a in task.conditions}
    plans = [plan(part, n_cls, i) for i, part in enumerate(np.array_split(rows, args.clients))]
    load_before = os.getloadavg()
    use_threads(THREADS)  # as E3 serves it
    explorer.in_processes(usable_cpus())
    with serving(create_app(explorer)) as url:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        wall0, cpu0 = time.perf_counter(), server_cpu(explorer)
        pages = run_pages(port, plans)
        wall, cpu = time.perf_counter() - wall0, server_cpu(explorer) - cpu0
    explorer.close()
    load_after = os.getloadavg()
    asked = [(kind, s, answer) for page in pages for kind, s, answer in page["asked"]]
    bodies = [step["body"] for steps in plans for step in steps if step["kind"] is not None]
    # the same interactions asked one at a time, after the pages are done: the same answers?
    same = sum(
        json.loads(json.dumps(dataclasses.asdict(explorer.answer(explorer.ask(body))))) == answer
        for body, (_, _, answer) in zip(bodies, asked, strict=True)
    )
    answers = sum(len(steps) for steps in plans)  # every answer the pages asked for, timed or not
    page_cpu = sum(page["cpu_s"] for page in pages)
    iterations = [a["iterations"] for kind, _, a in asked if kind == "method → Backward Search"]
    print(
        f"\n{task.name}, run {run}: database of {len(space)} images ("
        + (f"the test split's {len(base)} tiled with noise" if args.size else "the test split")
        + f"), E = {space.dim}, device {args.device}, "
        f"torch threads {torch.get_num_threads()}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; {args.clients} page(s) at once, each its own process; map "
        f"fitted in {fit_s * 1000:.0f} ms; Backward Search iterations per answer "
        f"{statistics.mean(iterations):.1f} (mean)."
    )
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; over the "
        f"{wall:.1f} s of asking ({answers} answers) the server used {cpu / wall:.2f} CPUs, "
        f"{cpu / answers * 1000:.1f} ms of CPU per answer, and the pages (on the same cores) "
        f"{page_cpu / answers * 1000:.1f} ms per answer; answers equal to the same interaction "
        f"asked alone afterwards: {same} of {len(asked)}\n"
    )
    print("| interaction | n | median ms | p90 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|---|")
    kinds = [*dict.fromkeys(kind for kind, _, _ in asked), "all"]
    for kind in kinds:
        ms = np.array([s for k, s, _ in asked if kind in (k, "all")]) * 1000
        print(
            f"| {kind} | {len(ms)} | {np.median(ms):.1f} | {np.percentile(ms, 90):.1f} "
            f"| {np.percentile(ms, 95):.1f} | {ms.max():.1f} |"
        )


if __name__ == "__main__":
    sys.exit(run_stage(main))
