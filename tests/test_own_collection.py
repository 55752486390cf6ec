"""Your own collection, not SynthArt (issue 19): glyphs of matplotlib's fonts as a folder dataset,
`B1 --recipe small`, D1's threads, estimate and SIGINT, and searching the whole collection
(`E2 --database all`)."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

import A1_preprocess as a1
import A2_make_queries as a2
import B1_train_encoder as b1
import C1_extract_embeddings as c1
import D1_train_distill as d1
import E2_visualize as e2
from src import glyphs
from src.artifacts import load_torch
from src.cli import run_stage
from src.glyphs import write_glyphs
from src.method.student import DistillConfig
from src.tasks import SMALL_TRAINING

ROOT = Path(__file__).resolve().parents[1]
NAME = "glyphs"
RUN = f"{NAME}_{SMALL_TRAINING.backbone}_e{SMALL_TRAINING.embedding_size}_ft"
TASK = f"{NAME}:family"
STUDENT = f"student_{NAME}-family_lam1.pt"


def roots(root: Path) -> list[str]:
    return ["--data-root", str(root / "data"), "--weights-root", str(root / "weights"),
            "--results-root", str(root / "results")]  # fmt: skip


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """README's own-images commands on the glyphs, B1 with `--recipe small` (one epoch)."""
    root = tmp_path_factory.mktemp("own")
    source = write_glyphs(root / "source", characters=string.ascii_uppercase + string.digits)
    a1.main(["--dataset", "folder", "--source", str(source), "--name", NAME, *roots(root)])
    b1.main(["--dataset", NAME, "--recipe", "small", "--epochs", "1", "--image-size", "32",
             "--device", "cpu", *roots(root)])  # fmt: skip
    c1.main(["--dataset", NAME, "--device", "cpu", *roots(root)])
    a2.main(["--task", TASK, "--num-queries", "10", *roots(root)])
    d1.main(["--task", TASK, "--epochs", "2", "--device", "cpu", *roots(root)])
    return root


def test_the_small_recipe_trains_any_dataset_and_records_its_settings(chain):
    conf = json.loads((chain / "weights" / RUN / "config.json").read_text())
    recipe = conf["recipe"]
    for key in ("backbone", "pretrained", "lr", "weight_decay", "schedule", "warmup_epochs"):
        assert recipe[key] == getattr(SMALL_TRAINING, key), key
    assert recipe["label_smoothing"] == SMALL_TRAINING.label_smoothing > 0
    assert recipe["flips"] == SMALL_TRAINING.flips  # the recipe's, recorded
    assert recipe["epochs"] == 1 and recipe["image_size"] == 32  # overrides still apply
    config = load_torch(chain / "weights" / RUN / "encoder.pt", "B1")["config"]
    assert config["flips"] == SMALL_TRAINING.flips  # what C1, E2 and --resume read
    # your collection is searched whole: C1 embeds its train images as they are
    metrics = json.loads((chain / "weights" / RUN / "metrics.json").read_text())
    assert metrics["train_transform"] == "test"


def a_train_picture(chain: Path) -> tuple[str, str, Path]:
    """(image key, family, the source file) of the first train image."""
    row = pd.read_csv(chain / "data" / NAME / "train.csv", dtype=str).iloc[0]
    return row["image"], row["family"], chain / "source" / row["image"].removeprefix("images/")


def search(chain: Path, database: str, picture: Path, family: str) -> dict:
    # a high λ keeps the searched embedding at the picture's: its nearest images come first
    e2.main(["--task", TASK, "--image", str(picture), "--condition", f"family={family}",
             "--lambda", "100", "--database", database, "--device", "cpu", *roots(chain)])  # fmt: skip
    suffix = "_all" if database == "all" else ""
    figs = chain / "results" / RUN / f"{NAME}-family" / "figures"
    assert (figs / f"search_{picture.stem}{suffix}.png").is_file()
    return json.loads((figs / f"search_{picture.stem}{suffix}.json").read_text())


def test_e2_searches_the_whole_collection_with_database_all(chain):
    key, family, picture = a_train_picture(chain)
    everything = search(chain, "all", picture, family)
    assert everything["database"] == "all"
    first = everything["results"][0]
    assert first["image"] == key and first["split"] == "train"  # the picture itself, from train
    protocol = search(chain, "test", picture, family)
    assert protocol["database"] == "test"
    assert key not in {r["image"] for r in protocol["results"]}  # the test split only
    assert "split" not in protocol["results"][0]


def test_e2_grids_over_the_whole_collection_are_named_and_recorded(chain):
    e2.main(["--task", TASK, "--query-id", "0", "--database", "all", "--device", "cpu",
             *roots(chain)])  # fmt: skip
    figs = chain / "results" / RUN / f"{NAME}-family" / "figures"
    assert (figs / "results_q0_all.png").is_file() and (figs / "fig5_q0_all.png").is_file()
    assert not (figs / "results_q0.png").exists()  # the protocol's grid is a separate file
    assert json.loads((figs / "config.json").read_text())["database"] == "all"
    assert "train + test (the whole collection)" in (figs / "E2.log").read_text()
    # REPORT.md's settings name what the small recipe changed, not only the authors' keys
    report = (chain / "results" / RUN / "REPORT.md").read_text()
    assert "optimizer = adamw" in report and f"flips = {SMALL_TRAINING.flips}" in report
    assert "schedule = cosine" in report and "label_smoothing = " in report


def test_d1_runs_one_thread_on_a_cpu(chain, monkeypatch):
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    d1.main(["--task", TASK, "--epochs", "1", "--lambda", "3", "--device", "cpu", *roots(chain)])
    assert threads == [1]


def test_d1_estimates_its_time_on_a_cpu_and_warns_past_ten_minutes(caplog):
    settings = DistillConfig(epochs=49)
    estimate = d1.cpu_time_estimate(torch.device("cpu"), settings, n=3100)  # 7 batches an epoch
    with caplog.at_level(logging.INFO, logger="src"):
        estimate(2.0)  # 2 s a batch × 7 × 49 ≈ 11 min
        estimate(0.1)
    (warning, info) = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert warning[0] == logging.WARNING and "\n" not in warning[1]
    assert warning[1].startswith("WARNING: D1 on the CPU: about 11 min for 49 epochs")
    assert "pass fewer --epochs" in warning[1] and "--device cuda" in warning[1]
    assert info == (
        logging.INFO,
        "D1 on the CPU: about 34 s for 49 epochs of 3100 train embeddings (0.10 s/step over "
        "the first steps)",
    )
    assert d1.cpu_time_estimate(torch.device("cuda"), settings, n=3100) is None


SPY_TORCH = """
import importlib.abc, os, sys
seen = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
sys.meta_path.insert(0, Spy())
import {stages}
print(seen[0])
"""


@pytest.mark.parametrize(("given", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_stages_let_torch_threads_sleep_while_they_wait(given, seen):
    """On a busy CPU, spinning OpenMP threads made D1 37× slower: every stage sets the passive
    wait policy before torch loads (a policy the user set is kept)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env |= {"PYTHONPATH": str(ROOT)} | ({"OMP_WAIT_POLICY": given} if given else {})
    stages = ", ".join(p.stem for p in sorted(ROOT.glob("[A-E][12]_*.py")))
    code = SPY_TORCH.format(stages=stages)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [seen]


def ignore_sigint() -> None:
    """What a shell script does to a background job (`python D1_train_distill.py … &`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_stops_d1_within_an_epoch_and_keeps_the_old_student(chain, tmp_path):
    """A real SIGINT to a running D1 started as a script's background job (SIGINT ignored): exit
    130 within seconds, mid-epoch, and the student D1 wrote before, its config and its log CSV
    byte for byte as they were."""
    wdir = chain / "weights" / RUN
    files = [STUDENT, STUDENT.replace(".pt", ".json"), STUDENT.replace(".pt", "_log.csv")]
    before = {f: (wdir / f).read_bytes() for f in files}
    cmd = [sys.executable, str(ROOT / "D1_train_distill.py"), "--task", TASK, "--epochs",
           "100000", "--batch-size", "64", "--device", "cpu", *roots(chain)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)  # fmt: skip
    try:
        for line in proc.stdout:  # the first epoch's end: D1 is distilling
            if line.startswith("D1 epoch 1/100000"):
                break
        time.sleep(0.5)  # somewhere in epoch 2 or 3 (4 batches each)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert time.monotonic() - sent < 30
    assert "interrupted" in err.strip().splitlines()[-1]
    assert {f: (wdir / f).read_bytes() for f in files} == before
    assert not [p for p in wdir.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_scripts_glyphs_writes_a_new_folder_dataset_and_overwrites_nothing(
    tmp_path, capsys, monkeypatch
):
    """scripts/glyphs.py, the collection README's own-images commands can be tried on."""
    from scripts import glyphs as script

    out = tmp_path / "glyphs"
    assert run_stage(script.main, [str(out), "--renders", "2", "--size", "16"]) == 0
    labels = pd.read_csv(out / "labels.csv", dtype=str)
    assert list(labels.columns) == ["image", "family", "style", "tags"]
    assert len(labels) == 19 * 62 * 2 and labels["image"].is_unique
    assert set(labels["family"]) == {"sans", "mono", "serif", "stix", "cm"}
    assert set(labels["style"]) == {"regular", "bold", "italic", "bolditalic"}
    assert labels["tags"].str.fullmatch(r"char_[a-z0-9]\|(upper|lower|digit)").all()
    assert all(Image.open(out / p).size == (16, 16) for p in labels["image"][::97])
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    # a folder that holds anything is refused in one line and left as it was
    assert run_stage(script.main, [str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "glyphs already exists and is not empty" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == written
    # a run that fails half-way (a full disk) leaves no folder, temporary or lock behind
    real, calls = glyphs.render, []

    def fills_the_disk(*a):
        calls.append(1)
        if len(calls) == 50:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a)

    monkeypatch.setattr(glyphs, "render", fills_the_disk)
    assert run_stage(script.main, [str(tmp_path / "half")]) == 2
    assert "the disk is full" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["glyphs"]
