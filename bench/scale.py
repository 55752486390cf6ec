"""A2, E1 and E2 on a database of N rows: wall time, peak memory and how time grows with N.

    python bench/scale.py                                  # N = 10k, 100k, 1M (E = 256, 1,000 queries)
    python bench/scale.py --sizes 16000 --stages E1        # WikiArt's test-split size
    python bench/scale.py --sizes 10000,100000 --threads 1 --out bench/scale.json
    python bench/scale.py --near-duplicates --stages A2,E1      # a database of near-duplicates

Builds, in a temporary root (--root keeps it), a WikiArt-shaped dataset of your own (`scalebench`,
A1's folder format: 27 styles, 11 genres, tags from a 3,000-word vocabulary) and a finished run on
it: E-dimensional embeddings of N test rows (the database) and a fixed train split, clustered by
style, genre and a hidden topic that also picks most of a row's tags (so mTS@10 means something and
the λ calibration has a target to reach), and an encoder file holding heads trained on them (no
backbone, as an imported run). Then it runs each stage as its own process, as a user would —
A2 (--num-queries), E1 --sweep --target-mts 0.15 and E2 — and records its wall time, its peak
resident memory (ru_maxrss of the stage's process) and the load average around it. Last, the fitted exponent
b of time ∝ N^b per stage (least squares over the sizes, and between the two largest sizes).
--near-duplicates makes the database dense clusters of near-duplicates instead (what video frames,
product shots or a re-scanned archive look like): 400 of its rows, each copied N/400 times with
Gaussian noise of 0.15× the per-dimension std, labels and tags copied. Prints markdown for
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import src  # noqa: E402, F401  (first: idle OpenMP threads spin or sleep as in the stages)

# isort: split
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench.toy import accuracy, train_heads  # noqa: E402
from src.artifacts import run_dir, save_torch, write_json  # noqa: E402
from src.method.encoder import build_encoder, encoder_config  # noqa: E402
from src.partitions import Plan, write_set  # noqa: E402
from src.tags import TAG_SEP  # noqa: E402
from src.tasks import DATASET_FILE, default_run  # noqa: E402

NAME = "scalebench"
CLASSES = {"style": 27, "genre": 11}  # WikiArt's
VOCABULARY = 3000  # tag words
TOPICS = 300  # hidden topics: a row's embedding and most of its tags follow its topic
TOPIC_WORDS = 8  # words per topic, of which a row carries TOPIC_TAGS
TOPIC_TAGS = 4
TRAIN_ROWS = 20_000  # the train split (centroids); the database is the N test rows
HEAD_ROWS = 4000  # train rows the heads are fitted on (full batch)
CLASS_SCALE, TOPIC_SCALE = 1.0, 1.0  # how far apart class and topic centres lie (noise: 0.45)
STAGES = ("A2", "E1", "E2")


def rows(n: int, emb: int, rng: np.random.Generator, centres: dict) -> dict[str, np.ndarray]:
    """n rows: class ids, topic, embedding z = tanh(Σ centres + noise) and their tag cells."""
    ids = {a: rng.choice(c, size=n, p=centres[f"p_{a}"]) for a, c in CLASSES.items()}
    topic = rng.integers(TOPICS, size=n)
    z = np.empty((n, emb), dtype=np.float32)
    for s in range(0, n, 65536):  # in slices: a million rows stay ~1 GB
        e = min(s + 65536, n)
        pre = 0.45 * rng.standard_normal((e - s, emb), dtype=np.float32)
        pre += centres["topic"][topic[s:e]]
        for a in CLASSES:
            pre += CLASS_SCALE * centres[a][ids[a][s:e]]
        z[s:e] = np.tanh(pre)
    pick = rng.random((n, TOPIC_WORDS)).argsort(1)[:, :TOPIC_TAGS]
    words = np.concatenate(
        [
            np.take_along_axis(centres["words"][topic], pick, 1),
            rng.integers(VOCABULARY, size=(n, int(rng.integers(1, 3)))),
        ],
        axis=1,
    )
    vocab = np.array([f"w{i:04d}" for i in range(VOCABULARY)], dtype=object)
    cells = [TAG_SEP.join(dict.fromkeys(r)) for r in vocab[words].tolist()]
    return {**ids, "z": z, "tags": np.asarray(cells, dtype=object)}


def near_duplicates(r: dict, rng: np.random.Generator, bases: int = 400, noise: float = 0.15):
    """The rows as `bases` of them, each copied len/bases times (shuffled) with Gaussian noise of
    `noise`× the per-dimension std of z; labels and tags copied with them."""
    n = len(r["z"])
    source = rng.choice(n, bases, replace=False)[rng.permutation(np.arange(n) % bases)]
    out = {k: v[source] for k, v in r.items()}
    std = noise * r["z"].std(0)
    for s in range(0, n, 65536):  # in slices: a million rows stay ~1 GB
        out["z"][s : s + 65536] += std * rng.standard_normal(
            out["z"][s : s + 65536].shape, dtype=np.float32
        )
    return out


CHUNK = 1_000_000  # rows generated at once and rows per partition


def _table(data: Path, split: str, r: dict, labels: dict, start: int) -> dict[str, np.ndarray]:
    """Rows `r` of a split: appended to <split>.csv (created at start 0), and as C1's columns."""
    n = len(r["z"])
    image = np.array([f"images/{split}/{i:07d}.jpg" for i in range(start, start + n)], dtype=object)
    table = pd.DataFrame({"image": image})
    for a in CLASSES:
        table[a] = np.asarray(labels[a], dtype=object)[r[a]]
    table["tags"] = r["tags"]
    table.to_csv(data / f"{split}.csv", index=False, mode="w" if start == 0 else "a",
                 header=start == 0)  # fmt: skip
    columns = {"image": image.astype(str), "split": np.full(n, split), "z": r["z"]}
    return columns | {f"label_{a}": r[a].astype(np.int64) for a in CLASSES}


class InOrder:
    """Rows [start, stop) asked in order (as write_set does) from pieces of any length."""

    def __init__(self, pieces):
        self.pieces, self.held, self.at = iter(pieces), None, 0

    def take(self, start: int, stop: int) -> dict[str, np.ndarray]:
        assert start == self.at, "partitions are asked for in order"
        while self.held is None or len(self.held["z"]) < stop - start:
            more = next(self.pieces)
            held = self.held
            self.held = (
                more if held is None else {k: np.concatenate([held[k], more[k]]) for k in more}
            )
        n, self.at = stop - start, stop
        out = {k: v[:n] for k, v in self.held.items()}
        self.held = {k: v[n:] for k, v in self.held.items()}
        return out


def build(root: Path, n_test: int, emb: int, seed: int = 0, near_dup: bool = False) -> str:
    """data/scalebench (dataset.json, labels.json, train.csv, test.csv) and weights/<run>
    (C1's partitions of a million rows, encoder.pt with trained heads, no backbone) under
    `root`; returns the run."""
    rng = np.random.default_rng(seed)
    centres = {a: rng.standard_normal((c, emb), dtype=np.float32) for a, c in CLASSES.items()}
    centres |= {f"p_{a}": rng.dirichlet(np.full(c, 2.0)) for a, c in CLASSES.items()}
    centres["topic"] = TOPIC_SCALE * rng.standard_normal((TOPICS, emb), dtype=np.float32)
    centres["words"] = np.stack(
        [rng.choice(VOCABULARY, TOPIC_WORDS, replace=False) for _ in range(TOPICS)]
    )
    labels = {a: [f"{a}_{i:02d}" for i in range(c)] for a, c in CLASSES.items()}
    data = root / "data" / NAME
    data.mkdir(parents=True, exist_ok=True)
    write_json(data / "labels.json", labels)
    write_json(
        data / DATASET_FILE,
        {
            "name": NAME,
            "description": "bench/scale.py's WikiArt-shaped synthetic database",
            "attributes": list(CLASSES),
            "classes": labels,
        },
    )
    run = default_run(NAME)
    out = run_dir(root / "weights", run)
    out.mkdir(parents=True, exist_ok=True)
    parts: dict[str, dict] = {"train": rows(TRAIN_ROWS, emb, rng, centres)}

    def pieces():  # train, then the test split a chunk at a time (never all of it in memory)
        yield _table(data, "train", parts["train"], labels, 0)
        for a in range(0, n_test, CHUNK):
            chunk = rows(min(CHUNK, n_test - a), emb, rng, centres)
            chunk = near_duplicates(chunk, rng) if near_dup else chunk  # within each chunk
            parts.setdefault("test", chunk)  # the heads' accuracy is measured on its first rows
            yield _table(data, "test", chunk, labels, a)

    plan = Plan(TRAIN_ROWS + n_test, CHUNK, {"bench": "scale", "seed": seed, "emb": emb})
    write_set(out, InOrder(pieces()).take, plan)  # C1's partitions, through C1's writer
    train = parts["train"]
    z = torch.from_numpy(train["z"][:HEAD_ROWS])
    y = {a: torch.from_numpy(train[a][:HEAD_ROWS]) for a in CLASSES}
    heads = train_heads(z, y, seed=seed)
    test = parts["test"]
    k = min(20_000, n_test)
    acc = accuracy(
        heads, torch.from_numpy(test["z"][:k]), {a: torch.from_numpy(test[a][:k]) for a in CLASSES}
    )
    config = encoder_config(NAME, "convnext_base", emb, False, labels, 224, False)
    config["backbone_absent"] = True  # E1 needs only z and the heads
    model = build_encoder(config)
    for a, h in heads.items():
        model.heads[a].load_state_dict(h.state_dict())
    save_torch(out / "encoder.pt", {"config": config, "model": model.state_dict()})
    print(f"  built N={n_test}: heads' test accuracy {acc}", flush=True)
    return run


def commands(stage: str, root: Path, queries: int, threads: int | None) -> list[str]:
    """The stage's command line on the bench root."""
    task = f"{NAME}:style"
    roots = ["--data-root", str(root / "data"), "--weights-root", str(root / "weights")]
    roots += ["--results-root", str(root / "results")]
    if threads is not None:
        roots += ["--threads", str(threads)]
    script, extra = {
        "A2": ("A2_make_queries.py", ["--num-queries", str(queries)]),
        "E1": ("E1_evaluate.py", ["--sweep", "--target-mts", "0.15", "--device", "cpu"]),
        "E2": ("E2_visualize.py", ["--device", "cpu"]),
    }[stage]
    return [sys.executable, str(ROOT / script), "--task", task, *roots, *extra]


# The stage runs under a small launcher: a child's ru_maxrss starts from the memory of the process
# that spawned it (vfork + exec keeps the parent's high-water mark), and this one holds the database.
LAUNCHER = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[2:]); _, s, u = os.wait4(p.pid, 0); "
    "open(sys.argv[1], 'w').write(str(u.ru_maxrss)); sys.exit(os.waitstatus_to_exitcode(s))"
)


def run_stage(cmd: list[str], log: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in GiB, exit code) of one stage run as a grandchild process."""
    rss = log.with_suffix(".maxrss")
    with open(log, "w") as f:
        t0 = time.perf_counter()
        code = subprocess.call(
            [sys.executable, "-c", LAUNCHER, str(rss), *cmd], cwd=ROOT, stdout=f, stderr=f
        )
        wall = time.perf_counter() - t0
    return wall, int(rss.read_text()) / 2**20, code  # ru_maxrss: KiB on Linux


def exponent(points: list[tuple[int, float]]) -> float | None:
    """b of t ∝ N^b fitted by least squares on log t against log N (None below two sizes)."""
    if len(points) < 2:
        return None
    x, y = np.log([n for n, _ in points]), np.log([t for _, t in points])
    return float(np.polyfit(x, y, 1)[0])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cores = len(os.sched_getaffinity(0))
    return f"{cpu}, {cores} cores usable, torch {torch.__version__}, Python {platform.python_version()}"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def markdown(records: list[dict], args) -> str:
    lines = [
        f"Machine: {machine()}; E = {args.emb}, {args.queries} queries, task {NAME}:style, "
        f"--threads {args.threads or 'default'}"
        + ("; database of near-duplicates." if args.near_duplicates else "."),
        "",
        "| N | stage | wall s | peak RSS GB | load before (1/5/15 min) | load after | exit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['N']:,} | {r['stage']} | {r['wall_s']:.1f} | {r['peak_rss_gb']:.2f} "
            f"| {r['load_before']} | {r['load_after']} | {r['exit']} |"
        )
    lines += ["", "| stage | exponent b (all sizes) | b between the two largest |", "|---|---|---|"]
    for stage in args.stages:
        pts = [(r["N"], r["wall_s"]) for r in records if r["stage"] == stage and r["exit"] == 0]
        b_all, b_top = exponent(pts), exponent(pts[-2:])
        fmt = lambda b: "–" if b is None else f"{b:.2f}"  # noqa: E731
        lines.append(f"| {stage} | {fmt(b_all)} | {fmt(b_top)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="database rows N")
    p.add_argument("--emb", type=int, default=256, help="embedding size E")
    p.add_argument("--queries", type=int, default=1000, help="A2 --num-queries")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of A2,E1,E2")
    p.add_argument("--threads", type=int, default=None, help="every stage's --threads")
    p.add_argument("--root", type=Path, help="build here and keep it (default: a temporary folder)")
    p.add_argument("--out", type=Path, help="also write the records as JSON here")
    p.add_argument(
        "--near-duplicates", action="store_true", help="a database of dense near-duplicate clusters"
    )
    args = p.parse_args(argv)
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    args.stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in args.stages if s not in STAGES]
    if bad or "A2" not in args.stages and "E1" in args.stages and args.root is None:
        raise SystemExit(f"error: --stages {','.join(args.stages)}: E1 needs A2's queries")
    print(machine(), flush=True)
    records = []
    for n in args.sizes:
        base = args.root or Path(tempfile.mkdtemp(prefix="bench_scale_"))
        root = base / (f"n{n}-neardup" if args.near_duplicates else f"n{n}")
        try:
            if not (root / "weights").is_dir():
                t0 = time.perf_counter()
                build(root, n, args.emb, near_dup=args.near_duplicates)
                print(f"  N={n}: data built in {time.perf_counter() - t0:.1f} s", flush=True)
            for stage in args.stages:
                before = load()
                log = root / f"{stage}.log"
                wall, rss, code = run_stage(commands(stage, root, args.queries, args.threads), log)
                rec = {"N": n, "stage": stage, "wall_s": wall, "peak_rss_gb": rss * 2**30 / 1e9}
                rec |= {"load_before": before, "load_after": load(), "exit": code}
                records.append(rec)
                print(
                    f"  N={n:>9,} {stage}: {wall:7.1f} s, peak RSS {rec['peak_rss_gb']:.2f} GB, "
                    f"load {before} → {rec['load_after']}, exit {code}",
                    flush=True,
                )
                if code:
                    print(log.read_text()[-2000:], flush=True)
        finally:
            if args.root is None:
                shutil.rmtree(base, ignore_errors=True)
    text = markdown(records, args)
    print("\n" + text)
    if args.out:
        args.out.write_text(json.dumps({"machine": machine(), "records": records}, indent=2))


if __name__ == "__main__":
    main()
