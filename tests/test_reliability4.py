"""Issue 33, the fourth round of hostile input: the newest stage features under stale artifacts,
damaged files and races. One test (or a few) per row of the issue's table, rows 2–10, then its
minor items; each failed on the code before the fix.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import B1_train_encoder
import D1_train_distill
import E1_evaluate
import E2_visualize
import E3_explore
from src.artifacts import load_npz, read_json, results_dir, save_npz
from src.atomic import atomic_dir, atomic_path
from src.cli import run_stage
from src.errors import SuiteError
from src.partitions import Plan, open_partitions, write_set
from src.report import document
from src.tasks import SMALL_TRAINING, Recipe
from src.training.checkpoint import check_resumable, full_recipe
from tests._pipeline import Pipeline, as_partitions, build_pipeline, copy_pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A tiny pipeline (A1 → C1 artifacts), built once; tests work on copies."""
    return build_pipeline(tmp_path_factory.mktemp("template"), "synthart").root


@pytest.fixture
def pipe(template, tmp_path) -> Pipeline:
    return copy_pipeline(template, tmp_path / "p")


def argv(p: Pipeline, task: str = "synthart-style", *extra: str) -> list[str]:
    return [*p.argv("--task", task, "--device", "cpu"), *extra]


def one_error_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def picture(p: Pipeline) -> Path:
    path = p.root / "photo.png"
    Image.new("RGB", (32, 32), (120, 60, 30)).save(path)
    return path


def npz(p: Pipeline) -> Path:
    return p.weights_root / p.run / "embeddings.npz"


# ---------------------------------------------------------------------------------------------
# Row 2: the data grew after C1 (labels.csv got pictures, A1 re-ran, C1 did not)


def grow(p: Pipeline, split: str, n: int = 3) -> list[str]:
    """Add n tagged images to <split>.csv (as A1 would after labels.csv grew), not embedded."""
    path = p.data_root / p.dataset / f"{split}.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    new = df.iloc[:n].copy()
    new["image"] = [f"images/{split}/new_{k}.png" for k in range(n)]
    for src, dst in zip(df["image"].iloc[:n], new["image"], strict=True):
        shutil.copy(p.data_root / p.dataset / src, p.data_root / p.dataset / dst)
    pd.concat([df, new]).to_csv(path, index=False)
    return new["image"].tolist()


def test_database_all_refuses_images_c1_did_not_embed(pipe, capsys):
    added = grow(pipe, "train")
    e2 = argv(pipe, "synthart-style", "--image", str(picture(pipe)), "--condition", "style=dots",
              "--database", "all")  # fmt: skip
    assert run_stage(E2_visualize.main, e2) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "3 of the 99 tagged images of train.csv have no embedding" in err, err
    assert added[0] in err and "re-run C1_extract_embeddings.py" in err
    assert not (pipe.results_root / pipe.run).exists()  # nothing written


@pytest.mark.parametrize("written", ["embeddings.npz", "partitions"])
def test_the_test_database_refuses_images_c1_did_not_embed(pipe, capsys, written, monkeypatch):
    if written == "partitions":  # C1's set as today's C1 writes it: the rows read from its columns
        import src.partitions

        # its "published" line not to an earlier stage's log handler (a closed captured stream)
        monkeypatch.setattr(src.partitions, "log", logging.getLogger("quiet.partitions"))
        logging.getLogger("quiet.partitions").propagate = False
        as_partitions(pipe, 37)
    grow(pipe, "test", 2)
    assert run_stage(E1_evaluate.main, argv(pipe, "synthart-style", "--methods", "knn")) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "2 of the 98 tagged images of test.csv have no embedding" in err
    where = (
        pipe.weights_root
        / pipe.run
        / ("embeddings.npz" if written != "partitions" else "embeddings")
    )
    assert f"in {where} (e.g." in err


# ---------------------------------------------------------------------------------------------
# Row 3: an embeddings.npz without train rows (trimmed, or a release without them)


def drop_train_rows(p: Pipeline) -> None:
    arrays = load_npz(npz(p), "C1")
    keep = arrays["split"] == "test"
    save_npz(npz(p), **{k: v[keep] for k, v in arrays.items()})


def test_database_all_names_the_missing_train_split(pipe, capsys):
    drop_train_rows(pipe)
    e2 = argv(pipe, "synthart-style", "--image", str(picture(pipe)), "--condition", "style=dots",
              "--database", "all")  # fmt: skip
    assert run_stage(E2_visualize.main, e2) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "embeddings.npz holds no train embeddings" in err and "train.csv" in err
    assert "--database test" in err


def test_d1_without_train_rows_names_the_embeddings_and_c1(pipe, capsys):
    drop_train_rows(pipe)
    assert run_stage(D1_train_distill.main, argv(pipe, "synthart-style", "--epochs", "1")) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"{npz(pipe)} holds 0 train embeddings" in err and "re-run C1_extract_embeddings" in err
    assert not list((pipe.weights_root / pipe.run).glob("student_*"))


def test_e1_leaves_the_centroid_shift_out_without_train_rows(pipe, capsys):
    drop_train_rows(pipe)
    assert run_stage(E1_evaluate.main, argv(pipe, "synthart-style")) == 0
    out = capsys.readouterr().out
    warned = [line for line in out.splitlines() if "class-centroid shift left out" in line]
    assert len(warned) == 1 and "holds no train embeddings" in warned[0]
    metrics = read_json(pipe.results_root / pipe.run / "synthart-style" / "metrics.json", "E1")
    assert "centroid_shift" not in metrics["methods"] and "knn" in metrics["methods"]
    # asked for by name, it is refused in one line before anything is written
    shutil.rmtree(pipe.results_root)
    e1 = argv(pipe, "synthart-style", "--methods", "knn,centroid_shift")
    assert run_stage(E1_evaluate.main, e1) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "--methods centroid_shift: the class-centroid shift needs the train split's" in err
    assert not pipe.results_root.exists()


# ---------------------------------------------------------------------------------------------
# Rows 4, 5 and 9: one B1 run with a 1-d embedding and a warm-up longer than the run


B1_RUN = "e1_run"


@pytest.fixture(scope="module")
def trained(template, tmp_path_factory) -> tuple[Pipeline, str]:
    """The template with a B1 run of embedding size 1 (1 epoch, --warmup-epochs 50), its C1,
    and B1's stdout."""
    p = copy_pipeline(template, tmp_path_factory.mktemp("trained") / "p", B1_RUN)
    b1 = [*p.argv(), "--dataset", "synthart", "--image-size", "32", "--embedding-size", "1",
          "--batch-size", "8", "--epochs", "1", "--warmup-epochs", "50", "--checkpoint-every",
          "1", "--device", "cpu"]  # fmt: skip
    log = subprocess.run(
        [sys.executable, "B1_train_encoder.py", *b1], cwd=ROOT, capture_output=True, text=True
    )
    assert log.returncode == 0, log.stderr
    import C1_extract_embeddings

    c1 = [*p.argv(), "--device", "cpu"]
    assert run_stage(C1_extract_embeddings.main, c1) == 0
    return p, log.stdout


def test_b1_warns_when_the_warm_up_outlasts_the_run(trained):
    _, out = trained
    warned = [line for line in out.splitlines() if "--warmup-epochs 50" in line]
    assert len(warned) == 1, out
    assert "climbs to 2% of --lr" in warned[0] and "pass fewer --warmup-epochs" in warned[0]
    from src.training.engine import schedule_warnings

    assert schedule_warnings(SMALL_TRAINING) == []  # the recipes people run: no warning


def resume_argv(p: Pipeline, *extra: str) -> list[str]:
    return [*p.argv(), "--dataset", "synthart", "--image-size", "32", "--embedding-size", "1",
            "--batch-size", "8", "--epochs", "2", "--warmup-epochs", "50", "--checkpoint-every",
            "1", "--device", "cpu", "--resume", *extra]  # fmt: skip


def run_files(folder: Path) -> dict[str, bytes]:
    """Every file under a run folder (C1's partitions are a folder of folders) and its bytes."""
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


def test_b1_resume_refuses_other_weights_before_downloading_them(trained, capsys, monkeypatch):
    import src.training.loop as loop

    p, _ = trained
    before = run_files(p.weights_root / B1_RUN)

    def no_download(*a, **k):
        raise AssertionError("B1 built the encoder (downloading its weights) before the check")

    monkeypatch.setattr(loop, "build_encoder", no_download)
    monkeypatch.setattr(loop, "load_split", no_download)
    weights = p.root / "some.pth"  # never read: the checkpoint is checked first
    weights.write_bytes(b"")
    assert run_stage(B1_train_encoder.main, resume_argv(p, "--pretrained", str(weights))) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"--pretrained: checkpoint 'none' vs flags '{weights}'" in err
    assert run_files(p.weights_root / B1_RUN) == before


def test_b1_resume_refuses_another_recipes_crop(trained):
    """--recipe paper (RandomResizedCrop) resuming a run without it, every flag else equal."""
    import torch

    p, _ = trained
    ck = torch.load(p.weights_root / B1_RUN / "checkpoint.pt", weights_only=True)
    recipe = Recipe(**full_recipe(ck["recipe"]))
    check_resumable(ck, ck["config"], recipe, Path("checkpoint.pt"))  # the same: accepted
    crop = replace(recipe, random_resized_crop=True)
    with pytest.raises(SuiteError, match=r"random_resized_crop \(--recipe\): checkpoint False"):
        check_resumable(ck, {**ck["config"], "random_resized_crop": True}, crop, Path("c.pt"))


def test_e2_draws_a_one_dimensional_embedding(trained, capsys):
    p, _ = trained
    e = [*p.argv("--task", "synthart-style", "--device", "cpu")]
    assert run_stage(E1_evaluate.main, [*e, "--methods", "knn"]) == 0
    assert run_stage(E2_visualize.main, [*e, "--query-id", "0"]) == 0, capsys.readouterr().err
    figs = p.results_root / B1_RUN / "synthart-style" / "figures"
    assert (figs / "fig5_q0.png").stat().st_size > 0 and (figs / "results_q0.png").exists()


# ---------------------------------------------------------------------------------------------
# Row 6 and the minor NaN: a damaged metrics.json is one line naming it, from every reader


DAMAGES = ['"abc"', "-3", "[1, 2]", "NaN", "true"]


def damage_lambda(p: Pipeline, value: str) -> Path:
    path = p.results_root / p.run / "synthart-style" / "metrics.json"
    text = path.read_text()
    path.write_text(re.sub(r'^  "lambda": [^,]+,', f'  "lambda": {value},', text, flags=re.M))
    assert f'"lambda": {value},' in path.read_text()
    return path


@pytest.fixture
def evaluated(pipe, capsys):
    assert run_stage(E1_evaluate.main, argv(pipe, "synthart-style", "--methods", "knn")) == 0
    capsys.readouterr()
    return pipe


@pytest.mark.parametrize("value", DAMAGES)
def test_every_reader_names_a_damaged_metrics_json(value, evaluated, capsys, monkeypatch):
    p = evaluated
    path = damage_lambda(p, value)
    assert run_stage(E2_visualize.main, argv(p, "synthart-style", "--query-id", "0")) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"{path} is damaged (lambda is" in err and "re-run E1_evaluate.py" in err

    def served(*a, **k):
        raise AssertionError("E3 served a run whose metrics.json is damaged")

    monkeypatch.setattr(E3_explore, "serve", served)
    assert run_stage(E3_explore.main, argv(p, "synthart-style", "--port", "0")) == 2
    assert f"{path} is damaged" in one_error_line(capsys.readouterr().err)
    with pytest.raises(SuiteError, match="metrics.json is damaged"):
        document.build_report(p.results_root, p.weights_root, p.data_root, p.run, "synthart")


def test_a_method_value_that_is_not_a_number_is_one_line(evaluated, capsys):
    path = evaluated.results_root / evaluated.run / "synthart-style" / "metrics.json"
    record = json.loads(path.read_text())
    record["methods"]["knn"]["paper_map@10"] = "high"
    path.write_text(json.dumps(record))
    assert run_stage(E2_visualize.main, argv(evaluated, "synthart-style", "--query-id", "0")) == 2
    assert "methods.knn.paper_map@10 holds 'high'" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------
# Row 7: REPORT.md from one consistent set of files while E1 replaces another task's folder


def test_report_is_rebuilt_when_e1_swaps_a_task_during_it(pipe, monkeypatch):
    """A deterministic interleaving: E1 swaps synthart-multi's folder in after the report read
    its metrics.json and before it read its tables (issue 33: 3 of 6,464 reports mixed them)."""
    e1 = ["--methods", "knn,backward_search"]
    for task in ("synthart-style", "synthart-multi"):
        assert run_stage(E1_evaluate.main, argv(pipe, task, *e1)) == 0
    other = pipe.root / "other"  # the next E1 run of synthart-multi, at another λ
    e1_next = [*argv(pipe, "synthart-multi", *e1, "--lambda", "4")]
    e1_next[e1_next.index("--results-root") + 1] = str(other)
    assert run_stage(E1_evaluate.main, e1_next) == 0
    multi = results_dir(pipe.results_root, pipe.run, "synthart-multi")
    real, swapped = document.task_summary, []

    def e1_swaps_in_the_middle(*a, **k):
        if not swapped:  # once: as E1's atomic_dir does it, under its lock
            with atomic_dir(multi, keep=("figures",)) as tmp:
                for f in (other / pipe.run / "synthart-multi").iterdir():
                    shutil.copy(f, tmp / f.name)
            swapped.append(True)
        return real(*a, **k)

    monkeypatch.setattr(document, "task_summary", e1_swaps_in_the_middle)
    path = document.write_report(
        pipe.results_root, pipe.weights_root, pipe.data_root, pipe.run, "synthart"
    )
    monkeypatch.setattr(document, "task_summary", real)
    after = document.build_report(
        pipe.results_root, pipe.weights_root, pipe.data_root, pipe.run, "synthart"
    )

    def section(text: str) -> str:  # the multi task's section, without the clock
        body = text.split("## Task `synthart-multi`")[1].split("\n## ")[0]
        return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "", body)

    assert swapped and "λ = 4" in section(after)
    assert section(path.read_text()) == section(after)


# ---------------------------------------------------------------------------------------------
# Row 8: Ctrl-C on an idle E3 is the one line


def test_ctrl_c_on_an_idle_e3_is_one_line(pipe):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "E3_explore.py", *argv(pipe, "synthart-style", "--port", "0")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            url = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        port = int(url.group(1))
        while time.monotonic() < deadline:  # idle: serving, no request in flight
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)  # Ctrl-C pressed twice (a second while it stops)
        time.sleep(0.05)  # apart: two signals pending at once are one
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert (
        err == "error: interrupted; finished artifacts are intact, re-run the stage to continue\n"
    )


# ---------------------------------------------------------------------------------------------
# Row 10: queries whose condition no database image carries


def test_queries_no_database_image_can_satisfy_are_named(pipe, capsys):
    test_csv = pipe.data_root / "synthart" / "test.csv"
    df = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    df.loc[df["style"] == "mosaic", "tags"] = ""  # untagged: out of the database (SPEC §7)
    df.to_csv(test_csv, index=False)
    queries = pd.read_csv(pipe.data_root / "synthart" / "queries_synthart-style.csv", dtype=str)
    n = int((queries["style"] == "mosaic").sum())
    assert n > 0
    assert run_stage(E1_evaluate.main, argv(pipe, "synthart-style", "--methods", "knn")) == 0
    warned = [line for line in capsys.readouterr().out.splitlines() if "style=mosaic" in line]
    assert len(warned) == 1 and f"{n} of 40 queries ask for a condition" in warned[0]
    out = pipe.results_root / pipe.run / "synthart-style"
    assert read_json(out / "metrics.json", "E1")["unreachable"] == {
        "queries": n,
        "conditions": ["style=mosaic"],
    }
    report = document.build_report(
        pipe.results_root, pipe.weights_root, pipe.data_root, pipe.run, "synthart"
    )
    assert f"{n} queries ask for a condition no image of the database carries (style=mosaic)" in (
        report
    )


def test_a_picture_searched_for_a_class_the_database_lacks_warns(pipe, capsys):
    test_csv = pipe.data_root / "synthart" / "test.csv"
    df = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    df.loc[df["style"] == "dots", "tags"] = ""
    df.to_csv(test_csv, index=False)
    e2 = argv(pipe, "synthart-style", "--image", str(picture(pipe)), "--condition", "style=dots")
    assert run_stage(E2_visualize.main, e2) == 0
    warned = [line for line in capsys.readouterr().out.splitlines() if "style=dots" in line]
    assert (
        len(warned) == 1 and "the query asks for a condition no image of the database" in warned[0]
    )
    assert "--database all" in warned[0]


# ---------------------------------------------------------------------------------------------
# Minor items


def test_a_full_disk_names_the_file_it_was_writing(tmp_path, capsys):
    target = tmp_path / "results" / "REPORT.md"

    def stage(argv):
        with atomic_path(target):  # write() says ENOSPC without a file name
            raise OSError(errno.ENOSPC, "No space left on device")

    assert run_stage(stage) == 2
    err = one_error_line(capsys.readouterr().err)
    assert err.startswith(f"error: {target}: No space left on device; the disk is full")
    assert list(target.parent.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize("tagged", [5, 9])
def test_e1_on_a_tiny_test_split_says_how_to_grow_it(tagged, pipe, capsys):
    test_csv = pipe.data_root / "synthart" / "test.csv"
    df = pd.read_csv(test_csv, dtype=str, keep_default_na=False)
    df.loc[tagged:, "tags"] = ""
    df.to_csv(test_csv, index=False)
    assert run_stage(E1_evaluate.main, argv(pipe, "synthart-style", "--methods", "knn")) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"has {tagged} tagged images" in err and "needs at least 10" in err
    assert "re-run A1, then C1" in err


@pytest.fixture
def distilled(pipe, capsys):
    """The pipeline with D1's student of synthart-style at the task's λ (1)."""
    d1 = argv(pipe, "synthart-style", "--epochs", "1", "--batch-size", "64")
    assert run_stage(D1_train_distill.main, d1) == 0
    capsys.readouterr()
    return pipe


def test_e1_warns_on_a_student_distilled_from_older_embeddings(distilled, capsys):
    pipe = distilled
    student = pipe.weights_root / pipe.run / "student_synthart-style_lam1"
    run = pipe.weights_root / pipe.run
    recorded = read_json(student.with_suffix(".json"), "D1")["embeddings_fingerprint"]
    assert recorded == open_partitions(run).fingerprint  # the set's, not a hash of z made here
    e1 = argv(pipe, "synthart-style", "--methods", "knn,student")
    capsys.readouterr()
    assert run_stage(E1_evaluate.main, e1) == 0
    assert "stale student" not in capsys.readouterr().out  # the same embeddings: no warning
    arrays = load_npz(npz(pipe), "C1")  # C1 re-ran (e.g. after B1 was retrained): partitions
    arrays["z"] = np.tanh(arrays["z"] + 0.01).astype(np.float32)
    n = len(arrays["z"])
    write_set(run, lambda a, b: {k: v[a:b] for k, v in arrays.items()}, Plan(n, 37))
    assert run_stage(E1_evaluate.main, e1) == 0
    warned = [line for line in capsys.readouterr().out.splitlines() if "stale student" in line]
    assert len(warned) == 1 and "student_synthart-style_lam1.pt" in warned[0]
    assert "re-run D1_train_distill.py" in warned[0] and "embeddings" in warned[0]
    d1 = argv(pipe, "synthart-style", "--epochs", "1", "--batch-size", "64")
    assert run_stage(D1_train_distill.main, d1) == 0  # D1 again, on the partitions
    assert run_stage(E1_evaluate.main, e1) == 0
    assert "stale student" not in capsys.readouterr().out


def test_knob_checks_accept_what_e1_writes():
    """Every value E1 may write for λ or α passes, so the check refuses only damage."""
    from src.artifacts import _bad_metric

    for v in (0, 0.0, 1, 2.5, 64.0, None):
        assert _bad_metric({"lambda": v, "alpha": v}, "") is None
    assert _bad_metric({"lambda": math.inf}, "") == "lambda is inf, not a finite number ≥ 0"


# ---------------------------------------------------------------------------------------------
# Our own probes of this wave's features (issue 27's registry, resolve_lambda, staged logs,
# scripts/glyphs.py) that did not hold


def test_e1_methods_without_the_student_does_not_say_d1_trained_none(distilled, capsys):
    assert run_stage(E1_evaluate.main, argv(distilled, "synthart-style", "--methods", "knn")) == 0
    out = capsys.readouterr().out
    assert "D1 trained none" not in out
    assert "student: student_synthart-style_lam1.pt not evaluated (--methods knn)" in out


def test_a_student_renamed_to_another_lambda_is_refused(distilled, capsys):
    rdir = distilled.weights_root / distilled.run
    (rdir / "student_synthart-style_lam1.pt").rename(rdir / "student_synthart-style_lam3.pt")
    e1 = argv(distilled, "synthart-style", "--methods", "knn,student", "--lambda", "3")
    assert run_stage(E1_evaluate.main, e1) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "student_synthart-style_lam3.pt was distilled at λ = 1 (its config)" in err
    assert "re-run D1_train_distill.py" in err and "--lambda 3" in err


def test_a_folder_in_the_way_of_a_file_is_named_not_its_temporary(tmp_path, capsys):
    log = tmp_path / "figures" / "E2.log"
    log.mkdir(parents=True)

    def stage(argv):
        with atomic_path(log) as tmp:
            tmp.write_text("a line\n")

    assert run_stage(stage) == 2
    err = one_error_line(capsys.readouterr().err)
    assert err.startswith(f"error: {log}: Is a directory; a folder is where a file should be")


def test_scripts_glyphs_into_a_file_says_it_is_a_file(tmp_path, capsys):
    from scripts import glyphs as script

    file = tmp_path / "labels.csv"
    file.write_text("image\n")
    assert run_stage(script.main, [str(file)]) == 2
    assert f"{file} is a file, not a folder" in one_error_line(capsys.readouterr().err)
    assert file.read_text() == "image\n"


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_a_bad_omp_num_threads_is_one_line_from_a_stage(value):
    """`import src` chooses the wait policy from the threads before the stage runs: a bad
    OMP_NUM_THREADS was a traceback there (abc), or silently one thread beside libgomp's own
    complaint (0, -3)."""
    env = {**os.environ, "OMP_NUM_THREADS": value}
    run = subprocess.run([sys.executable, "A2_make_queries.py", "--list-tasks"], cwd=ROOT, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2
    err = one_error_line(run.stderr.replace("libgomp: Invalid value for environment variable "
                                            "OMP_NUM_THREADS\n", ""))  # fmt: skip
    assert f"OMP_NUM_THREADS='{value}' is not a number of threads" in err
