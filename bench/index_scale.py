"""An ivf (or ivf-pq) index over N synthetic clustered rows written as C1's partitions: build
time, disk, bytes per vector, the calibrated nprobe and its recall@10, peak memory and the
latency of single queries.

    python bench/index_scale.py --rows 1000000 --root /work/scratch/index-bench
    python bench/index_scale.py --rows 10000000 --root /work/scratch/index-bench   # ~10 GB of rows

Three phases, each its own process so each peak is its own: `write` (N rows of E = 256, clusters
of ~1,000 rows, `--data subspace` or `isotropic`: see `clustered`; written through C1's partition
writer in partitions of --partition-rows), `build` (method/index.build_index: trained on a sample, one shard per
partition, merged on disk, calibrated on 1,000 held-out rows) and `search` (the index opened
memory-mapped; --queries fresh queries from the same clusters, one at a time after a warm-up:
median and p90 latency, their recall@10 against exact, the peak memory while serving them;
exact's own single-query latency beside).
Peak memory is given twice: VmHWM (resident pages, the memory maps' file pages included) and the
peak of RssAnon (what the process allocated itself; mapped file pages are page cache the kernel
takes back under pressure), sampled every 50 ms. --root is kept (reruns reuse what is there:
delete it for a fresh build). Prints markdown rows for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src  # noqa: E402, F401  (first: idle OpenMP threads sleep, as in the stages)

# isort: split
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.scale import load, machine  # noqa: E402
from src.method import index_sizing  # noqa: E402
from src.method.index import build_index, open_index, recall_at_10  # noqa: E402
from src.partitions import Plan, open_partitions, write_set  # noqa: E402

E = 256
ROWS_PER_CLUSTER = 1000
NOISE = 0.45
SUBSPACE = 16


class PeakMemory:
    """The process's peak RssAnon and RssFile, sampled every 50 ms, and VmHWM at the end (MiB)."""

    def __init__(self):
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def status() -> dict[str, int]:
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) // 1024
        return out

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            now = self.status()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], now[k])

    def now(self) -> dict[str, int]:
        """The peaks so far."""
        return {"vmhwm_mib": self.status()["VmHWM"], "anon_mib": self.peak["RssAnon"],
                "file_mib": self.peak["RssFile"]}  # fmt: skip

    def result(self) -> dict[str, int]:
        self.stop.set()
        self.thread.join()
        return self.now()


def clustered(n_clusters: int, seed: int, data: str):
    """columns(start, stop) of the synthetic set: rows drawn from (seed, start) alone.

    isotropic: centre + 0.45·noise in all E dimensions (the neighbours of a row spread over its
    whole cluster: the hard case for inverted lists). subspace: each cluster varies along its own
    SUBSPACE directions (the same spread) plus 0.05·noise, as embeddings of a trained encoder do
    (a low intrinsic dimension)."""
    rng0 = np.random.default_rng(0)
    centres = rng0.standard_normal((n_clusters, E), dtype=np.float32)
    bases = None
    if data == "subspace":  # unit-length directions, SUBSPACE per cluster
        bases = rng0.standard_normal((n_clusters, SUBSPACE, E), dtype=np.float32) / np.sqrt(E)
    spread = NOISE * np.sqrt(E / SUBSPACE)  # the same spread as the isotropic noise

    def columns(start: int, stop: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, start])
        z = np.empty((stop - start, E), dtype=np.float32)
        for a in range(0, stop - start, 1 << 13):  # in slices: no float64 copy of a partition
            b = min(a + (1 << 13), stop - start)
            label = rng.integers(n_clusters, size=b - a)
            noise = rng.standard_normal((b - a, E), dtype=np.float32)
            if bases is None:
                z[a:b] = centres[label] + NOISE * noise
            else:
                coef = spread * rng.standard_normal((b - a, 1, SUBSPACE), dtype=np.float32)
                z[a:b] = centres[label] + (coef @ bases[label])[:, 0] + 0.05 * noise
        ids = np.arange(start, stop)
        return {"z": z, "image": ids.astype(str), "split": np.full(stop - start, "test")}

    return columns


def phase_write(args, memory: PeakMemory) -> dict:
    plan = Plan(args.rows, args.partition_rows, {"synthetic": args.data, "seed": 0})
    t0 = time.time()
    store = write_set(
        args.root / "run", clustered(args.rows // ROWS_PER_CLUSTER, 0, args.data), plan
    )
    return {"write_s": time.time() - t0, "partitions": len(store.parts)}


def phase_build(args, memory: PeakMemory) -> dict:
    store = open_partitions(args.root / "run")
    folder = args.root / f"index-{args.kind}"
    info = build_index(args.kind, store, folder, progress=lambda m: print(m, file=sys.stderr))
    return {"info": info.__dict__}


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def phase_search(args, memory: PeakMemory) -> dict:
    store = open_partitions(args.root / "run")
    index = open_index(args.kind, store, folder=args.root / f"index-{args.kind}")
    fresh = clustered(args.rows // ROWS_PER_CLUSTER, 1, args.data)
    q = torch.from_numpy(fresh(0, args.queries)["z"])
    for i in range(min(20, len(q))):  # warm-up: the coarse quantizer, the first lists touched
        index.search(q[i : i + 1], 10)
    found, times = [], []
    for i in range(len(q)):
        t = time.perf_counter()
        found.append(index.search(q[i : i + 1], 10)[1])
        times.append(time.perf_counter() - t)
    serving = memory.now()  # the peak while serving, before exact reads every row
    exact = open_index("exact", store)
    truth = exact.search(q, 10)[1].numpy()
    exact_times = timed(lambda: exact.search(q[:1], 10), args.exact_repeats)
    return {
        "latency_ms": [1e3 * float(np.median(times)), 1e3 * float(np.percentile(times, 90))],
        "recall_fresh": recall_at_10(torch.cat(found).numpy(), truth),
        "exact_ms": 1e3 * float(np.median(exact_times)),
        "serving": serving,
    }


PHASES = {"write": phase_write, "build": phase_build, "search": phase_search}


def child(args) -> None:
    memory = PeakMemory()
    t0 = time.time()
    result = PHASES[args.phase](args, memory)
    result |= {"seconds": time.time() - t0, **memory.result()}
    print("RESULT " + json.dumps(result))


def run_phase(phase: str, argv: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, *argv]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--partition-rows", type=int, default=1_000_000)
    p.add_argument("--kind", choices=("ivf", "ivf-pq"), default="ivf")
    p.add_argument("--data", choices=("subspace", "isotropic"), default="subspace")
    p.add_argument("--queries", type=int, default=200, help="single queries timed")
    p.add_argument("--exact-repeats", type=int, default=5)
    p.add_argument("--root", type=Path, required=True, help="where the rows and the index go")
    p.add_argument("--phase", choices=tuple(PHASES), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        return child(args)
    own = ["--rows", str(args.rows), "--partition-rows", str(args.partition_rows),
           "--kind", args.kind, "--data", args.data, "--queries", str(args.queries),
           "--exact-repeats", str(args.exact_repeats), "--root", str(args.root)]  # fmt: skip
    if (args.root / "run" / "embeddings" / "manifest.json").exists():
        stored = open_partitions(args.root / "run")
        if len(stored) != args.rows:
            sys.exit(f"{args.root} holds {len(stored)} rows, not {args.rows}: use another --root")
    shutil.rmtree(args.root / f"index-{args.kind}", ignore_errors=True)  # always a fresh build
    load0 = load()
    wrote = run_phase("write", own)
    built = run_phase("build", own)
    searched = run_phase("search", own)
    load1 = load()
    info = built["info"]
    bpv = info["disk_bytes"] / args.rows
    print(f"Machine: {machine()}; load average {load0} before, {load1} after.\n")
    print("| rows | data | index | build s (+ calibration) | disk | bytes/vector (rule) | nprobe "
          "| recall@10 held-out / fresh | peak build: VmHWM / RssAnon "
          "| peak serving: VmHWM / RssAnon | 1 query median / p90 | exact 1 query |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rule = index_sizing.bytes_per_vector(args.kind, E, info["pq_m"])
    serving, gib = searched["serving"], 1024
    print(
        f"| {args.rows:,} | {args.data} | {info['factory']} | {info['build_seconds']:.0f} "
        f"(+ {built['seconds'] - info['build_seconds']:.0f}) "
        f"| {info['disk_bytes'] / 2**30:.2f} GiB | {bpv:.0f} ({rule}) | {info['nprobe']} "
        f"of {info['nlist']} | {info['recall_at_10']:.4f} / {searched['recall_fresh']:.4f} "
        f"| {built['vmhwm_mib'] / gib:.2f} / {built['anon_mib'] / gib:.2f} GiB "
        f"| {serving['vmhwm_mib'] / gib:.2f} / {serving['anon_mib'] / gib:.2f} GiB "
        f"| {searched['latency_ms'][0]:.1f} / {searched['latency_ms'][1]:.1f} ms "
        f"| {searched['exact_ms']:.0f} ms |"
    )
    print(f"\n(writing the {wrote['partitions']} partitions: {wrote['write_s']:.0f} s, peak "
          f"VmHWM {wrote['vmhwm_mib'] / 1024:.2f} GiB, RssAnon {wrote['anon_mib'] / 1024:.2f} GiB)")  # fmt: skip


if __name__ == "__main__":
    main()
