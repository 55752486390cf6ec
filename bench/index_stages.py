"""E2 --image and the explorer (E3) over the N rows of a bench/index_scale.py root, through the
stages' own processes, with `--index ivf`: search time, latency over a socket, peak memory.

    python bench/index_scale.py --rows 10000000 --root R          # the rows and their ivf index
    python bench/index_stages.py --root R --encoder-from /work/baseline/weights/synthart_convnext_atto_e64_ft

`layout` turns the root into what the stages read, without copying the rows: data/synthidx (the
rows' test.csv: an 8-digit image key, a style and a genre — each the argmax of a fixed random
linear map of the row's embedding, so heads can learn them — and three tags: style, genre and a
topic, t<argmax of another such map to 500>) and weights/<run> whose partitions link index_scale.py's z.npy (the same
SHA-256s, so the same fingerprint: its ivf index, linked as index-ivf-test, is accepted), with
label columns added, and an encoder.pt: the --encoder-from run's backbone (its pictures are
embedded as they would be), a fresh reduction to E = 256 (seed 0) and heads fitted on 20,000 rows.
No picture files exist for the rows (the explorer shows their keys). Then:
- `e2`: E2_visualize.py --image (a picture of the demo's) --index ivf, run --pictures times, each
  its own process: the search time it reports (Backward Search's and kNN's rankings), the
  embedding's, and the process's peak RSS (ru_maxrss);
- `e3`: E3_explore.py --index ivf started once to cache its map (untimed), then again: each of
  --queries database images is picked, then asked for a new λ, a new condition and a switch back to
  Backward Search (bench/explorer_latency.py's interactions), over HTTP on a kept-alive
  connection, one client; the E3 process's peak VmHWM and RssAnon (sampled every 50 ms).
Prints markdown rows for bench/RESULTS.md with the load average.
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import statistics
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
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import torch  # noqa: E402

from bench.explorer_latency import LAMBDAS, post  # noqa: E402
from bench.index_scale import E  # noqa: E402
from bench.scale import LAUNCHER, load, machine  # noqa: E402
from bench.toy import accuracy, train_heads  # noqa: E402
from src.artifacts import load_torch, read_json, save_npy, save_torch, write_json  # noqa: E402
from src.method.encoder import build_encoder  # noqa: E402
from src.partitions import MANIFEST, open_partitions  # noqa: E402
from src.tasks import DATASET_FILE  # noqa: E402

DATASET, RUN = "synthidx", "synthidx_convnext_atto_e256"
TASK = f"{DATASET}:style"
TAGS = 500  # t<cluster mod TAGS>
HEAD_ROWS = 20_000


def _roots(root: Path) -> list[str]:
    base = root / "stages"
    return ["--data-root", str(base / "data"), "--weights-root", str(base / "weights"),
            "--results-root", str(base / "results"), "--run", RUN]  # fmt: skip


def layout(root: Path, encoder_from: Path) -> None:
    """data/synthidx and weights/<RUN> under root/stages, the rows linked, not copied."""
    store = open_partitions(root / "run")
    data, run = root / "stages" / "data" / DATASET, root / "stages" / "weights" / RUN
    if (run / "encoder.pt").exists():
        return
    shutil.rmtree(root / "stages", ignore_errors=True)
    data.mkdir(parents=True)
    demo = load_torch(encoder_from / "encoder.pt", "the demo", map_location="cpu")
    labels = demo["config"]["labels"]
    rng = np.random.default_rng(7)
    maps = {a: rng.standard_normal((E, len(c)), dtype=np.float32) for a, c in labels.items()}
    topic_map = rng.standard_normal((E, TAGS), dtype=np.float32)
    write_json(data / "labels.json", labels)
    write_json(data / DATASET_FILE, {"name": DATASET, "attributes": list(labels),
               "classes": labels, "description": "bench/index_stages.py's rows"})  # fmt: skip
    src_dir, out = store.source, run / "embeddings"
    out.mkdir(parents=True)
    heads_z, heads_y = [], {a: [] for a in labels}
    for i, part in enumerate(store.parts):
        z = store.z(i)
        ids = {a: np.concatenate([(z[s : s + 65536] @ m).argmax(1) for s in range(0, len(z), 65536)])
               for a, m in maps.items()}  # fmt: skip
        topics = np.concatenate(
            [(z[s : s + 65536] @ topic_map).argmax(1) for s in range(0, len(z), 65536)]
        )
        keys = np.char.zfill(np.arange(part.start, part.stop).astype(str), 8)
        names = [pa.array(np.asarray(labels[a], dtype=object)[ids[a]]) for a in labels]
        topic = pa.array(np.char.add("t", topics.astype(str)))
        tags = pc.binary_join_element_wise(*names, topic, "|")
        table = pd.DataFrame({"image": keys, **{a: n.to_pandas() for a, n in zip(labels, names, strict=True)},
                              "tags": tags.to_pandas()})  # fmt: skip
        table.to_csv(data / "test.csv", index=False, mode="a" if part.start else "w",
                     header=not part.start)  # fmt: skip
        d = out / part.name
        d.mkdir()
        (d / "z.npy").symlink_to((src_dir / part.name / "z.npy").resolve())
        shutil.copy(src_dir / part.name / "part.json", d / "part.json")
        save_npy(d / "image.npy", keys)
        save_npy(d / "split.npy", np.full(len(keys), "test"))
        for a in labels:
            save_npy(d / f"label_{a}.npy", ids[a].astype(np.int64))
        if len(heads_z) * len(keys) < 2 * HEAD_ROWS:
            heads_z.append(np.array(z[: HEAD_ROWS // 2]))
            for a in labels:
                heads_y[a].append(ids[a][: HEAD_ROWS // 2])
        print(f"  layout: {part.name} ({part.stop:,} rows)", file=sys.stderr, flush=True)
    manifest = read_json(src_dir / MANIFEST, "index_scale.py")
    manifest["columns"] = sorted(["image", "split", "z", *(f"label_{a}" for a in labels)])
    write_json(out / MANIFEST, manifest)
    (run / "index-ivf-test").symlink_to((root / "index-ivf").resolve())
    z = torch.from_numpy(np.concatenate(heads_z)[:HEAD_ROWS])
    y = {a: torch.from_numpy(np.concatenate(v)[:HEAD_ROWS]) for a, v in heads_y.items()}
    heads = train_heads(z, y, seed=0)
    held = np.array(store.z(len(store.parts) - 1)[-5000:])
    acc = accuracy(heads, torch.from_numpy(held),
                   {a: torch.from_numpy((held @ m).argmax(1)) for a, m in maps.items()})  # fmt: skip
    config = {**demo["config"], "dataset": DATASET, "embedding_size": E}
    torch.manual_seed(0)
    model = build_encoder(config)  # the reduction to E = 256: fresh
    backbone = {k: v for k, v in demo["model"].items() if k.startswith("backbone.")}
    model.load_state_dict(backbone, strict=False)
    for a, h in heads.items():
        model.heads[a].load_state_dict(h.state_dict())
    save_torch(run / "encoder.pt", {"config": config, "model": model.eval().state_dict()})
    print(f"  layout: heads' accuracy on 5,000 other rows {acc}", file=sys.stderr, flush=True)


def pictures(encoder_from: Path, count: int) -> list[Path]:
    """The demo's first test pictures (the encoder's backbone was trained on their kind)."""
    data = encoder_from.parents[1] / "data"
    found = sorted((data / "synthart" / "images" / "test").glob("*.png"))
    return found[:count]


def phase_e2(root: Path, encoder_from: Path, count: int) -> list[dict]:
    out = []
    for pic in pictures(encoder_from, count):
        rss = root / "stages" / "e2.maxrss"
        cmd = [sys.executable, "-c", LAUNCHER, str(rss), sys.executable, str(ROOT / "E2_visualize.py"),
               "--task", TASK, *_roots(root), "--image", str(pic), "--condition", "style=flat",
               "--index", "ivf", "--device", "cpu"]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode:
            sys.exit((proc.stdout + proc.stderr)[-3000:])
        said = proc.stdout + proc.stderr  # the stage logs to stdout
        found = re.search(r"embedded in ([\d.]+) ms, searched in ([\d.]+) ms", said)
        if found is None:
            sys.exit("E2 did not report its search time:\n" + said[-3000:])
        recall = re.search(r"recall@10 ([\d.]+)", said)
        out.append({"picture": pic.name, "embed_ms": float(found[1]), "search_ms": float(found[2]),
                    "wall_s": wall, "peak_rss_gib": int(rss.read_text()) / 2**20,
                    "recall": recall and float(recall[1])})  # fmt: skip
        print(f"  E2 {out[-1]}", file=sys.stderr, flush=True)
    return out


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "VmRSS"):
            out[key] = int(value.split()[0]) // 1024
    return out


def _start_e3(root: Path, log: Path) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, str(ROOT / "E3_explore.py"), "--task", TASK, *_roots(root),
           "--index", "ivf", "--port", "0", "--device", "cpu"]  # fmt: skip
    f = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    while proc.poll() is None:
        found = re.search(r"explorer is at http://127\.0\.0\.1:(\d+)/", log.read_text())
        if found:
            return proc, int(found[1])
        time.sleep(0.5)
    sys.exit(f"E3 stopped:\n{log.read_text()[-3000:]}")


def phase_e3(root: Path, queries: int) -> dict:
    log = root / "stages" / "e3.log"
    t0 = time.perf_counter()
    proc, _ = _start_e3(root, log)  # the first start fits and caches the map: not timed
    first_start = time.perf_counter() - t0
    proc.terminate()
    proc.wait()
    t0 = time.perf_counter()
    proc, port = _start_e3(root, log)
    start = time.perf_counter() - t0
    peak = {"RssAnon": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak["RssAnon"] = max(peak["RssAnon"], _status(proc.pid)["RssAnon"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    n = read_json(root / "run" / "embeddings" / MANIFEST, "index_scale.py")["rows"]
    labels = read_json(root / "stages" / "data" / DATASET / "labels.json", "layout")
    rng = np.random.default_rng(1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    times: dict[str, list[float]] = {
        "new λ": [],
        "new condition": [],
        "method → Backward Search": [],
    }
    try:
        for row in rng.choice(n, size=queries, replace=False):
            cond = {a: int(rng.integers(len(c))) for a, c in labels.items() if a == "style"}
            body = {"row": int(row), "conditions": cond, "method": "backward_search", "lam": 1.0}
            post(conn, body)  # the query is picked (not timed)
            for lam in LAMBDAS:
                times["new λ"].append(post(conn, {**body, "lam": lam})[0])
            cond = {"style": (cond["style"] + 1) % len(labels["style"])}
            body = {**body, "conditions": cond}
            times["new condition"].append(post(conn, body)[0])
            post(conn, {**body, "method": "knn"})
            times["method → Backward Search"].append(post(conn, body)[0])
    finally:
        conn.close()
        stop.set()
        sampler.join()
        status = _status(proc.pid)
        proc.terminate()
        proc.wait()
    every = [t for v in times.values() for t in v]
    rows = {k: (1e3 * statistics.median(v), 1e3 * float(np.percentile(v, 90)), len(v))
            for k, v in [*times.items(), ("all", every)]}  # fmt: skip
    searched = re.search(r"recall@10 ([\d.]+)", log.read_text())
    return {"rows": rows, "vmhwm_gib": status["VmHWM"] / 1024, "anon_gib": peak["RssAnon"] / 1024,
            "start_s": start, "first_start_s": first_start,
            "recall": searched and float(searched[1])}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="bench/index_scale.py's --root")
    p.add_argument("--encoder-from", type=Path, required=True, help="a run folder (its backbone)")
    p.add_argument("--pictures", type=int, default=3, help="E2 --image runs")
    p.add_argument("--queries", type=int, default=20, help="E3: database images asked")
    p.add_argument("--phases", default="layout,e2,e3")
    args = p.parse_args(argv)
    phases = args.phases.split(",")
    if "layout" in phases:
        t0 = time.perf_counter()
        layout(args.root, args.encoder_from)
        print(f"layout: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    info = read_json(args.root / "index-ivf" / "index.json", "index_scale.py")
    print(f"Machine: {machine()}; rows {info['rows']:,}, index {info['factory']}, nprobe "
          f"{info['nprobe']}, recall@10 {info['recall_at_10']} (held-out, index.json).\n")  # fmt: skip
    if "e2" in phases:
        before = load()
        runs = phase_e2(args.root, args.encoder_from, args.pictures)
        print(f"E2 --image (load {before} before, {load()} after):\n")
        print("| picture | embedding ms | search ms (kNN + Backward Search) | wall s | peak RSS GiB "
              "| recall@10 stated |\n|---|---|---|---|---|---|")  # fmt: skip
        for r in runs:
            print(f"| {r['picture']} | {r['embed_ms']:.1f} | {r['search_ms']:.1f} | {r['wall_s']:.0f} "
                  f"| {r['peak_rss_gib']:.2f} | {r['recall']} |")  # fmt: skip
        print()
    if "e3" in phases:
        before = load()
        r = phase_e3(args.root, args.queries)
        print(f"E3 over HTTP, one client (load {before} before, {load()} after); started in "
              f"{r['start_s']:.0f} s (first start, fitting the map: {r['first_start_s']:.0f} s); "
              f"peak VmHWM {r['vmhwm_gib']:.2f} GiB, peak RssAnon {r['anon_gib']:.2f} GiB; "
              f"recall@10 stated {r['recall']}.\n")  # fmt: skip
        print("| interaction | n | median ms | p90 ms |\n|---|---|---|---|")
        for k, (med, p90, n) in r["rows"].items():
            print(f"| {k} | {n} | {med:.1f} | {p90:.1f} |")


if __name__ == "__main__":
    main()
