"""Benchmark: how fast the explorer answers an interaction, alone or with clients side by side
(target ≤ 100 ms: on a 16k-image database for one client; median with 8 clients on the demo).

    python bench/explorer_latency.py [--data-root data --weights-root weights] [--task synthart-style]
                                     [--size 16384] [--queries 20] [--clients 1] [--device cpu]

Reads a finished run (after C1; `make demo` makes one) and grows its test split to --size images by
tiling the embeddings with noise (labels and tags tiled with them; --size 0: the test split as it
is), then serves the explorer on a free loopback port (uvicorn, as E3 does) and times, per query (a
database image), each interaction the page sends for Backward Search: a new λ, a new condition, and
a switch back to Backward Search from another method — from the POST to the parsed JSON answer (the
top-10, the metrics, the walk on the map), in wall time and in the CPU time of the process (server
and clients). --clients N: N clients at once, each on its own connection with --queries queries of
its own. Writes nothing (the map is fitted in memory). Prints a markdown table and the load average.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import platform
import statistics
import sys
import threading
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
from src.threads import use_threads  # noqa: E402

LAMBDAS = (1 / 16, 0.25, 1.0, 4.0, 16.0)


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


def post(conn: http.client.HTTPConnection, body: dict, answers: list | None = None):
    """(wall seconds, CPU seconds of this process) from sending one interaction to its parsed
    answer (kept with its body in `answers` when given). The server runs in this process, so the
    CPU time is its work and the client's: what the wall time comes down to on a quiet machine."""
    t0, c0 = time.perf_counter(), time.process_time()
    conn.request("POST", "/api/search", json.dumps(body), {"Content-Type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if "error" in answer:
        raise RuntimeError(answer["error"])
    if answers is not None:
        answers.append((body, answer))
    return seconds, cpu


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
    times: dict[str, list[tuple[float, float]]] = {
        "new λ": [],
        "new condition": [],
        "method → Backward Search": [],
    }
    iterations, asked = [], []

    def client(port: int, rows: np.ndarray, seed: int) -> None:
        """One page's interactions on its own connection."""
        rng = np.random.default_rng(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for row in rows:
            cond = {a: int(rng.integers(n)) for a, n in n_cls.items()}
            body = {"row": int(row), "conditions": cond, "method": "backward_search", "lam": 1.0}
            post(conn, body)  # the query is picked (not timed: a new query, not an interaction)
            for lam in LAMBDAS:
                times["new λ"].append(post(conn, {**body, "lam": lam}, asked))
            for a, n in n_cls.items():
                cond = {**cond, a: (cond[a] + 1) % n}
                times["new condition"].append(post(conn, {**body, "conditions": cond}, asked))
            body = {**body, "conditions": cond}
            post(conn, {**body, "method": "knn"})
            times["method → Backward Search"].append(post(conn, body, asked))
            iterations.append(explorer.answer(explorer.ask(body)).iterations)
        conn.close()

    load_before = os.getloadavg()
    use_threads(THREADS)  # as E3 serves it
    with serving(create_app(explorer)) as url:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        wall0, cpu0 = time.perf_counter(), time.process_time()
        clients = [
            threading.Thread(target=client, args=(port, part, i))
            for i, part in enumerate(np.array_split(rows, args.clients))
        ]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    load_after = os.getloadavg()
    # the same interactions asked one at a time, after the clients are done: the same answers?
    same = sum(
        json.loads(json.dumps(dataclasses.asdict(explorer.answer(explorer.ask(body))))) == answer
        for body, answer in asked
    )
    answers = len(rows) * (len(LAMBDAS) + len(n_cls) + 4)  # every answer client() asks for
    print(
        f"\n{task.name}, run {run}: database of {len(space)} images ("
        + (f"the test split's {len(base)} tiled with noise" if args.size else "the test split")
        + f"), E = {space.dim}, device {args.device}, "
        f"torch threads {torch.get_num_threads()}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; {args.clients} client(s) at once; map fitted in "
        f"{fit_s * 1000:.0f} ms; Backward Search iterations per answer "
        f"{statistics.mean(iterations):.1f} (mean)."
    )
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; the process used "
        f"{cpu / wall:.2f} CPUs over the run, {cpu / answers * 1000:.1f} ms of CPU per answer "
        "(server and clients; with several clients the CPU column counts the others' work too); "
        f"answers equal to the same interaction asked alone afterwards: {same} of {len(asked)}\n"
    )
    print("| interaction | n | median ms | p90 ms | p95 ms | max ms | median CPU ms |")
    print("|---|---|---|---|---|---|---|")
    every = [t for pairs in times.values() for t in pairs]
    for name, pairs in [*times.items(), ("all", every)]:
        ms, cpu = (np.array(x) * 1000 for x in zip(*pairs, strict=True))
        print(
            f"| {name} | {len(ms)} | {np.median(ms):.1f} | {np.percentile(ms, 90):.1f} "
            f"| {np.percentile(ms, 95):.1f} | {ms.max():.1f} | {np.median(cpu):.1f} |"
        )


if __name__ == "__main__":
    sys.exit(run_stage(main))
