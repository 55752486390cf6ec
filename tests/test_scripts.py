"""The orchestration scripts (make demo / make reproduce): which stage runs with which flags.

A stand-in Python records every call instead of running the stages, so SEEDS can be checked in
seconds: seed 0 is the run itself, seeds 1..N-1 are `<run>-seed<s>` runs evaluated before E2.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fake_python(tmp_path: Path) -> tuple[Path, Path]:
    """An executable that logs its argv (one line a call) and runs `-c`, `-m` and stdin for real."""
    calls = tmp_path / "calls.txt"
    exe = tmp_path / "python"
    exe.write_text(
        "#!/usr/bin/env bash\n"
        f'if [ "$1" = "-c" ] || [ "$1" = "-" ] || [ "$1" = "-m" ]; then exec {sys.executable} "$@"; fi\n'
        f'echo "$*" >> "{calls}"\n'
    )
    exe.chmod(0o755)
    return exe, calls


def run_script(tmp_path: Path, script: str, *args: str, **env: str) -> tuple[int, list[str], str]:
    exe, calls = fake_python(tmp_path)
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / script), str(exe), *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = calls.read_text().splitlines() if calls.exists() else []
    return proc.returncode, lines, proc.stderr


RUN = "synthart_convnext_atto_e64_ft"


def test_demo_with_one_seed_names_its_run_everywhere(tmp_path):
    rc, calls, err = run_script(tmp_path, "demo.sh", SEEDS="1")
    assert rc == 0, err
    b1 = [c for c in calls if c.startswith("B1_")]
    assert b1 == [f"B1_train_encoder.py --dataset synthart --run {RUN} --seed 0"]
    assert all(f"--run {RUN}" in c for c in calls if c.split()[0][:2] in ("C1", "D1", "E1", "E2"))


def test_demo_with_three_seeds_trains_and_evaluates_each_before_e2(tmp_path):
    rc, calls, err = run_script(tmp_path, "demo.sh", SEEDS="3")
    assert rc == 0, err
    runs = [RUN, f"{RUN}-seed1", f"{RUN}-seed2"]
    b1 = [c for c in calls if c.startswith("B1_")]
    assert b1 == [
        f"B1_train_encoder.py --dataset synthart --run {r} --seed {s}" for s, r in enumerate(runs)
    ]
    for r in runs:  # every seed's run is embedded, distilled and evaluated for both tasks
        assert f"C1_extract_embeddings.py --run {r}" in calls
        for t in ("synthart-style", "synthart-multi"):
            assert f"E1_evaluate.py --task {t} --run {r} --sweep" in calls
    first_e2 = next(i for i, c in enumerate(calls) if c.startswith("E2_"))
    last_e1 = max(i for i, c in enumerate(calls) if c.startswith("E1_"))
    assert last_e1 < first_e2  # the report of the base run finds every seed's results
    assert all(f"--run {RUN}" in c and "seed" not in c for c in calls if c.startswith("E2_"))


@pytest.mark.parametrize("seeds", ["0", "-1", "two", "1;rm"])
def test_bad_seeds_are_refused_before_anything_runs(tmp_path, seeds):
    rc, calls, err = run_script(tmp_path, "demo.sh", SEEDS=seeds)
    assert rc == 2 and calls == [] and "SEEDS must be a whole number" in err


def test_reproduce_with_two_seeds(tmp_path):
    rc, calls, err = run_script(tmp_path, "reproduce.sh", "cub", SEEDS="2")
    assert rc == 0, err
    run = "cub_convnext_base_e256_ft"
    b1 = [c for c in calls if c.startswith("B1_")]
    assert b1 == [
        f"B1_train_encoder.py --dataset cub --run {run} --seed 0",
        f"B1_train_encoder.py --dataset cub --run {run}-seed1 --seed 1",
    ]
    assert f"E1_evaluate.py --task cub-bird --run {run}-seed1 --sweep --target-mts 0.15" in calls
    assert calls[-1] == f"E2_visualize.py --task cub-bird --run {run}"


def test_reproduce_refuses_a_dataset_without_paper_tasks(tmp_path):
    rc, calls, err = run_script(tmp_path, "reproduce.sh", "synthart")
    assert rc == 2 and calls == []
    assert err.strip() == "error: DATASET must be one of cub, apy, wikiart (got 'synthart')"


def test_make_explore_passes_the_task_as_one_argument(tmp_path):
    # TASK reaches E3 through the environment: spaces and shell syntax stay one argument
    exe, calls = fake_python(tmp_path)
    task = "shop:colour;  touch pwned"  # two spaces survive only as one argument
    proc = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "explore", f"PY={exe}", f"TASK={task}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert calls.read_text().splitlines() == [f"E3_explore.py --task {task}"]
    assert not (REPO / "pwned").exists()
    subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "explore", f"PY={exe}"], cwd=REPO, timeout=60
    )
    assert calls.read_text().splitlines()[-1] == "E3_explore.py --task synthart-style"
