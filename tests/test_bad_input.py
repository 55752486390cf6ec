"""What the suite promises about bad input and failing machines (issue 9), as a list of probes.

Every probe is something a careless or hostile user did; each failed on the code before issue 9.
The promises: a bad flag is refused when parsed (argparse's one line, exit 2); a run name cannot
leave its root; a stage's outputs are replaced whole or not at all, by one writer at a time; a
killed run's temporaries are cleaned by the next run; a corrupt input is one line naming the file
and the stage to re-run; a full or read-only disk is one line, the old artifacts intact.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import A1_preprocess
import A2_make_queries
import B1_train_encoder
import C1_extract_embeddings
import D1_train_distill
import E1_evaluate
from src import cli
from src.artifacts import (
    load_npz,
    load_torch,
    read_json,
    read_table,
    results_dir,
    run_dir,
    save_npz,
    save_torch,
    write_json,
)
from src.atomic import (
    atomic_dir,
    atomic_files,
    atomic_path,
    clean_stale_temps,
    lock_path,
    stage_lock,
)
from src.cli import run_stage, staged_log
from src.errors import SuiteError
from src.method.student import student_path
from src.queries import read_queries
from tests._pipeline import build_pipeline, copy_pipeline

STAGES = {
    "A1": A1_preprocess,
    "A2": A2_make_queries,
    "C1": C1_extract_embeddings,
    "D1": D1_train_distill,
    "E1": E1_evaluate,
}


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def temp_name(target: str, pid: int, host: str | None = None) -> str:
    """The name our atomic helpers give a temporary of `target` written by `pid`."""
    from src.atomic import _HOST

    return f".{target}.~{host or _HOST}-{pid}-0badc0de.tmp"


def one_error_line(err: str) -> str:
    """stderr holds exactly one line, `error: …`; return it."""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A tiny pipeline (A1 → C1 artifacts), built once; tests work on copies."""
    return build_pipeline(tmp_path_factory.mktemp("template"), "synthart").root


@pytest.fixture
def pipe(template, tmp_path):
    return copy_pipeline(template, tmp_path / "p")


def roots(p) -> list[str]:
    return ["--data-root", str(p.data_root), "--weights-root", str(p.weights_root),
            "--results-root", str(p.results_root)]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 1. Numeric flags are validated when parsed: argparse's one line, exit 2, nothing written

PARSE_PROBES = [
    ("A1", ["--dataset", "synthart", "--image-size", "0"], "--image-size: 0 is too small"),
    ("A1", ["--dataset", "synthart", "--num-images", "-5"], "--num-images: -5 is too small"),
    ("A1", ["--dataset", "wikiart", "--shorter-side", "-1"], "--shorter-side: -1 is too small"),
    ("A1", ["--dataset", "synthart", "--seed", "-1"], "--seed: -1 is too small"),
    ("A2", ["--task", "synthart-style", "--num-queries", "0"], "--num-queries: 0 is too small"),
    ("C1", ["--dataset", "synthart", "--batch-size", "0"], "--batch-size: 0 is too small"),
    ("D1", ["--task", "synthart-style", "--epochs", "0"], "--epochs: 0 is too small"),
    ("D1", ["--task", "synthart-style", "--batch-size", "1"], "--batch-size: 1 is too small"),
    ("D1", ["--task", "synthart-style", "--lambda", "nan"], "'nan' is not a finite number"),
    ("D1", ["--task", "synthart-style", "--lambda", "-1"], "--lambda: -1 must be ≥ 0"),
    ("D1", ["--task", "synthart-style", "--student-reg", "x"], "'x' is not a number"),
    ("E1", ["--task", "synthart-style", "--lambda", "inf"], "'inf' is not a finite number"),
    ("E1", ["--task", "synthart-style", "--target-mts", "1.5"], "between 0 and 1"),
    ("E1", ["--task", "synthart-style", "--target-mts", "0"], "between 0 and 1"),
    ("E1", ["--task", "synthart-style", "--seed", str(2**32)], "is too large: use an integer ≤"),
]


@pytest.mark.parametrize(("stage", "argv", "said"), PARSE_PROBES, ids=lambda v: str(v))
def test_numeric_flags_are_refused_when_parsed(stage, argv, said, tmp_path, capsys):
    assert_refused_when_parsed(STAGES[stage].main, argv, said, tmp_path, capsys)


def assert_refused_when_parsed(main, argv, said, tmp_path, capsys):
    """argparse's one line naming `said`, exit 2, and nothing under any root."""
    with pytest.raises(SystemExit) as e:
        main([*argv, "--data-root", str(tmp_path / "d"), "--weights-root", str(tmp_path / "w"),
              "--results-root", str(tmp_path / "r")])  # fmt: skip
    assert e.value.code == 2
    assert said in capsys.readouterr().err.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []  # no student_*_lamnan.log, no folder


def test_a_root_that_is_a_file_is_refused_when_parsed(tmp_path, capsys):
    (tmp_path / "data").write_text("not a folder")
    with pytest.raises(SystemExit):
        A1_preprocess.main(["--dataset", "synthart", "--data-root", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert "argument --data-root: " in err and "is a file, not a folder" in err


# ---------------------------------------------------------------------------------------------
# 2. A run name is one safe folder name: nothing escapes --weights-root / --results-root

BAD_RUNS = ["../../x", "/abs/path", "..", ".", ".hidden", "-rf", "a/b", "a\\b", "", "x" * 101,
            "cub run", "ünï"]  # fmt: skip


@pytest.mark.parametrize("run", BAD_RUNS)
def test_run_names_cannot_leave_their_root(run, tmp_path):
    with pytest.raises(SuiteError, match="is not a run name"):
        run_dir(tmp_path, run)
    with pytest.raises(SuiteError, match="is not a run name"):
        results_dir(tmp_path, run, "synthart-style")
    with pytest.raises(SuiteError, match="is not a run name"):
        results_dir(tmp_path, "ok", run or "..")  # the task component too


@pytest.mark.parametrize("stage", ["C1", "D1", "E1"])
def test_run_flag_is_refused_when_parsed(stage, tmp_path, capsys):
    first = {"C1": ["--dataset", "synthart"], "D1": ["--task", "synthart-style"],
             "E1": ["--task", "synthart-style"]}[stage]  # fmt: skip
    with pytest.raises(SystemExit):
        STAGES[stage].main([*first, "--run", "../../escape", "--weights-root", str(tmp_path)])
    assert "argument --run: run name '../../escape' is not a run name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_good_run_names_are_kept(tmp_path):
    for run in ["cub_convnext_base_e256_ft", "tiny_e18", "a.b-c", "_x"]:
        assert run_dir(tmp_path, run) == tmp_path / run


# ---------------------------------------------------------------------------------------------
# 3. Whole outputs, one writer: atomic swap of folders and file sets, lock files


def test_atomic_dir_swaps_a_finished_folder_whole(tmp_path):
    out = tmp_path / "ds"
    with atomic_dir(out) as tmp:
        (tmp / "old.txt").write_text("1")
        (tmp / "figures").mkdir()
        (tmp / "figures" / "f.png").write_text("fig")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("2")
        assert (out / "old.txt").read_text() == "1"  # old one intact while the new is built
        raise RuntimeError("killed")
    assert sorted(p.name for p in out.iterdir()) == ["figures", "old.txt"]
    with atomic_dir(out, keep=("figures",)) as tmp:
        (tmp / "new.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["figures", "new.txt"]  # old.txt: not stale
    assert (out / "figures" / "f.png").read_text() == "fig"  # another stage's files carried
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no lock, no temp, no .old


def test_atomic_dir_repairs_a_swap_killed_half_way(tmp_path):
    out, old = tmp_path / "ds", tmp_path / ".ds.old"
    old.mkdir()
    (old / "x.txt").write_text("the last whole one")  # renamed aside, new one never renamed in
    with pytest.raises(RuntimeError), atomic_dir(out):
        raise RuntimeError("fails again")
    assert (out / "x.txt").read_text() == "the last whole one"


def test_atomic_files_moves_a_set_in_together(tmp_path):
    (tmp_path / "a.pt").write_text("old a")
    (tmp_path / "a.log").write_text("old log")
    (tmp_path / "other.npz").write_text("another stage's")
    with pytest.raises(ValueError), atomic_files(tmp_path, ["a.pt", "a.log"]) as tmp:
        (tmp / "a.log").write_text("half")
        raise ValueError("training failed")
    assert (tmp_path / "a.pt").read_text() == "old a" and (
        tmp_path / "a.log"
    ).read_text() == "old log"
    with atomic_files(tmp_path, ["a.pt", "a.log"]) as tmp:
        (tmp / "a.pt").write_text("new a")
    assert (tmp_path / "a.pt").read_text() == "new a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "other.npz"]  # stale log gone


def test_a_staged_log_goes_on_from_the_previous_one_and_is_closed_on_failure(tmp_path, monkeypatch):
    """B1 --resume and E2 continue their log; a failed stage's staged log is complete and closed
    (so it can be dropped or moved) and the finished log is untouched."""
    monkeypatch.setattr(cli, "_threads_logged", True)  # the once-per-process threads line: logged
    previous, staged = tmp_path / "E2.log", tmp_path / ".E2.log.~tmp"
    previous.write_text("an earlier run\n")
    with pytest.raises(ValueError), staged_log(staged, previous=previous):
        logging.getLogger("src.E2").info("this run")
        raise ValueError("drawing failed")
    logging.getLogger("src.E2").info("after the block")
    assert staged.read_text() == "an earlier run\nthis run\n"  # and nothing after the block
    assert previous.read_text() == "an earlier run\n"
    with staged_log(tmp_path / "B1.log"):  # no previous log: a fresh one
        logging.getLogger("src.B1").info("epoch 1/1")
    assert (tmp_path / "B1.log").read_text() == "epoch 1/1\n"


def write_lock(path: Path, pid: int, host: str | None = None) -> Path:
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "command": "E1_evaluate.py --task x", "started": "then"}))  # fmt: skip
    return lock


def test_a_second_writer_is_refused_naming_the_lock(tmp_path):
    lock = write_lock(tmp_path / "ds", os.getppid())  # a live process on this host
    with pytest.raises(SuiteError) as e, atomic_dir(tmp_path / "ds"):
        pass
    msg = str(e.value)
    assert f"pid {os.getppid()}" in msg and str(lock) in msg and "delete" in msg and "\n" not in msg
    assert lock.exists()  # not ours to remove
    write_lock(tmp_path / "remote", 1, host="another-host")  # cannot tell: refuse
    with pytest.raises(SuiteError, match="another-host"), stage_lock(tmp_path / "remote"):
        pass


def test_a_real_concurrent_writer_is_refused(tmp_path):
    """Another process holds the lock (really): the second writer is refused, then may go."""
    code = (
        "import sys, time; from src.atomic import stage_lock\n"
        "with stage_lock(sys.argv[1]):\n    print('held', flush=True); sys.stdin.readline()"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ds")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SuiteError, match=f"pid {holder.pid} "), atomic_dir(tmp_path / "ds"):
            pass
    finally:
        holder.communicate("\n", timeout=60)
    with atomic_dir(tmp_path / "ds") as tmp:
        (tmp / "x").write_text("mine")
    assert (tmp_path / "ds" / "x").read_text() == "mine"


def test_an_empty_lock_is_stale_after_a_minute(tmp_path):
    lock = lock_path(tmp_path / "ds")
    lock.write_text("")  # killed between creating the lock and writing who holds it
    with pytest.raises(SuiteError, match="another process"), stage_lock(tmp_path / "ds"):
        pass
    os.utime(lock, (1, 1))
    with stage_lock(tmp_path / "ds"):
        pass
    assert not lock.exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    lock = write_lock(tmp_path / "ds", dead_pid())
    with atomic_dir(tmp_path / "ds") as tmp:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        (tmp / "x").write_text("ok")
    assert not lock.exists() and (tmp_path / "ds" / "x").exists()


def test_a_lock_of_another_users_process_is_refused_and_its_temporaries_kept(tmp_path, monkeypatch):
    # The tests run as root, where signalling any pid works: pretend the holder belongs to
    # another user (os.kill says EPERM). It is alive: its lock is not stale, its files are not ours.
    pid = dead_pid()
    real_kill = os.kill

    def kill(p: int, sig: int) -> None:
        if p == pid:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        real_kill(p, sig)

    monkeypatch.setattr(os, "kill", kill)
    lock = write_lock(tmp_path / "ds", pid)
    temp = tmp_path / temp_name("other", pid)
    temp.write_text("being written")
    with pytest.raises(SuiteError, match=f"pid {pid} "), atomic_dir(tmp_path / "ds"):
        pass
    assert lock.exists() and temp.exists()
    with atomic_path(tmp_path / "other.txt") as tmp:
        tmp.write_text("mine")
    assert temp.read_text() == "being written"


def test_a1_refuses_while_another_writer_holds_the_dataset(tmp_path, capsys):
    write_lock(tmp_path / "synthart", os.getppid())
    rc = run_stage(A1_preprocess.main, ["--dataset", "synthart", "--data-root", str(tmp_path)])
    assert rc == 2 and ".synthart.lock" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "synthart").exists()


def test_c1_refuses_while_another_writer_holds_its_embeddings(pipe, capsys, monkeypatch):
    """A live writer holds the set: C1 writes its partitions aside but does not publish them."""
    import src.partitions

    monkeypatch.setattr(src.partitions, "FINISH_WAIT_S", 0.0)  # no waiting for the holder
    rdir = pipe.weights_root / pipe.run
    npz = rdir / "embeddings.npz"
    before = npz.read_bytes()
    write_lock(rdir / "embeddings", os.getppid())
    rc = run_stage(C1_extract_embeddings.main, [*roots(pipe), "--run", pipe.run])
    assert rc == 2 and ".embeddings.lock" in one_error_line(capsys.readouterr().err)
    assert npz.read_bytes() == before and not (rdir / "embeddings").exists()


def d1_argv(p, *extra: str) -> list[str]:
    return [*roots(p), "--run", p.run, "--task", "synthart-style", "--epochs", "1",
            "--batch-size", "64", "--device", "cpu", *extra]  # fmt: skip


def test_a_failed_d1_leaves_the_good_student_untouched(pipe, capsys, monkeypatch):
    assert run_stage(D1_train_distill.main, d1_argv(pipe)) == 0
    rdir = pipe.weights_root / pipe.run
    files = {p.name: p.read_bytes() for p in rdir.glob("student_*")}
    assert len(files) == 4  # .pt, .json, _log.csv, .log

    def fails(*a, **k):
        import logging

        logging.getLogger("backward_search").info("D1 epoch 1/1: half-way")
        raise SuiteError("distill: training embeddings hold NaN or inf; re-run C1")

    monkeypatch.setattr(D1_train_distill, "distill", fails)
    assert run_stage(D1_train_distill.main, d1_argv(pipe)) == 2
    assert {p.name: p.read_bytes() for p in rdir.glob("student_*")} == files  # log not appended
    assert not [p for p in rdir.iterdir() if p.name.startswith(".")]  # no temp, no lock


def test_e1_replaces_its_folder_whole(pipe):
    base = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--device", "cpu",
            "--methods", "random,knn"]  # fmt: skip
    out = results_dir(pipe.results_root, pipe.run, "synthart-style")
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "results_q0.png").write_text("E2's")
    (out / "sweep.csv").write_text("lambda\n1\n")  # a stale sweep of an earlier --sweep run
    assert run_stage(E1_evaluate.main, base) == 0
    names = {p.name for p in out.iterdir()}
    assert "sweep.csv" not in names and "retrievals_knn.csv" in names and "figures" in names
    assert (out / "figures" / "results_q0.png").read_text() == "E2's"
    assert sorted(p.name for p in out.parent.iterdir()) == ["synthart-style"]


# ---------------------------------------------------------------------------------------------
# 4. The temporaries of a killed run are removed by the next run (never a live writer's)


def test_killed_runs_temporaries_are_cleaned_but_live_ones_kept(tmp_path):
    dead, live = dead_pid(), os.getppid()
    (tmp_path / temp_name("checkpoint.pt", dead)).write_bytes(b"half a checkpoint")
    (tmp_path / temp_name("synthart", dead)).mkdir()
    (tmp_path / temp_name("synthart", dead) / "00001.png").write_bytes(b"png")
    (tmp_path / temp_name("encoder.pt", live)).write_bytes(b"being written")
    (tmp_path / temp_name("encoder.pt", dead, host="abcdef")).write_bytes(b"another host's")
    write_json(tmp_path / "metrics.json", {"v": 1})  # any atomic write cleans its folder
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["metrics.json", temp_name("encoder.pt", live), temp_name("encoder.pt", dead, "abcdef")]
    )


def test_under_its_lock_an_outputs_older_temporaries_are_stale(tmp_path):
    old = tmp_path / ".synthart.x7k2p9.tmp"  # mkdtemp's name (no pid) from before issue 9
    old.mkdir()
    os.utime(old, (1, 1))
    other = tmp_path / ".cub.x7k2p9.tmp"  # another output's: not ours to judge
    other.mkdir()
    os.utime(other, (1, 1))
    with stage_lock(tmp_path / "synthart"):
        assert not old.exists() and other.exists()
    assert clean_stale_temps(tmp_path) == []


def test_a1_run_cleans_what_a_killed_a1_left(tmp_path):
    killed = tmp_path / temp_name("synthart", dead_pid())
    killed.mkdir()
    (killed / "images").mkdir()
    a1 = ["--dataset", "synthart", "--data-root", str(tmp_path), "--num-images", "20",
          "--image-size", "16"]  # fmt: skip
    assert run_stage(A1_preprocess.main, a1) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthart"]


# ---------------------------------------------------------------------------------------------
# 5. A1 keeps A2's queries when the split is unchanged, and says so loudly when it drops them


def test_a1_rerun_keeps_queries_of_the_same_split_and_warns_otherwise(tmp_path, capsys):
    a1 = ["--dataset", "synthart", "--data-root", str(tmp_path), "--num-images", "40",
          "--image-size", "16"]  # fmt: skip
    assert run_stage(A1_preprocess.main, a1) == 0
    q = tmp_path / "synthart" / "queries_synthart-style.csv"
    q.write_text("query_id,image,style,tags\n0,images/test/00001.png,flat,a\n")
    q.with_suffix(".json").write_text("{}")
    assert run_stage(A1_preprocess.main, a1) == 0  # same seed: the same split
    assert q.exists() and q.with_suffix(".json").exists()
    assert "WARNING" not in capsys.readouterr().out
    assert run_stage(A1_preprocess.main, [*a1, "--seed", "1"]) == 0  # another split
    assert not q.exists()
    warned = [m for m in capsys.readouterr().out.splitlines() if m.startswith("WARNING")]
    assert any("queries_synthart-style.csv" in m and "A2_make_queries.py" in m for m in warned)


# ---------------------------------------------------------------------------------------------
# 6. Corrupt inputs: one line naming the file and the stage to re-run


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    for i in range(len(b) // 3, len(b) // 3 + 16):
        b[i] ^= 0xFF
    p.write_bytes(bytes(b))


DAMAGE = {"truncated": _truncate, "empty": _empty, "bit-flipped": _flip}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_npz_is_one_line(damage, tmp_path):
    p = tmp_path / "embeddings.npz"
    save_npz(p, z=np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32),
             image=np.array([f"{i}.png" for i in range(200)]))  # fmt: skip
    DAMAGE[damage](p)
    with pytest.raises(SuiteError) as e:
        load_npz(p, "C1_extract_embeddings.py")
    assert str(p) in str(e.value) and "re-run C1" in str(e.value) and "\n" not in str(e.value)


class _Payload:
    pass


@pytest.mark.parametrize("damage", [*DAMAGE, "pickled object"])
def test_a_damaged_or_unsafe_torch_file_is_one_line(damage, tmp_path):
    p = tmp_path / "encoder.pt"
    save_torch(p, {"model": {"w": torch.arange(4000.0)}, "config": {"e": 3}})
    if damage == "pickled object":
        torch.save(_Payload(), p)  # loading it would run pickle code
    else:
        DAMAGE[damage](p)
    with pytest.raises(SuiteError) as e:
        load_torch(p, "B1_train_encoder.py")
    assert str(p) in str(e.value) and "re-run B1" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b'{"style": [', b"", b"\xff\xfe\x00{", b"\x00" * 64])
def test_a_damaged_json_is_one_line(content, tmp_path):
    p = tmp_path / "labels.json"
    p.write_bytes(content)
    with pytest.raises(SuiteError, match=r"labels.json is not readable JSON .*; re-run A1"):
        read_json(p, "A1_preprocess.py")


TABLE_PROBES = [
    ("train.csv without tags", "train.csv", "image,style,genre\na.png,flat,portrait\n",
     "lacks column(s) tags"),
    ("test.csv without image", "test.csv", "style,genre,tags\nflat,portrait,a\n",
     "lacks column(s) image"),
    ("test.csv without genre", "test.csv", "image,style,tags\na.png,flat,a\n",
     "lacks column(s) genre"),
    ("0-byte queries", "queries_synthart-style.csv", "", "is empty"),
    ("header-only queries", "queries_synthart-style.csv", "query_id,image,style,tags\n",
     "has a header but no rows"),
    ("queries without style", "queries_synthart-style.csv", "query_id,image,tags\n0,a.png,t\n",
     "lacks column(s) style"),
    ("queries with a bad id", "queries_synthart-style.csv",
     "query_id,image,style,tags\nx,a.png,flat,t\n", "query_id that is not an integer"),
    ("binary queries", "queries_synthart-style.csv", "\x00\xff\xfe garbage", "re-run A2"),
    ("queries with a repeated id", "queries_synthart-style.csv",
     "query_id,image,style,tags\n0,a.png,flat,t\n0,b.png,dots,t\n", "has query_id 0 twice"),
    ("queries with a negative id", "queries_synthart-style.csv",
     "query_id,image,style,tags\n-3,a.png,flat,t\n", "not an integer ≥ 0"),
    ("queries with a huge id", "queries_synthart-style.csv",
     "query_id,image,style,tags\n1e30,a.png,flat,t\n", "not an integer ≥ 0"),
]  # fmt: skip


@pytest.mark.parametrize(("probe", "name", "text", "said"), TABLE_PROBES, ids=lambda v: str(v))
def test_a_bad_table_names_the_file_and_column(probe, name, text, said, pipe):
    from src.datasets.common import read_split

    path = pipe.data_root / "synthart" / name
    path.write_text(text, encoding="latin-1")
    with pytest.raises(SuiteError) as e:
        if name.startswith("queries"):
            read_queries(pipe.data_root, "synthart-style")
        else:
            read_split(pipe.data_root, "synthart", name.removesuffix(".csv"))
    msg = str(e.value)
    assert str(path) in msg and said in msg and "re-run" in msg and "\n" not in msg


def test_read_table_is_the_one_schema_check(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,b\n1,2\n")
    assert list(read_table(p, ["a"], "X").columns) == ["a", "b"]
    with pytest.raises(SuiteError, match=r"t.csv lacks column\(s\) c; re-run X"):
        read_table(p, ["a", "c"], "X")


@pytest.mark.parametrize(("stage", "damage"), [("D1", "truncated"), ("E1", "bit-flipped"),
                                               ("E1", "header-only queries")])  # fmt: skip
def test_stages_report_a_damaged_input_in_one_line(stage, damage, pipe, capsys):
    if damage == "header-only queries":
        (pipe.data_root / "synthart" / "queries_synthart-style.csv").write_text(
            "query_id,image,style,tags\n"
        )
    else:
        DAMAGE[damage](pipe.weights_root / pipe.run / "embeddings.npz")
    argv = d1_argv(pipe) if stage == "D1" else [*roots(pipe), "--run", pipe.run, "--task",
                                                 "synthart-style", "--device", "cpu"]  # fmt: skip
    assert run_stage(STAGES[stage].main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "re-run" in err
    assert not (pipe.results_root / pipe.run).exists()
    assert not student_path(pipe.weights_root / pipe.run, "synthart-style", 1.0).exists()


@pytest.mark.parametrize("stage", ["D1", "E1"])
def test_nan_embeddings_are_refused_before_anything_is_written(stage, pipe, capsys):
    from src.embeddings import load_embeddings

    path = pipe.weights_root / pipe.run / "embeddings.npz"
    arrays = load_embeddings(path.parent)
    arrays["z"][3, 1] = np.nan
    save_npz(path, **arrays)
    argv = d1_argv(pipe) if stage == "D1" else [*roots(pipe), "--run", pipe.run, "--task",
                                                 "synthart-style", "--device", "cpu"]  # fmt: skip
    assert run_stage(STAGES[stage].main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "NaN" in err and str(arrays["image"][3]) in err
    assert not (pipe.results_root / pipe.run).exists()


def test_a_query_from_the_train_split_is_refused(pipe, capsys):
    qfile = pipe.data_root / "synthart" / "queries_synthart-style.csv"
    q = pd.read_csv(qfile, dtype=str)
    q.loc[2, "image"] = pd.read_csv(pipe.data_root / "synthart" / "train.csv")["image"][0]
    q.to_csv(qfile, index=False)
    argv = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--device", "cpu"]
    assert run_stage(E1_evaluate.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "query image(s) of the train split" in err and "re-run A2_make_queries.py" in err


# ---------------------------------------------------------------------------------------------
# 7. Folders get the umask's normal mode (not mkdtemp's 0700)


def test_new_folders_and_files_have_the_umasks_mode(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "ds") as tmp:
            (tmp / "x").write_text("x")
        write_json(tmp_path / "m.json", {})
    finally:
        os.umask(old)
    assert (tmp_path / "ds").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------------
# 8. A full or read-only disk: one line, exit 2, the old artifacts intact; bugs keep a traceback


@pytest.mark.parametrize(("code", "said"), [(errno.ENOSPC, "the disk is full"),
                                            (errno.EROFS, "read-only"),
                                            (errno.EACCES, "permission denied"),
                                            (errno.ENOTDIR, "is a file, not a folder"),
                                            (errno.EFBIG, "size limit (ulimit -f)"),
                                            (errno.EMFILE, "too many open files")])  # fmt: skip
def test_machine_errors_are_one_line(code, said, capsys):
    def main(argv):
        raise OSError(code, os.strerror(code), "weights/run/encoder.pt")

    assert run_stage(main, []) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "weights/run/encoder.pt" in err and said in err


@pytest.mark.parametrize("bug", [KeyError("tags"), OSError(errno.EBADF, "Bad file descriptor")])
def test_programming_errors_keep_their_traceback(bug):
    def main(argv):
        raise bug

    with pytest.raises(type(bug)):
        run_stage(main, [])


def test_a_full_disk_during_torch_save_is_enospc_and_keeps_the_old_file(tmp_path, monkeypatch):
    p = tmp_path / "encoder.pt"
    save_torch(p, {"w": torch.ones(3)})

    def full(obj, f):
        Path(f).write_bytes(b"PK half")
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError) as e:
        save_torch(p, {"w": torch.zeros(3)})
    assert e.value.errno == errno.ENOSPC
    assert torch.equal(load_torch(p, "B1")["w"], torch.ones(3))
    assert sorted(q.name for q in tmp_path.iterdir()) == ["encoder.pt"]


def test_a1_on_a_full_disk_is_one_line_and_keeps_the_old_dataset(tmp_path, capsys, monkeypatch):
    a1 = ["--dataset", "synthart", "--data-root", str(tmp_path), "--num-images", "20",
          "--image-size", "16"]  # fmt: skip
    assert run_stage(A1_preprocess.main, a1) == 0
    before = (tmp_path / "synthart" / "train.csv").read_bytes()
    import src.datasets.common as common

    def full(path, df):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(common, "write_csv", full)
    capsys.readouterr()
    assert run_stage(A1_preprocess.main, [*a1, "--seed", "3"]) == 2
    assert "the disk is full" in one_error_line(capsys.readouterr().err)
    assert (tmp_path / "synthart" / "train.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthart"]


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    with pytest.raises(OSError), atomic_path(tmp_path / "x.csv") as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Task and dataset names come from the registry (built-in, or data/NAME/dataset.json of a safe NAME),
# so they cannot escape either


def test_a1_dataset_names_are_registry_choices(capsys):
    with pytest.raises(SystemExit):
        STAGES["A1"].main(["--dataset", "../../x"])
    assert "invalid choice: '../../x'" in capsys.readouterr().err


@pytest.mark.parametrize(("stage", "flag", "what"), [(A2_make_queries, "--task", "task"),
                                                     (D1_train_distill, "--task", "task"),
                                                     (E1_evaluate, "--task", "task"),
                                                     (B1_train_encoder, "--dataset", "dataset")])  # fmt: skip
def test_task_and_dataset_names_resolve_in_the_registry(stage, flag, what, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "dataset.json").write_text("{}")  # outside the data root: never read
    argv = [flag, "../x", "--data-root", str(tmp_path / "data")]
    assert run_stage(stage.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"unknown {what} '../x'; choose one of: " in err[0]


def test_read_table_keeps_cells_as_strings(tmp_path):
    """read_table returns strings: ids and tags are never reinterpreted."""
    p = tmp_path / "t.csv"
    pd.DataFrame({"image": ["007.png"], "tags": ["NA"]}).to_csv(p, index=False)
    df = read_table(p, ["image", "tags"], "A1")
    assert df.loc[0, "image"] == "007.png" and df.loc[0, "tags"] == "NA"


# ---------------------------------------------------------------------------------------------
# B1 (encoder training): validated flags, a whole run folder, --resume only of the same run


B1_PARSE_PROBES = [
    (["--epochs", "0"], "--epochs: 0 is too small"),
    (["--lr", "-1"], "--lr: -1 must be > 0"),
    (["--lr", "nan"], "'nan' is not a finite number"),
    (["--batch-size", "0"], "--batch-size: 0 is too small"),
    (["--batch-size", "1"], "--batch-size: 1 is too small"),  # BatchNorm needs two samples
    (["--embedding-size", "0"], "--embedding-size: 0 is too small"),
    (["--image-size", "0"], "--image-size: 0 is too small"),
    (["--weight-decay=-1e-4"], "--weight-decay: -0.0001 must be ≥ 0"),
    (["--lr-step", "0"], "--lr-step: 0 is too small"),
    (["--lr-gamma", "0"], "--lr-gamma: 0 must be > 0"),
    (["--checkpoint-every", "0"], "--checkpoint-every: 0 is too small"),
    (["--workers", "-1"], "--workers: -1 is too small"),
    (["--precision", "fp8"], "--precision: invalid choice: 'fp8'"),
    (["--flips", "v"], "--flips: invalid choice: 'v'"),
    (["--schedule", "linear"], "--schedule: invalid choice: 'linear'"),
    (["--warmup-epochs=-1"], "--warmup-epochs: -1 must be ≥ 0"),
    (["--label-smoothing", "1"], "--label-smoothing: 1 must be ≥ 0 and < 1"),
    (["--recipe", "tiny"], "--recipe: invalid choice: 'tiny'"),
]


@pytest.mark.parametrize(("argv", "said"), B1_PARSE_PROBES, ids=lambda v: str(v))
def test_b1_numeric_flags_are_refused_when_parsed(argv, said, tmp_path, capsys):
    argv = ["--dataset", "synthart", *argv]
    assert_refused_when_parsed(B1_train_encoder.main, argv, said, tmp_path, capsys)


B1_OUTPUTS = ["encoder.pt", "config.json", "train_log.csv", "curves.png", "train.log"]


def b1_argv(p, *extra: str) -> list[str]:
    return [*roots(p), "--dataset", "synthart", "--image-size", "32", "--embedding-size", "16",
            "--batch-size", "8", "--device", "cpu", *extra]  # fmt: skip


def b1_files(p) -> dict[str, bytes]:
    out = p.weights_root / "synthart_convnext_atto_e16_ft"
    return {n: (out / n).read_bytes() for n in B1_OUTPUTS}


@pytest.fixture
def b1_pipe(pipe, capsys):
    """The pipeline with one finished B1 run (1 epoch, checkpoint every epoch)."""
    assert run_stage(B1_train_encoder.main, b1_argv(pipe, "--epochs", "1",
                                                    "--checkpoint-every", "1")) == 0  # fmt: skip
    capsys.readouterr()
    return pipe


@pytest.mark.parametrize("failure", ["diverged", "crashed"])
def test_a_failed_b1_leaves_the_finished_run_untouched(failure, b1_pipe, capsys, monkeypatch):
    import src.training.loop as training

    before = b1_files(b1_pipe)
    out = b1_pipe.weights_root / "synthart_convnext_atto_e16_ft"
    real, calls = training.train_one_epoch, []

    def fails_in_epoch_2(*a, **k):
        calls.append(1)
        if len(calls) == 2:  # after epoch 1 wrote its log row (and checkpoint) into the run
            if failure == "diverged":
                raise SuiteError("B1 diverged: the loss is not finite at epoch 2, step 1")
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(*a, **k)

    monkeypatch.setattr(training, "train_one_epoch", fails_in_epoch_2)
    argv = b1_argv(b1_pipe, "--epochs", "3", "--checkpoint-every", "1", "--seed", "5")
    if failure == "diverged":
        assert run_stage(B1_train_encoder.main, argv) == 2
        assert "diverged" in one_error_line(capsys.readouterr().err)
    else:
        with pytest.raises(RuntimeError):
            run_stage(B1_train_encoder.main, argv)
    assert b1_files(b1_pipe) == before  # encoder.pt, config.json, train_log.csv, … byte-identical
    assert load_torch(out / "checkpoint.pt", "B1")["epoch"] == 1  # the new run's, for --resume
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp left
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no lock left


def test_b1_resume_with_a_changed_lr_is_refused(b1_pipe, capsys):
    before = b1_files(b1_pipe)
    argv = b1_argv(b1_pipe, "--epochs", "2", "--resume", "--lr", "0.1")
    assert run_stage(B1_train_encoder.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert (
        "checkpoint.pt was trained with other settings (--lr: checkpoint 0.002 vs flags 0.1)" in err
    )
    assert b1_files(b1_pipe) == before
    argv = b1_argv(b1_pipe, "--epochs", "2", "--resume")  # the same settings: it continues
    assert run_stage(B1_train_encoder.main, argv) == 0
    log = (b1_pipe.weights_root / "synthart_convnext_atto_e16_ft" / "train.log").read_text()
    assert "epoch 1/1" in log and "epoch 2/2" in log  # the resumed run's log goes on


def test_b1_refuses_while_another_writer_holds_the_run(b1_pipe, capsys):
    before = b1_files(b1_pipe)
    write_lock(b1_pipe.weights_root / "synthart_convnext_atto_e16_ft", os.getppid())
    assert run_stage(B1_train_encoder.main, b1_argv(b1_pipe, "--epochs", "1")) == 2
    assert ".synthart_convnext_atto_e16_ft.lock" in one_error_line(capsys.readouterr().err)
    assert b1_files(b1_pipe) == before


# E2: validated flags, conditions the task has, pictures too large to decode, E1's lock

E2_PARSE_PROBES = [
    (["--query-id", "-1"], "--query-id: -1 is too small"),
    (["--lambda", "-1"], "--lambda: -1 must be ≥ 0"),
    (["--lambda", "nan"], "'nan' is not a finite number"),
    (["--run", "../../x"], "is not a run name"),
    (["--database", "train"], "--database: invalid choice: 'train'"),
]


@pytest.mark.parametrize(("argv", "said"), E2_PARSE_PROBES, ids=lambda v: str(v))
def test_e2_flags_are_refused_when_parsed(argv, said, tmp_path, capsys):
    import E2_visualize

    argv = ["--task", "synthart-style", *argv]
    assert_refused_when_parsed(E2_visualize.main, argv, said, tmp_path, capsys)


@pytest.mark.parametrize("rows", ["knn,inf", "knn,-2", "nan"])
def test_e2_fig5_rows_must_be_finite_lambdas(rows, pipe, capsys):
    import E2_visualize

    argv = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--lambdas", rows]
    assert run_stage(E2_visualize.main, argv) == 2
    assert "λ must be a finite number ≥ 0" in one_error_line(capsys.readouterr().err)
    assert not pipe.results_root.exists()


def test_e2_refuses_a_condition_the_task_does_not_condition_on(pipe, capsys):
    from PIL import Image

    import E2_visualize

    pic = pipe.root / "photo.png"
    Image.new("RGB", (32, 32), (120, 60, 30)).save(pic)
    argv = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--image", str(pic),
            "--condition", "genre=portrait", "--device", "cpu"]  # fmt: skip
    assert run_stage(E2_visualize.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "conditions on style only" in err and "synthart-multi" in err
    assert not pipe.results_root.exists()


@pytest.mark.parametrize("side", [40, 100])  # PIL warns between 1× and 2× the limit, errs above
def test_e2_a_decompression_bomb_is_one_line(side, pipe, capsys, monkeypatch):
    from PIL import Image

    import E2_visualize

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    pic = pipe.root / "bomb.png"
    Image.new("RGB", (side, side), (0, 0, 0)).save(pic)
    argv = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--image", str(pic),
            "--condition", "style=dots", "--device", "cpu"]  # fmt: skip
    assert run_stage(E2_visualize.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "bomb.png is too large to decode (> 1000 pixels): resize it" in err
    figs = results_dir(pipe.results_root, pipe.run, "synthart-style") / "figures"
    assert not list(figs.glob("search_*"))


def test_e2_waits_for_no_one_while_e1_writes_the_task(pipe, capsys):
    """E2 takes E1's lock on results/<run>/<task>: a live E1 there makes E2 refuse, writing nothing."""
    import E2_visualize

    out = results_dir(pipe.results_root, pipe.run, "synthart-style")
    lock = write_lock(out, os.getppid())
    argv = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--device", "cpu"]
    assert run_stage(E2_visualize.main, argv) == 2
    assert ".synthart-style.lock" in one_error_line(capsys.readouterr().err)
    assert sorted(p.name for p in out.parent.iterdir()) == [lock.name]
    lock.unlink()
    assert run_stage(E2_visualize.main, [*argv, "--lambdas", "knn"]) == 0
    assert (out / "figures" / "results_q0.png").exists() and not lock.exists()


def test_e2_with_nan_embeddings_keeps_its_figures(pipe, capsys):
    """E2 after E1, then the embeddings go bad: refused before any figure is redrawn."""
    import E2_visualize
    from src.embeddings import load_embeddings

    e2 = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--device", "cpu"]
    assert run_stage(E1_evaluate.main, e2) == 0
    assert run_stage(E2_visualize.main, [*e2, "--query-id", "0"]) == 0
    figs = pipe.results_root / pipe.run / "synthart-style" / "figures"
    before = {p.name: p.read_bytes() for p in figs.glob("*.png")}
    assert before  # the grids and curves E2 drew
    capsys.readouterr()
    path = pipe.weights_root / pipe.run / "embeddings.npz"
    arrays = load_embeddings(path.parent)
    arrays["z"][5, 0] = np.nan
    save_npz(path, **arrays)
    assert run_stage(E2_visualize.main, [*e2, "--query-id", "0"]) == 2
    assert "NaN" in one_error_line(capsys.readouterr().err)
    assert {p.name: p.read_bytes() for p in figs.glob("*.png")} == before


# ---------------------------------------------------------------------------------------------
# Issue 21: the third round of hostile inputs, one test per row of its table, then our own probes


def sha256s(*paths: Path) -> dict[str, str]:
    """sha256 of every file under `paths` (files or folders), by path: the byte-identical check."""
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        out.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    return out


@contextlib.contextmanager
def no_hang(seconds: int, fifo: Path | None = None):
    """Fail (Blocked) instead of hanging when the block blocks longer than `seconds`; a
    reader blocked on `fifo` (maybe in a worker thread) is released by opening its other end."""

    class Blocked(BaseException):  # not an OSError (TimeoutError is): no handler swallows it
        pass

    def timeout(*_):
        if fifo is not None:
            with contextlib.suppress(OSError):  # ENXIO: no reader waits
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        raise Blocked(f"blocked for {seconds} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def write_labels_csv(src: Path, rows: list[list[str]], images: bool = False) -> Path:
    """DIR/labels.csv with `rows` (the first is the header), optionally 8×8 PNGs for the images."""
    src.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows[1:], columns=range(len(rows[0]))).to_csv(
        src / "labels.csv", index=False, header=rows[0]
    )
    if images:
        from PIL import Image

        for k, row in enumerate(rows[1:]):
            (src / row[0]).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (k * 9 % 256, 40, 90)).save(src / row[0])
    return src


def folder_argv(src: Path, data: Path, *extra: str) -> list[str]:
    return ["--dataset", "folder", "--source", str(src), "--name", "mine", "--data-root",
            str(data), *extra]  # fmt: skip


# Row 1: a lock file holding JSON that names no holder ([], 123, "text", null, a bad pid)
@pytest.mark.parametrize(
    "content",
    ["[]", "123", '"text"', "null", '{"pid": "7", "host": 5}',
     '{"pid": 99999999999999999999, "host": "HOST"}', '{"pid": true, "host": "HOST"}'],
)  # fmt: skip
def test_a_lock_naming_no_holder_is_one_line_then_stale(content, pipe, capsys):
    data = pipe.data_root / "synthart"
    before = sha256s(data)
    lock = lock_path(data)
    lock.write_text(content.replace("HOST", socket.gethostname()))
    argv = [*roots(pipe), "--task", "synthart-style", "--num-queries", "5"]
    assert run_stage(A2_make_queries.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "is being written by another process (unnamed)" in err and f"delete {lock}" in err
    assert sha256s(data) == before and lock.exists()
    os.utime(lock, (1, 1))  # a minute on, a lock that names no one is stale: taken over
    assert run_stage(A2_make_queries.main, argv) == 0
    assert not lock.exists()


# Row 2: labels.csv columns that become one name once spaces are stripped
@pytest.mark.parametrize(
    ("header", "said"),
    [(["image", "colour", " colour"], "the header has 'colour' and ' colour'"),
     (["image", "colour", "image "], "the header has 'image' and 'image '"),
     (["image", "colour", "colour"], "the header has 'colour' twice")],
)  # fmt: skip
def test_labels_csv_columns_that_are_one_name_are_one_line(header, said, tmp_path, capsys):
    src = write_labels_csv(tmp_path / "src", [header, ["a.png", "red", "blue"]])
    assert run_stage(A1_preprocess.main, folder_argv(src, tmp_path / "data")) == 2
    err = one_error_line(capsys.readouterr().err)
    assert said in err and "rename or merge them" in err
    assert not (tmp_path / "data" / "mine").exists()


# Row 3: an image size the backbone cannot take (its minimum comes from BACKBONES)
def test_b1_image_size_below_the_backbones_minimum_is_one_line(pipe, capsys):
    assert run_stage(B1_train_encoder.main, b1_argv(pipe, "--image-size", "16")) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "--image-size 16 is too small for convnext_atto: it takes ≥ 32 px" in err
    assert sorted(p.name for p in pipe.weights_root.iterdir()) == [pipe.run]  # no run, no lock


@pytest.mark.parametrize(
    ("backbone", "size", "pretrained", "said"),
    [("vgg16_bn", 24, "none", "too small for vgg16_bn: it takes ≥ 32 px"),
     ("vit_b_16", 40, "none", "it takes multiples of 16 px"),
     ("vit_b_16", 160, "imagenet", "its weights take 224 px only"),
     ("resnet50", 16, "imagenet", None), ("vit_b_16", 160, "none", None)],
)  # fmt: skip
def test_the_backbone_table_says_which_sizes_fit(backbone, size, pretrained, said):
    from src.method.encoder import build_backbone, check_image_size

    if said is None:
        check_image_size(backbone, size, pretrained)
        if pretrained == "none":  # what the table allows really runs
            build_backbone(backbone, "none", size).eval()(torch.zeros(1, 3, size, size))
        return
    with pytest.raises(SuiteError, match=said):
        check_image_size(backbone, size, pretrained)


def test_atomic_files_removes_the_folder_a_failed_first_run_made(tmp_path):
    with pytest.raises(RuntimeError), atomic_files(tmp_path / "run", ["encoder.pt"]) as tmp:
        (tmp / "encoder.pt").write_text("half")
        raise RuntimeError("diverged in epoch 1")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "run").mkdir()  # an existing folder stays, even empty
    with pytest.raises(RuntimeError), atomic_files(tmp_path / "run", ["encoder.pt"]):
        raise RuntimeError("again")
    assert (tmp_path / "run").is_dir()


# Row 4 (and the symlink rule): data/<dataset> a link to a folder outside the data root
def test_a1_refuses_a_linked_dataset_folder_and_repairs_an_old_link(tmp_path, capsys):
    a1 = ["--dataset", "synthart", "--num-images", "20", "--image-size", "16"]
    outside = tmp_path / "outside" / "synthart"
    assert run_stage(A1_preprocess.main, [*a1, "--data-root", str(outside.parent)]) == 0
    before = sha256s(outside)
    data = tmp_path / "data"
    data.mkdir()
    (data / "synthart").symlink_to(outside)
    capsys.readouterr()
    for _ in range(2):  # the old code's 1st run left .synthart.old, every later one failed late
        assert run_stage(A1_preprocess.main, [*a1, "--data-root", str(data)]) == 2
        err = one_error_line(capsys.readouterr().err)
        assert f"{data / 'synthart'} is a symbolic link to {outside}" in err
        assert "does not follow links inside its roots" in err and "--data-root" in err
        assert sorted(p.name for p in data.iterdir()) == ["synthart"]
        assert sha256s(outside) == before
    # what the old code left behind: a real data/synthart and data/.synthart.old linking outside
    (data / "synthart").unlink()
    shutil.copytree(outside, data / "synthart")
    (data / ".synthart.old").symlink_to(outside)
    assert run_stage(A1_preprocess.main, [*a1, "--data-root", str(data), "--seed", "1"]) == 0
    assert sorted(p.name for p in data.iterdir()) == ["synthart"]  # the link unlinked…
    assert sha256s(outside) == before  # …and nothing behind it removed


# Row 5: weights/<run> a link outside the weights root (and the same rule for results/)
def test_stages_refuse_linked_run_and_results_folders(pipe, tmp_path, capsys):
    rdir = pipe.weights_root / pipe.run
    outside = tmp_path / "outside_run"
    shutil.move(rdir, outside)
    rdir.symlink_to(outside)
    before = sha256s(outside)
    argv = [*roots(pipe), "--run", pipe.run, "--device", "cpu"]
    assert run_stage(C1_extract_embeddings.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"{rdir} is a symbolic link to {outside}" in err and "--weights-root" in err
    assert sha256s(outside) == before  # no embeddings.npz written through the link
    rdir.unlink()
    shutil.move(outside, rdir)
    elsewhere = tmp_path / "elsewhere"
    for linked in ["figures", "synthart-style/figures", "synthart-style", ""]:
        link = (pipe.results_root / pipe.run / linked).resolve()
        shutil.rmtree(pipe.results_root, ignore_errors=True)
        link.parent.mkdir(parents=True)
        elsewhere.mkdir(exist_ok=True)
        link.symlink_to(elsewhere)
        assert run_stage(E1_evaluate.main, [*argv, "--task", "synthart-style"]) == 2
        assert f"{link} is a symbolic link" in one_error_line(capsys.readouterr().err)
        assert list(elsewhere.iterdir()) == []


# Row 6: a FIFO (or any file that is not a regular one) as E2's picture
def test_e2_refuses_a_fifo_as_its_picture(pipe, capsys):
    import E2_visualize

    fifo = pipe.root / "pipe.png"
    os.mkfifo(fifo)
    argv = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--image", str(fifo),
            "--condition", "style=dots", "--device", "cpu"]  # fmt: skip
    with no_hang(120, fifo=fifo):
        assert run_stage(E2_visualize.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"--image {fifo} is not a regular file" in err
    assert not pipe.results_root.exists()


# Row 7: SIGTERM during E2 leaves the finished run's E2.log (and the rest) byte-identical
def test_e2_killed_leaves_the_earlier_log_byte_identical(pipe, capsys):
    import E2_visualize

    e2 = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--device", "cpu"]
    assert run_stage(E1_evaluate.main, [*e2, "--methods", "random,knn"]) == 0
    assert run_stage(E2_visualize.main, [*e2, "--query-id", "0"]) == 0
    results = pipe.results_root / pipe.run
    e2_log = results / "synthart-style" / "figures" / "E2.log"
    kept = [e2_log, results / "REPORT.md", *(results / "synthart-style").glob("*.*")]
    before, old_log = sha256s(*kept), e2_log.read_bytes()
    ids = [a for i in range(1, 9) for a in ("--query-id", str(i))]  # drawn long enough to kill
    proc = subprocess.Popen([sys.executable, "E2_visualize.py", *e2, *ids],
                            cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 300
        while not any(p.stat().st_size for p in e2_log.parent.glob(".E2.log.*.tmp")):
            assert proc.poll() is None and time.time() < deadline, "E2 ended before it logged"
            time.sleep(0.05)
        proc.terminate()  # SIGTERM while E2 logs and draws
    finally:
        assert proc.wait(timeout=120) == -signal.SIGTERM
    assert sha256s(*kept) == before  # the killed run's lines are not in E2.log
    assert run_stage(E2_visualize.main, [*e2, "--query-id", "1", "--lambdas", "knn"]) == 0
    assert not list(e2_log.parent.glob(".E2.log.*"))  # the killed run's staged log: cleaned
    assert e2_log.read_bytes().startswith(old_log)  # a finished run's log goes on after it


# Row 8: a class name holding a line break (or another unprintable character)
@pytest.mark.parametrize(("name", "code"), [("fl\nat", "U+000A"), ("fl\tat", "U+0009"),
                                            ("fl\u202eat", "U+202E"), ("fl\u2028at", "U+2028")])  # fmt: skip
def test_a1_refuses_unprintable_characters_in_labels_csv(name, code, tmp_path, capsys):
    rows = [["image", "colour"], ["a.png", name], ["b.png", "red"]]
    src = write_labels_csv(tmp_path / "src", rows)
    assert run_stage(A1_preprocess.main, folder_argv(src, tmp_path / "data")) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"row 2, column 'colour' holds the unprintable character {code}" in err
    assert not (tmp_path / "data" / "mine").exists()


# Row 9: café in NFC and in NFD, two classes that look the same
def test_a1_refuses_two_classes_that_differ_only_in_unicode_form(tmp_path, capsys):
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    rows = [["image", "colour"], ["a.png", nfc], ["b.png", nfd], ["c.png", "tea"]]
    src = write_labels_csv(tmp_path / "src", rows)
    assert run_stage(A1_preprocess.main, folder_argv(src, tmp_path / "data")) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"{nfc!r} and {nfd!r} are the same name in different Unicode forms" in err
    assert not (tmp_path / "data" / "mine").exists()


def test_class_names_are_stored_in_nfc_and_found_however_typed(tmp_path):
    from src.datasets.folder import read_labels_csv
    from src.labels import class_id

    nfd = "cafe\u0301"
    rows = [["image", "colour", "tags"], ["a.png", nfd, f"{nfd}|x"], ["b.png", "tea", "y"]]
    df, _ = read_labels_csv(write_labels_csv(tmp_path / "src", rows))
    assert list(df["colour"]) == ["caf\u00e9", "tea"] and df["tags"][0] == "caf\u00e9|x"
    labels = {"colour": ["caf\u00e9", "tea"]}
    for typed in ["caf\u00e9", nfd, "cafe", "CAFE"]:  # NFC, NFD, without the accent
        assert class_id(labels, "colour", typed) == 0


# Row 10: no test image has tags
def test_a2_names_missing_tags_as_the_cause(pipe, capsys):
    data = pipe.data_root / "synthart"
    test = pd.read_csv(data / "test.csv", dtype=str, keep_default_na=False)
    test["tags"] = ""
    test.to_csv(data / "test.csv", index=False)
    queries = sha256s(*data.glob("queries_*"))
    argv = [*roots(pipe), "--task", "synthart-style", "--num-queries", "5"]
    assert run_stage(A2_make_queries.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"none of the {len(test)} test images has tags (the tags column is empty)" in err
    assert "too small" not in err and sha256s(*data.glob("queries_*")) == queries


def test_a1_refuses_an_empty_tags_column(tmp_path, capsys):
    rows = [["image", "colour", "tags"]] + [[f"{c}{k}.png", c, ""] for c in "ab" for k in range(12)]
    src = write_labels_csv(tmp_path / "src", rows, images=True)
    assert run_stage(A1_preprocess.main, folder_argv(src, tmp_path / "data")) == 2
    assert "the tags column is empty" in one_error_line(capsys.readouterr().err)


# Row 11: a student of another task (or attribute set), and E2 --image with one of two conditions
def test_a_student_of_another_task_names_the_file_and_d1(pipe, capsys):
    multi = [*roots(pipe), "--run", pipe.run, "--task", "synthart-multi", "--epochs", "1",
             "--batch-size", "64", "--device", "cpu"]  # fmt: skip
    assert run_stage(D1_train_distill.main, multi) == 0
    rdir = pipe.weights_root / pipe.run
    wrong = student_path(rdir, "synthart-style", 1.0)
    shutil.copy(student_path(rdir, "synthart-multi", 2.0), wrong)
    capsys.readouterr()
    e1 = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--device", "cpu"]
    assert run_stage(E1_evaluate.main, e1) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"{wrong} is a student for genre+style (task synthart-multi), but synthart-style " in err
    assert "re-run D1_train_distill.py --task synthart-style --run tiny_e18 --lambda 1" in err
    assert not pipe.results_root.exists()


def test_e2_picture_with_one_of_two_conditions_searches_without_the_student(pipe, capsys):
    from PIL import Image

    import E2_visualize

    d1 = [*roots(pipe), "--run", pipe.run, "--task", "synthart-multi", "--epochs", "1",
          "--batch-size", "64", "--device", "cpu"]  # fmt: skip
    assert run_stage(D1_train_distill.main, d1) == 0
    pic = pipe.root / "photo.png"
    Image.new("RGB", (32, 32), (120, 60, 30)).save(pic)
    argv = [*roots(pipe), "--run", pipe.run, "--task", "synthart-multi", "--image", str(pic),
            "--condition", "style=dots", "--device", "cpu"]  # fmt: skip
    assert run_stage(E2_visualize.main, argv) == 0
    out = capsys.readouterr().out
    assert "searched by Backward Search alone" in out and "style, genre" in out
    assert (
        pipe.results_root / pipe.run / "synthart-multi" / "figures" / "search_photo.png"
    ).exists()


# Our own round of probes (issue 21's closing note lists each with its verdict)


def test_an_error_stays_one_line_whatever_a_path_holds(capsys):
    def main(argv):
        raise SuiteError("results/a\nb\u2028c/metrics.json not found: run E1 first")

    assert run_stage(main, []) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "results/a\\nb\\u2028c/metrics.json" in err


@pytest.mark.parametrize(
    "oom",
    [MemoryError(), RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: "
                                 "can't allocate memory: you tried to allocate 2560000000000 bytes"),
     torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")],
)  # fmt: skip
def test_out_of_memory_is_one_line(oom, capsys):
    """Host RAM, or (the CPU twin of) a CUDA device's: a machine limit like a full disk."""

    def main(argv):
        raise oom

    assert run_stage(main, []) == 2
    err = one_error_line(capsys.readouterr().err)
    assert err.startswith("error: out of memory (") and "lower --batch-size" in err


def test_a_device_index_torch_cannot_parse_is_one_line():
    from src.cli import resolve_device

    with pytest.raises(SuiteError, match="is not a device torch can name"):
        resolve_device("cuda:99999999999999999999")


def test_more_queries_than_pairs_is_refused_at_once(pipe, capsys):
    argv = [*roots(pipe), "--task", "synthart-style", "--num-queries", "1000000000"]
    with no_hang(120):  # it used to draw for a budget of 50 draws per query
        assert run_stage(A2_make_queries.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "--num-queries 1000000000 is more than the 384 (test image, condition) pairs" in err


def test_embeddings_of_another_run_are_one_line(pipe, capsys):
    from src.embeddings import load_embeddings

    path = pipe.weights_root / pipe.run / "embeddings.npz"
    arrays = load_embeddings(path.parent)
    arrays["z"] = np.concatenate([arrays["z"], arrays["z"][:, :5]], axis=1)  # another run's E
    save_npz(path, **arrays)
    argv = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--device", "cpu"]
    assert run_stage(E1_evaluate.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "embeddings.npz holds 23-d embeddings, but the encoder of run tiny_e18 makes 18-d" in err


@pytest.mark.parametrize(
    ("styles", "said"),
    [(["flat", "flat", "hatch", "mosaic"], "a class of style twice"),
     ([1, 2, 3, 4], "the class 1 of style"), ([None, "dots"], "the class None of style"),
     (["flat", "do\nts"], "the class 'do\\nts' of style"), (["flat", ""], "the class ''")],
)  # fmt: skip
def test_a_hand_edited_labels_json_is_one_line(styles, said, pipe, capsys):
    path = pipe.data_root / "synthart" / "labels.json"
    path.write_text(json.dumps({"style": styles, "genre": ["portrait", "landscape", "still_life"]}))
    argv = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--device", "cpu"]
    assert run_stage(E1_evaluate.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"labels.json lists {said}" in err and "re-run A1" in err


@pytest.mark.parametrize(
    ("entry", "said"),
    [({"attributes": "style", "classes": {c: [1] for c in "style"}}, "'attributes' is not a list"),
     ({"attributes": ["style", "style"], "classes": {"style": [1, 2]}}, "each once"),
     ({"attributes": ["style"]}, "KeyError: 'classes'"), ([], "TypeError")],
)  # fmt: skip
def test_a_hand_edited_dataset_json_is_one_line(entry, said, tmp_path, capsys):
    from src.tasks import main as list_tasks

    (tmp_path / "data" / "mine").mkdir(parents=True)
    (tmp_path / "data" / "mine" / "dataset.json").write_text(json.dumps(entry))
    argv = ["--task", "mine:style", "--data-root", str(tmp_path / "data")]
    assert run_stage(A2_make_queries.main, argv) == 2
    assert said in one_error_line(capsys.readouterr().err)
    assert list_tasks(["--data-root", str(tmp_path / "data")]) == 2  # the listing too
    assert said in one_error_line(capsys.readouterr().err)


def test_an_unreadable_input_says_permission_not_rerun(pipe, capsys, monkeypatch):
    real = Path.read_text

    def denied(self, *a, **k):
        if self.name == "labels.json":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", denied)
    argv = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--device", "cpu"]
    assert run_stage(E1_evaluate.main, argv) == 2
    err = one_error_line(capsys.readouterr().err)
    assert "labels.json: Permission denied; permission denied: fix the permissions" in err
    assert "re-run" not in err


def test_logging_survives_a_terminal_that_is_not_utf8(monkeypatch):
    import io
    import logging

    from src.cli import setup_logging

    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii"))
    setup_logging()
    logging.getLogger("src.E1").info("λ = 1 ≥ 0")
    sys.stdout.flush()
    setup_logging()
    assert raw.getvalue() == b"\\u03bb = 1 \\u2265 0\n"


def test_a1_skips_a_fifo_named_in_labels_csv(tmp_path, capsys):
    rows = [["image", "colour"]] + [[f"{c}{k}.png", c] for c in "ab" for k in range(12)]
    src = write_labels_csv(tmp_path / "src", rows, images=True)
    write_labels_csv(src, [*rows, ["pipe.png", "a"]])  # labels.csv names it too
    os.mkfifo(src / "pipe.png")
    with no_hang(120, fifo=src / "pipe.png"):
        assert run_stage(A1_preprocess.main, folder_argv(src, tmp_path / "data")) == 0
        assert "skipping unreadable image" in capsys.readouterr().out
        strict = folder_argv(src, tmp_path / "data", "--strict")
        assert run_stage(A1_preprocess.main, strict) == 2
    assert "pipe.png: not a regular file" in one_error_line(capsys.readouterr().err)


# Row 12: the memory floor is documented, not promised; the documented number must hold
def test_the_documented_memory_floor_runs_a_stage(tmp_path):
    import re
    import resource

    repo = Path(__file__).resolve().parents[1]
    promises = (repo / "docs" / "promises.md").read_text(encoding="utf-8")
    floor_kib = int(re.search(r"`ulimit -v (\d+)` \(KiB, ≈ [\d.]+ GiB\) runs", promises)[1])
    assert f"`ulimit -v {floor_kib}`" in (repo / "README.md").read_text(encoding="utf-8")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (floor_kib * 1024, floor_kib * 1024))

    a1 = [sys.executable, "A1_preprocess.py", "--dataset", "synthart", "--num-images", "20",
          "--image-size", "16", "--data-root", str(tmp_path)]  # fmt: skip
    done = subprocess.run(a1, cwd=repo, preexec_fn=limit, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "synthart" / "train.csv").is_file()


def test_a1_skips_a_decompression_bomb_in_a_folder(tmp_path, capsys, monkeypatch):
    """Pillow raises DecompressionBombError (not an OSError) above twice its pixel limit."""
    from PIL import Image

    rows = [["image", "colour"]] + [[f"{c}{k}.png", c] for c in "ab" for k in range(12)]
    src = write_labels_csv(tmp_path / "src", rows, images=True)
    Image.new("RGB", (12, 12)).save(src / "a0.png")  # 144 px > 2 × 64: a bomb here
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64)  # the others: 8×8
    assert run_stage(A1_preprocess.main, folder_argv(src, tmp_path / "data")) == 0
    assert "skipping unreadable image" in capsys.readouterr().out
    mine = tmp_path / "data" / "mine"
    assert "a0.png" not in (mine / "train.csv").read_text() + (mine / "test.csv").read_text()
    strict = folder_argv(src, tmp_path / "data", "--strict", "--seed", "1")
    assert run_stage(A1_preprocess.main, strict) == 2
    assert "could be decompression bomb" in one_error_line(capsys.readouterr().err)


def test_an_input_that_is_a_pipe_is_refused_not_read(pipe, capsys):
    """Every loader goes through artifacts.require: a FIFO as --pretrained (or any input) would
    block the stage forever."""
    fifo = pipe.root / "weights.pth"
    os.mkfifo(fifo)
    with no_hang(120, fifo=fifo):
        assert run_stage(B1_train_encoder.main, b1_argv(pipe, "--pretrained", str(fifo))) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"{fifo} is not a regular file (a folder, pipe or device)" in err
    assert sorted(p.name for p in pipe.weights_root.iterdir()) == [pipe.run]


@pytest.mark.parametrize(
    ("content", "said"),
    [("TRUNCATE", "is not readable JSON"), ('{"methods": 5}', "is damaged (not E1's table"),
     ('{"methods": {"knn": 3}}', "is damaged"), ("[]", "is damaged")],
)  # fmt: skip
def test_e2_with_a_damaged_e1_metrics_json_is_one_line(content, said, pipe, capsys):
    """REPORT.md and E2's figures read E1's metrics.json through artifacts.read_metrics."""
    import E2_visualize

    e2 = [*roots(pipe), "--run", pipe.run, "--task", "synthart-style", "--device", "cpu"]
    assert run_stage(E1_evaluate.main, [*e2, "--methods", "random,knn"]) == 0
    metrics = pipe.results_root / pipe.run / "synthart-style" / "metrics.json"
    text = metrics.read_text()
    metrics.write_text(text[: len(text) // 2] if content == "TRUNCATE" else content)
    before = sha256s(pipe.results_root)
    capsys.readouterr()
    assert run_stage(E2_visualize.main, [*e2, "--query-id", "0"]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"{metrics} {said}" in err and "re-run E1_evaluate.py" in err
    assert sha256s(pipe.results_root) == before
