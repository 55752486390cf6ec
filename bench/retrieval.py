"""Benchmark: the exact cosine top-k (src/method/retrieval.py) against FAISS and plain torch.

    python bench/retrieval.py                                   # 1M × 256, 1,000 queries, k = 10
    python bench/retrieval.py --rows 200000 --databases neardup --repeats 5 --out rows.json

For each database — `random` (Gaussian rows and queries), `clustered` (rows and queries around
1,000 centres, noise of 0.5× the per-dimension std) and `neardup` (400 base vectors, each copied
N/400 times with Gaussian noise of 0.15× the per-dimension std, shuffled; the queries are database
rows, as E1's are) — it times, interleaved in one process (medians of --repeats, after one
warm-up call each): the project's top-k with the bfloat16 screen (`screen`) and without it
(`exact`, screen=False), both on the database prepared once (`prepare`, timed apart: its rows
normalised and copied for the screen, as the stages' exact search keeps them), FAISS
`IndexFlatIP` on the normalised rows (`faiss`; built once), plain torch matmul + topk in chunks
of rows (`torch`), and the float64 truth (`float64`, once). Per path: seconds, GFLOP/s of 2·Q·N·E, the fraction of the
float32 and bfloat16 peaks (one 4096³ matmul each, measured in the same run), the process's peak
RSS during the call and above the RSS before it, and top-10 agreement with the float64 truth:
queries whose top-10 sets are equal, those that differ only by rows whose float64 scores lie
within 2⁻²¹ of the truth's 10th (ties at float32 resolution, counted), and the rest (wrong).
Prints a markdown table for bench/RESULTS.md with the CPU model, its bfloat16 flags and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src  # noqa: E402, F401  (first: idle OpenMP threads sleep, as in the stages)

# isort: split
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.scale import load, machine  # noqa: E402
from src.method.retrieval import cosine_topk, prepare, screens  # noqa: E402

DATABASES = ("random", "clustered", "neardup")
PATHS = ("screen", "exact", "faiss", "torch", "float64")
CHUNK = 65536  # rows per matmul of the plain torch path
TIE = 2.0**-21  # a float64 score this close to the 10th: a tie at float32 resolution


def database(kind: str, n: int, emb: int, n_q: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(rows N×E, queries Q×E) of one kind of database, float32."""
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return torch.randn(n, emb, generator=g), torch.randn(n_q, emb, generator=g)
    if kind == "clustered":
        centres = torch.randn(1000, emb, generator=g)
        pick = torch.randint(1000, (n + n_q,), generator=g)
        x = centres[pick] + 0.5 * torch.randn(n + n_q, emb, generator=g)
        return x[:n].contiguous(), x[n:].contiguous()
    if kind == "neardup":
        base = torch.randn(400, emb, generator=g)
        pick = torch.arange(n) % 400
        x = base[pick[torch.randperm(n, generator=g)]]
        x += 0.15 * torch.randn(n, emb, generator=g)
        return x, x[torch.randint(n, (n_q,), generator=g)].clone()
    raise SystemExit(f"error: --databases: {kind!r} is not one of {', '.join(DATABASES)}")


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


class PeakRss:
    """The process's peak resident memory while the block runs (sampled every 2 ms)."""

    def __enter__(self):
        self.before = self.peak = rss_kib()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while not self.stop.wait(0.002):
            self.peak = max(self.peak, rss_kib())

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, rss_kib())


def peak(dtype: torch.dtype) -> float:
    """FLOP/s of one 4096³ matmul in `dtype` (the best of three after a warm-up)."""
    a = torch.randn(4096, 4096).to(dtype)
    b = torch.randn(4096, 4096).to(dtype)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(3))
    return 2 * 4096**3 / best


def _seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def torch_topk(q: torch.Tensor, unit: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain torch: each chunk's matmul and topk, merged by one more topk."""
    scores, rows = [], []
    for s in range(0, len(unit), CHUNK):
        v, i = (q @ unit[s : s + CHUNK].T).topk(k, dim=1)
        scores.append(v)
        rows.append(i + s)
    v, at = torch.cat(scores, 1).topk(k, dim=1)
    return v, torch.cat(rows, 1).gather(1, at)


def truth(q: torch.Tensor, db: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 top-k (and the 11th score) of the float32 rows, normalised in float64."""
    qd = F.normalize(q.double(), dim=1)
    best_s, best_i = [], []
    for s in range(0, len(db), CHUNK):
        v, i = (qd @ F.normalize(db[s : s + CHUNK].double(), dim=1).T).topk(k + 1, dim=1)
        best_s.append(v)
        best_i.append(i + s)
    v, at = torch.cat(best_s, 1).topk(k + 1, dim=1)
    return v, torch.cat(best_i, 1).gather(1, at)


def agreement(rows: torch.Tensor, q: torch.Tensor, db: torch.Tensor, want) -> dict[str, int]:
    """Queries whose top-k set equals the float64 one, differs only within TIE of its k-th
    score, or differs otherwise."""
    want_s, want_i = want
    k = rows.shape[1]
    same = ties = wrong = 0
    qd, kth = F.normalize(q.double(), dim=1), want_s[:, k - 1]
    for i in range(len(rows)):  # a bench's check, not a search loop
        got, exp = set(rows[i].tolist()), set(want_i[i, :k].tolist())
        if got == exp:
            same += 1
            continue
        extra = torch.tensor(sorted(got ^ exp))
        s = F.normalize(db[extra].double(), dim=1) @ qd[i]
        ok = bool(((s - kth[i]).abs() <= TIE).all()) and len(got) == k
        ties += ok
        wrong += not ok
    return {"same": same, "ties": ties, "wrong": wrong}


def calls(q: torch.Tensor, db: torch.Tensor, args: argparse.Namespace):
    """Each path as a call (its index or prepared database built first, timed apart)."""
    out: dict[str, Callable[[], tuple]] = {}
    built: dict[str, float] = {}
    if {"screen", "exact"} & set(args.paths):  # prepared once, as the stages' exact search is
        t0 = time.perf_counter()
        prepared = prepare(db)
        built["screen"] = built["exact"] = time.perf_counter() - t0
    if "screen" in args.paths:
        out["screen"] = lambda: cosine_topk(q, prepared, args.k, screen=True)
    if "exact" in args.paths:
        out["exact"] = lambda: cosine_topk(q, prepared, args.k, screen=False)
    qn = F.normalize(q, dim=1)
    unit = F.normalize(db, dim=1) if {"faiss", "torch"} & set(args.paths) else None
    if "faiss" in args.paths:
        import faiss  # a bench-only dependency (requirements-dev.txt)

        t0 = time.perf_counter()
        index = faiss.IndexFlatIP(args.dim)
        index.add(unit.numpy())
        built["faiss"] = time.perf_counter() - t0
        qnp = qn.numpy()
        out["faiss"] = lambda: tuple(torch.from_numpy(x) for x in index.search(qnp, args.k))
    if "torch" in args.paths:
        out["torch"] = lambda: torch_topk(qn, unit, args.k)
    return out, built


def bench(kind: str, args: argparse.Namespace, peaks: dict[str, float]) -> list[dict]:
    """One database: every path interleaved, medians of --repeats after a warm-up call each."""
    db, q = database(kind, args.rows, args.dim, args.queries)
    flops = 2 * len(q) * len(db) * args.dim
    fns, built = calls(q, db, args)
    want = truth(q, db, args.k)
    times: dict[str, list[float]] = {p: [] for p in fns}
    rss: dict[str, tuple[int, int]] = {}
    result: dict[str, tuple] = {}
    for p, fn in fns.items():  # warm-up (and the answer)
        with PeakRss() as m:
            result[p] = fn()
        rss[p] = (m.peak, m.peak - m.before)
    for _ in range(args.repeats):
        for p, fn in fns.items():
            times[p].append(_seconds(fn))
    if "float64" in args.paths:
        times["float64"] = [_seconds(lambda: truth(q, db, args.k))]
        result["float64"] = (want[0][:, : args.k], want[1][:, : args.k])
        rss["float64"] = (0, 0)
    records = []
    for p, ts in times.items():
        sec = statistics.median(ts)
        rec = {"database": kind, "path": p, "rows": len(db), "queries": len(q)}
        rec |= {"dim": args.dim, "k": args.k, "seconds": sec, "runs": ts}
        rec |= {"gflops": flops / sec / 1e9, "of_fp32_peak": flops / sec / peaks["fp32"]}
        rec |= {"of_bf16_peak": flops / sec / peaks["bf16"], "built_s": built.get(p)}
        rec |= {"bf16_floor_s": flops / peaks["bf16"], "fp32_floor_s": flops / peaks["fp32"]}
        rec |= {"peak_rss_gb": rss[p][0] / 2**20, "extra_rss_gb": rss[p][1] / 2**20}
        rec |= agreement(result[p][1], q, db, want)
        records.append(rec)
        print(line(rec), flush=True)
    return records


def run(args: argparse.Namespace) -> list[dict]:
    peaks = {"fp32": peak(torch.float32), "bf16": peak(torch.bfloat16)}
    print(f"peaks: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f}")
    return [r for kind in args.databases for r in bench(kind, args, peaks)]


def line(r: dict) -> str:
    built = "" if r["built_s"] is None else f" (built {r['built_s']:.2f} s)"
    return (
        f"| {r['database']} | {r['path']}{built} | {r['seconds']:.3f} | {r['gflops']:.0f} "
        f"| {r['of_fp32_peak']:.2f} | {r['of_bf16_peak']:.2f} "
        f"| {r['seconds'] / r['bf16_floor_s']:.2f}× | {r['peak_rss_gb']:.2f} "
        f"(+{r['extra_rss_gb']:.2f}) | {r['same']}/{r['ties']}/{r['wrong']} |"
    )


def cpu_flags() -> str:
    flags = set()
    for row in Path("/proc/cpuinfo").read_text().splitlines():
        if row.startswith("flags"):
            flags = set(row.split(":", 1)[1].split())
            break
    have = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2") if f in flags]
    return ", ".join(have) or "none of avx2/avx512/bf16/amx"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="database rows N")
    p.add_argument("--dim", type=int, default=256, help="embedding size E")
    p.add_argument("--queries", type=int, default=1000, help="queries Q")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per path (median)")
    p.add_argument("--databases", default=",".join(DATABASES), help="comma-separated")
    p.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, help="also write the records as JSON here")
    args = p.parse_args(argv)
    args.databases = [d for d in args.databases.split(",") if d]
    args.paths = [x for x in args.paths.split(",") if x]
    if bad := sorted(set(args.paths) - set(PATHS)):
        raise SystemExit(f"error: --paths {','.join(bad)}: choose from {', '.join(PATHS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    before = load()
    print(
        f"{machine()}; CPU flags: {cpu_flags()}; screen here: "
        f"{screens(torch.device('cpu'), torch.float32)}; threads {torch.get_num_threads()}"
    )
    print(f"load before {before}")
    print(
        "| database | path | s | GFLOP/s | of fp32 peak | of bf16 peak | × bf16 floor "
        "| peak RSS GB (+ during) | top-10 same/ties/wrong |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    records = run(args)
    print(f"load after {load()}")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "records": records}, indent=2))


if __name__ == "__main__":
    main()
