"""Benchmark: batched Backward Search against the same search one query at a time, and E1's retrieval.

    python bench/backward_search.py [--device auto] [--sizes 1,100,1000,10000] [--emb 128,256]
                                    [--ref-queries 100] [--out rows.json]
    python bench/backward_search.py --device cuda --sizes 10000 --emb 256   # make gpu-check's

Heads (SPEC shape) are trained to high accuracy on a clustered toy embedding space with 27 styles
and 11 genres (WikiArt's class counts); queries get random target classes. For each embedding
size E (--emb; default 128 and 256), one condition (style, λ 1.1) and two (style + genre, λ 3.2), and each N, it
prints ms/query and queries/s of `backward_search` on all N queries at once and of `backward_search`
called once per query on the CPU (the reference: the cost of not batching; timed on at most
--ref-queries queries, per-query cost extrapolated), the speed-up, mean ± sd iterations and
whether the two agree, and the same for the single-query rule (`rule=StopRule.SINGLE`, the
authors' `compute()` that Table 5's iterations come from), batched. Then it times retrieval + metrics for 1,000 queries against 16,289
database vectors of size 256 (WikiArt's test split). Prints markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.toy import accuracy, toy_space, train_heads  # noqa: E402
from src.cli import resolve_device, run_stage  # noqa: E402
from src.method import metrics  # noqa: E402
from src.method.backward_search import SearchResult, StopRule, backward_search  # noqa: E402
from src.method.retrieval import cosine_topk  # noqa: E402
from src.tags import tag_matrices  # noqa: E402

CLASSES = {"style": 27, "genre": 11}
SETTINGS = [(("style",), 1.1), (("style", "genre"), 3.2)]  # WikiArt tasks' default λ


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, min_seconds: float = 0.5, max_reps: int = 20):
    """Run fn until min_seconds have passed (at most max_reps times); (result, seconds per run)."""
    reps, total, out = 0, 0.0, None
    while reps < max_reps and (reps == 0 or total < min_seconds):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        total += time.perf_counter() - t0
        reps += 1
    return out, total / reps


def one_at_a_time(heads, z0: torch.Tensor, conditions: dict, lam: float) -> SearchResult:
    """`backward_search` called once per query: the authors' loop shape, without the batching."""
    found = [
        backward_search(heads, z0[i : i + 1], {a: y[i : i + 1] for a, y in conditions.items()}, lam)
        for i in range(len(z0))
    ]
    fields = ("z", "iterations", "satisfied_at", "loss")
    return SearchResult(*(torch.cat([getattr(r, f) for r in found]) for f in fields))


def machine(device: torch.device) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}, "
    desc += f"{torch.get_num_threads()} intra-op threads"
    if device.type == "cuda":
        desc += f", GPU {torch.cuda.get_device_name(device)}"
    return desc


def bench_search(args, device: torch.device) -> list[dict]:
    rows = []
    n_max = max(args.sizes)
    for emb in args.emb:
        t0 = time.perf_counter()
        z, labels = toy_space(n_max + 3000, emb, CLASSES, seed=emb, spread=3.0, noise=0.5)
        train = {a: y[:3000] for a, y in labels.items()}
        heads = train_heads(z[:3000], train, steps=args.head_steps)
        acc = accuracy(heads, z[3000:4000], {a: y[3000:4000] for a, y in labels.items()})
        print(f"E={emb}: heads trained in {time.perf_counter() - t0:.1f} s, accuracy {acc}")
        queries = z[3000:]
        g = torch.Generator().manual_seed(emb)
        targets = {a: torch.randint(c, (len(queries),), generator=g) for a, c in CLASSES.items()}
        dev_heads = {a: copy.deepcopy(h).to(device) for a, h in heads.items()}
        dev_q = queries.to(device)
        warm = {"style": targets["style"][:8].to(device)}
        backward_search(dev_heads, dev_q[:8], warm, 1.0)  # warm-up (kernels, allocator)
        for attrs, lam in SETTINGS:
            for n in args.sizes:
                cond = {a: targets[a][:n].to(device) for a in attrs}
                res, sec = timed(partial(backward_search, dev_heads, dev_q[:n], cond, lam), device)
                single, single_sec = timed(
                    partial(backward_search, dev_heads, dev_q[:n], cond, lam, rule=StopRule.SINGLE),
                    device,
                )
                single_its = single.iterations.float().cpu()
                n_ref = min(n, args.ref_queries)
                ref_cond = {a: targets[a][:n_ref] for a in attrs}
                ref, ref_sec = timed(
                    partial(one_at_a_time, heads, queries[:n_ref], ref_cond, lam),
                    torch.device("cpu"),
                    max_reps=1 if n_ref > 1 else 20,
                )
                its = res.iterations.float().cpu()
                same_iters = float((res.iterations[:n_ref].cpu() == ref.iterations).float().mean())
                max_dz = float((res.z[:n_ref].cpu() - ref.z).abs().max())
                row = {
                    "E": emb,
                    "conditions": "+".join(attrs),
                    "lambda": lam,
                    "N": n,
                    "ms_per_query": 1e3 * sec / n,
                    "queries_per_s": n / sec,
                    "ref_ms_per_query": 1e3 * ref_sec / n_ref,
                    "ref_queries_timed": n_ref,
                    "speedup": (ref_sec / n_ref) / (sec / n),
                    "iterations_mean": float(its.mean()),
                    "iterations_sd": float(its.std()) if n > 1 else 0.0,
                    "satisfied": float((res.satisfied_at >= 0).float().mean()),
                    "single_ms_per_query": 1e3 * single_sec / n,
                    "single_iterations_mean": float(single_its.mean()),
                    "single_iterations_sd": float(single_its.std()) if n > 1 else 0.0,
                    "same_iterations_as_ref": same_iters,
                    "max_abs_dz_vs_ref": max_dz,
                }
                rows.append(row)
                print(
                    f"  E={emb} {row['conditions']:<11} N={n:<6} {row['ms_per_query']:9.3f} ms/q "
                    f"{row['queries_per_s']:9.0f} q/s | 1 by 1 {row['ref_ms_per_query']:7.2f} ms/q "
                    f"(on {n_ref}) → ×{row['speedup']:.1f} | it {row['iterations_mean']:.1f}"
                    f"±{row['iterations_sd']:.1f} | same it {same_iters:.2f}, max|Δz| {max_dz:.1e} | "
                    f"single rule {row['single_ms_per_query']:.3f} ms/q, "
                    f"it {row['single_iterations_mean']:.1f}±{row['single_iterations_sd']:.1f}",
                    flush=True,
                )
    return rows


def bench_retrieval(device: torch.device, n_q: int = 1000, n_db: int = 16289, emb: int = 256):
    """Retrieval + every metric E1 computes, for n_q queries against n_db database vectors."""
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    db = torch.randn(n_db, emb, generator=g).tanh()
    q = torch.randn(n_q, emb, generator=g).tanh()
    db_labels = {a: torch.randint(c, (n_db,), generator=g) for a, c in CLASSES.items()}
    q_labels = {a: torch.randint(c, (n_q,), generator=g) for a, c in CLASSES.items()}
    cond = {a: torch.randint(c, (n_q,), generator=g) for a, c in CLASSES.items()}
    exclude = torch.randint(0, n_db, (n_q,), generator=g)
    vocab = [f"tag{i}" for i in range(5132)]  # the paper's count of unique WikiArt tags

    def tags(n):
        return [set(rng.choice(vocab, size=int(rng.integers(3, 15)))) for _ in range(n)]

    q_tags, db_tags = tags(n_q), tags(n_db)
    t0 = time.perf_counter()
    qm, dm = tag_matrices(q_tags, db_tags)
    build = time.perf_counter() - t0
    dev = {"db": db.to(device), "q": q.to(device), "ex": exclude.to(device)}
    dev_db_labels = {a: v.to(device) for a, v in db_labels.items()}
    dev_q_labels = {a: v.to(device) for a, v in q_labels.items()}
    dev_cond = {a: v.to(device) for a, v in cond.items()}

    def run():
        _, idx = cosine_topk(dev["q"], dev["db"], k=10, exclude=dev["ex"])
        hits = metrics.condition_hits(idx, dev_db_labels, dev_cond)
        n_rel = metrics.count_relevant(dev_db_labels, dev_cond, dev["ex"])
        out = {
            "paper_map": metrics.paper_map_at_k(hits),
            "map": metrics.map_at_k(hits, n_rel),
            "mts": metrics.mts_at_k(qm, dm, idx),
            "context": metrics.context_preservation(idx, dev_db_labels, dev_q_labels, ["style"]),
            "retrieved_similarity": float(metrics.retrieved_similarity(idx, idx).mean()),
        }
        return out

    run()  # warm-up
    _, sec = timed(run, device, min_seconds=2.0, max_reps=10)
    return {"queries": n_q, "database": n_db, "E": emb, "seconds": sec, "tag_matrices_s": build}


def markdown(rows: list[dict], retrieval: dict, desc: str) -> str:
    lines = [
        f"Machine: {desc}.",
        "",
        "| E | conditions | λ | N | batched ms/query | batched queries/s | one at a time ms/query "
        "(queries timed) | speed-up | iterations mean ± sd | same iterations one at a time "
        "| single rule ms/query | single rule iterations mean ± sd |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['E']} | {r['conditions']} | {r['lambda']} | {r['N']} | {r['ms_per_query']:.3f} "
            f"| {r['queries_per_s']:.0f} | {r['ref_ms_per_query']:.2f} ({r['ref_queries_timed']}) "
            f"| {r['speedup']:.1f}× | {r['iterations_mean']:.1f} ± {r['iterations_sd']:.1f} "
            f"| {r['same_iterations_as_ref']:.0%} | {r['single_ms_per_query']:.3f} "
            f"| {r['single_iterations_mean']:.1f} ± {r['single_iterations_sd']:.1f} |"
        )
    lines += [
        "",
        f"Retrieval + metrics (cosine top-10 with exclusion, hits, paper mAP@10, true mAP@10, "
        f"mTS@10, context preservation, retrieved similarity) for {retrieval['queries']} queries "
        f"against {retrieval['database']} vectors of size {retrieval['E']}: "
        f"{retrieval['seconds']:.3f} s (building the tag matrices once, 5,132-tag vocabulary: "
        f"{retrieval['tag_matrices_s']:.3f} s).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--sizes", default="1,100,1000,10000", help="numbers of queries N")
    p.add_argument("--emb", default="128,256", help="embedding sizes E")
    p.add_argument("--head-steps", type=int, default=200, help="training steps of the toy heads")
    p.add_argument(
        "--ref-queries", type=int, default=100, help="one-at-a-time timed on ≤ this many"
    )
    p.add_argument(
        "--retrieval-size",
        default="1000,16289",
        help="queries,database rows of the retrieval timing (default: WikiArt's test split)",
    )
    p.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    n_q, n_db = (int(s) for s in args.retrieval_size.split(","))
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.emb = [int(e) for e in args.emb.split(",")]
    device = resolve_device(args.device)
    desc = machine(device)
    print(desc)
    rows = bench_search(args, device)
    retrieval = bench_retrieval(device, n_q, n_db)
    text = markdown(rows, retrieval, desc)
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"machine": desc, "search": rows, "retrieval": retrieval}, indent=2)
        )


if __name__ == "__main__":
    sys.exit(run_stage(main))  # a bad --device is one line, exit 2
