"""`make gpu-check`: every CUDA path of the suite in one command (≤ 10 minutes on one GPU).

    python scripts/gpu_check.py               # on a machine with CUDA → bench/RESULTS-<gpu>.md
    python scripts/gpu_check.py --dry-run --out /tmp/r.md   # the same steps on the CPU, tiny sizes

Steps, each a row of the results file with its figure beside its target (PASS/FAIL):
1. `pytest -m cuda`: CPU/CUDA agreement of search (both stop rules), retrieval, student, E1;
   an autocast step (bf16, fp16 + GradScaler); channels_last. Target: all pass, none skipped.
2. `bench/backward_search.py --device cuda` at N = 10,000, E = 256. Target ≤ 0.01 ms/query.
3. `bench/train_throughput.py --device cuda`, convnext_base at 224 px (bf16) on SynthArt, loader
   workers swept. Target: loader ≥ 90 % of synthetic-input throughput; reports the workers needed.
4. SynthArt at 224 px: A1, A2, a one-epoch B1 with convnext_base (`--pretrained none`, AMP),
   C1, E1. Target: every stage exits 0.
Everything is written under a temporary folder (--data-root/--weights-root/--results-root),
never the user's data/, weights/ or results/; only the results file stays.
Without CUDA it refuses in one line, exit 2 (`--dry-run` runs it on the CPU instead).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 600  # the whole check; each step gets its cap or what is left, whichever is less

# Targets (issue 11)
SEARCH_MS_PER_QUERY = 0.01  # at N = 10,000, E = 256
LOADER_SHARE = 0.9  # loader img/s ÷ synthetic-input img/s


@dataclass(frozen=True)
class Sizes:
    """What each step runs: the GPU check's sizes, or tiny ones for --dry-run on the CPU."""

    device: str
    pytest_args: tuple[str, ...]
    search_n: int
    emb: int  # the search bench's E and B1's embedding size
    search_extra: tuple[str, ...]
    backbone: str
    image_size: int
    num_images: int
    num_queries: int
    throughput_extra: tuple[str, ...]
    b1_extra: tuple[str, ...]


GPU = Sizes(
    device="cuda",
    pytest_args=(),
    search_n=10_000,
    emb=256,
    search_extra=(),
    backbone="convnext_base",
    image_size=224,
    num_images=1500,  # 300 test images: 1,500 (image, other style) pairs to draw queries from
    num_queries=500,
    throughput_extra=("--workers-sweep", "0,2,4,8,12"),
    b1_extra=(),
)
DRY = Sizes(
    device="cpu",
    pytest_args=("tests/test_devices.py",),  # collect one file: the CUDA tests skip on the CPU
    search_n=20,
    emb=16,
    search_extra=("--ref-queries", "2", "--head-steps", "10", "--retrieval-size", "10,200"),
    backbone="convnext_atto",
    image_size=32,
    num_images=400,  # A2 needs ≥ 10 test images of a target class (6 styles)
    num_queries=10,
    throughput_extra=(
        *("--workers-sweep", "0,1", "--steps", "1", "--batch", "4"),
        *("--image-size", "32"),
    ),
    b1_extra=("--batch-size", "32", "--workers", "0"),
)


@dataclass
class Row:
    """One line of the results file."""

    check: str
    figure: str
    target: str
    ok: bool | None  # None: a figure reported without a target

    @property
    def status(self) -> str:
        return "–" if self.ok is None else ("PASS" if self.ok else "FAIL")


@dataclass
class Step:
    """A finished subprocess: exit code (None when it ran out of time), seconds, output tail."""

    rc: int | None
    seconds: float
    tail: str

    def failure(self) -> str:
        if self.rc is None:
            return f"timed out after {self.seconds:.0f} s"
        last = [ln for ln in self.tail.strip().splitlines() if ln.strip()]
        return f"exit {self.rc}: {last[-1][:160] if last else 'no output'}"


class Runner:
    """Runs the steps' commands under one shared time budget, echoing their output."""

    def __init__(self, budget: float):
        self.deadline = time.monotonic() + budget

    def __call__(self, args: list[str], cap: float) -> Step:
        left = self.deadline - time.monotonic()
        timeout = max(1.0, min(cap, left))
        print(f"\n$ {' '.join(args)}  (≤ {timeout:.0f} s)", flush=True)
        t0 = time.monotonic()
        try:
            p = subprocess.run(
                args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            return Step(None, time.monotonic() - t0, out[-4000:])
        out = p.stdout + p.stderr
        print(out[-3000:], flush=True)
        return Step(p.returncode, time.monotonic() - t0, out[-4000:])


def stage(script: str, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / script), *args]


def pytest_counts(text: str) -> dict[str, int]:
    """{'passed': 3, 'skipped': 1, …} from pytest's summary line."""
    counts: dict[str, int] = {}
    for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed)", text):
        counts[word.rstrip("s") if word.startswith("error") else word] = int(n)
    return counts


def check_pytest(run: Runner, sz: Sizes) -> list[Row]:
    step = run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", *sz.pytest_args],
        cap=240,
    )
    c = pytest_counts(step.tail)
    figure = ", ".join(f"{v} {k}" for k, v in c.items() if k != "deselected") or step.failure()
    ok = step.rc == 0 and c.get("passed", 0) > 0 and not c.get("skipped")
    return [Row("pytest -m cuda", figure, "all pass, none skipped", ok)]


def check_search(run: Runner, sz: Sizes, tmp: Path) -> list[Row]:
    out = tmp / "search.json"
    step = run(
        stage(
            "bench/backward_search.py",
            "--device",
            sz.device,
            "--sizes",
            str(sz.search_n),
            "--emb",
            str(sz.emb),
            "--out",
            str(out),
            *sz.search_extra,
        ),
        cap=120,
    )
    if step.rc != 0 or not out.exists():
        return [Row("Backward Search", step.failure(), f"≤ {SEARCH_MS_PER_QUERY} ms/query", False)]
    found = json.loads(out.read_text())
    rows = []
    for r in found["search"]:
        where = f"Backward Search, {r['conditions']}, N = {r['N']:,}, E = {r['E']}"
        ms = r["ms_per_query"]
        rows.append(
            Row(
                f"{where}",
                f"{ms:.4f} ms/query",
                f"≤ {SEARCH_MS_PER_QUERY} ms/query",
                ms <= SEARCH_MS_PER_QUERY,
            )
        )
        rows.append(
            Row(
                f"{where}: same iterations as one query at a time on the CPU",
                f"{r['same_iterations_as_ref']:.0%} of {r['ref_queries_timed']}",
                "–",
                None,
            )
        )
    ret = found["retrieval"]
    rows.append(
        Row(
            f"retrieval + metrics, {ret['queries']:,} × {ret['database']:,}",
            f"{ret['seconds']:.3f} s",
            "–",
            None,
        )
    )
    return rows


def check_throughput(run: Runner, sz: Sizes, data_root: Path, tmp: Path) -> list[Row]:
    out = tmp / "throughput.json"
    step = run(
        stage(
            "bench/train_throughput.py",
            "--device",
            sz.device,
            "--backbones",
            sz.backbone,
            "--precision",
            "bf16" if sz.device == "cuda" else "fp32",
            "--data-root",
            str(data_root),
            "--json",
            str(out),
            *sz.throughput_extra,
        ),
        cap=150,
    )
    what = f"B1 loader, {sz.backbone} at {sz.image_size} px"
    if step.rc != 0 or not out.exists():
        return [Row(what, step.failure(), f"≥ {LOADER_SHARE:.0%} of synthetic input", False)]
    r = json.loads(out.read_text())[0]
    swept = ", ".join(f"{s['workers']}: {s['loader/synthetic']:.2f}" for s in r["sweep"])
    share = r["loader/synthetic"]
    return [
        Row(
            f"B1 step, {sz.backbone} at {r['px']} px, batch {r['batch']}, {r['precision']}, "
            "synthetic input",
            f"{r['synthetic img/s']:.1f} img/s",
            "–",
            None,
        ),
        Row(
            f"{what}: loader ÷ synthetic (workers: share — {swept})",
            f"{share:.2f} with {r['loader workers']} workers",
            f"≥ {LOADER_SHARE}",
            share >= LOADER_SHARE,
        ),
    ]


def check_pipeline(run: Runner, sz: Sizes, roots: list[str]) -> list[Row]:
    from src.artifacts import run_name

    run_id = run_name("synthart", sz.backbone, sz.emb, frozen=False)
    dev = ("--device", sz.device)
    b1 = [
        "--dataset",
        "synthart",
        "--backbone",
        sz.backbone,
        "--image-size",
        str(sz.image_size),
        "--embedding-size",
        str(sz.emb),
        "--epochs",
        "1",
        "--pretrained",
        "none",
        *sz.b1_extra,
        *dev,
        "--precision",  # AMP; the dry run takes the same autocast path on the CPU
        "bf16",
    ]
    steps = [
        ("B1 (1 epoch, bf16)", stage("B1_train_encoder.py", *b1, *roots), 150),
        ("C1", stage("C1_extract_embeddings.py", "--run", run_id, *dev, *roots), 60),
        (
            "E1",
            stage("E1_evaluate.py", "--task", "synthart-style", "--run", run_id, *dev, *roots),
            90,
        ),
    ]
    rows = []
    for name, args, cap in steps:
        step = run(args, cap)
        ok = step.rc == 0
        figure = f"exit 0 in {step.seconds:.0f} s" if ok else step.failure()
        rows.append(
            Row(f"SynthArt {sz.image_size} px, {sz.backbone}: {name}", figure, "exit 0", ok)
        )
        if not ok:
            break  # the next stage needs this one's output
    return rows


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def default_out(name: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")
    return ROOT / "bench" / f"RESULTS-{slug}.md"


def markdown(rows: list[Row], machine: str, dry: bool, seconds: float) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# GPU check: {machine}", ""]
    if dry:
        lines += [
            "**Dry run on the CPU with tiny sizes** (`scripts/gpu_check.py --dry-run`): it shows "
            "the check runs end to end; its figures say nothing about a GPU.",
            "",
        ]
    lines += [
        f"`make gpu-check`, {when}, {seconds:.0f} s in all (budget {BUDGET_S} s).",
        "",
        "| check | figure | target | status |",
        "|---|---|---|---|",
    ]
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731 — an error line may hold a "|"
    lines += [f"| {cell(r.check)} | {cell(r.figure)} | {r.target} | {r.status} |" for r in rows]
    passed = sum(r.ok is True for r in rows)
    failed = sum(r.ok is False for r in rows)
    lines += ["", f"{passed} PASS, {failed} FAIL."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="on the CPU with tiny sizes (tests)")
    p.add_argument("--out", type=Path, help="results file (default: bench/RESULTS-<gpu name>.md)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (for a look)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            "error: no CUDA device (torch sees none): make gpu-check needs a GPU; "
            "scripts/gpu_check.py --dry-run runs its steps on the CPU",
            file=sys.stderr,
        )
        return 2
    sz = DRY if args.dry_run else GPU
    machine = "CPU (dry run)" if args.dry_run else gpu_name()
    out = args.out or default_out(machine)
    t0 = time.monotonic()
    run = Runner(BUDGET_S)
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    data, weights, results = tmp / "data", tmp / "weights", tmp / "results"
    roots = [
        "--data-root",
        str(data),
        "--weights-root",
        str(weights),
        "--results-root",
        str(results),
    ]
    try:
        rows = check_pytest(run, sz)
        rows += check_search(run, sz, tmp)
        prep = [
            (
                "A1",
                stage(
                    "A1_preprocess.py",
                    "--dataset",
                    "synthart",
                    "--num-images",
                    str(sz.num_images),
                    "--image-size",
                    str(sz.image_size),
                    *roots,
                ),
            ),
            (
                "A2",
                stage(
                    "A2_make_queries.py",
                    "--task",
                    "synthart-style",
                    "--num-queries",
                    str(sz.num_queries),
                    *roots,
                ),
            ),
        ]
        for name, cmd in prep:
            step = run(cmd, cap=90)
            if step.rc != 0:
                rows.append(
                    Row(f"SynthArt {sz.image_size} px: {name}", step.failure(), "exit 0", False)
                )
                break
        else:
            rows += check_throughput(run, sz, data, tmp)
            rows += check_pipeline(run, sz, roots)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    text = markdown(rows, machine, args.dry_run, time.monotonic() - t0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(text, encoding="utf-8")
    os.replace(tmp_out, out)  # whole or not at all
    print("\n" + text + f"\nwritten: {out}")
    return 0 if all(r.ok is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
