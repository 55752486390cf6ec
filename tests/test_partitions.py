"""C1 beyond one process: partitions written by every rank (torchrun, two "nodes", SLURM's
variables), the joined set the same bits as one process, a killed rank's partitions recomputed
alone, an unfinished set refused in one line, and the memory-mapped reader."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import C1_extract_embeddings as c1
import src.partitions as partitions
from src.artifacts import save_npz, save_torch
from src.atomic import stage_lock
from src.cli import run_stage
from src.embeddings import Extraction, extract_embeddings, load_embeddings
from src.errors import SuiteError
from src.method.encoder import build_encoder, encoder_config
from src.partitions import Plan, open_partitions
from src.ranks import Rank, rank_device, this_rank
from src.tasks import default_run
from tests._encoder import GENRES, STYLES, make_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
RUN = default_run("synthart")
# 17 rows (10 train + 7 test) in partitions of 4: 4 + 4 + 4 + 4 + 1, the third one across the
# split boundary; batches of 3 cut inside each partition's part of a split
C1_ARGS = ("--run", RUN, "--partition-rows", "4", "--batch-size", "3", "--device", "cpu",
           "--train-transform", "train", "--seed", "3")  # fmt: skip


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny processed dataset and an encoder.pt (random weights), made once for the module."""
    root = tmp_path_factory.mktemp("c1")
    data = root / "data"
    make_tiny_dataset(data, n_train=10, n_test=7)
    torch.manual_seed(0)
    cfg = encoder_config(
        "synthart", "convnext_atto", 8, False, {"style": STYLES, "genre": GENRES}, 32, False
    )
    weights = root / "weights"
    save_torch(
        weights / RUN / "encoder.pt", {"config": cfg, "model": build_encoder(cfg).state_dict()}
    )
    return data, weights


@pytest.fixture()
def roots(shared, tmp_path) -> tuple[Path, Path]:
    """The shared dataset and a fresh weights root holding only the encoder."""
    data, weights = shared
    return data, copy_weights(weights, tmp_path / "weights")


def copy_weights(weights: Path, to: Path) -> Path:
    (to / RUN).mkdir(parents=True)
    shutil.copy2(weights / RUN / "encoder.pt", to / RUN / "encoder.pt")
    return to


def argv(data: Path, weights: Path) -> list[str]:
    return ["--data-root", str(data), "--weights-root", str(weights), *C1_ARGS]


def launch(cmd: list[str], threads: int = 1, **env: str) -> subprocess.Popen:
    """A process of the repository's Python with `threads` intra-op threads and extra env."""
    full = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT), **env}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        if name not in env:
            full.pop(name, None)
    return subprocess.Popen(cmd, cwd=ROOT, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def finished(*procs: subprocess.Popen) -> list[str]:
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
        outs.append(out)
    return outs


def torchrun(*flags: str) -> list[str]:
    """torchrun … C1 -- : the `--` keeps torchrun from reading C1's --run as its --run-path."""
    c1_path = str(ROOT / "C1_extract_embeddings.py")
    return [sys.executable, "-m", "torch.distributed.run", *flags, c1_path, "--"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def writers(weights: Path) -> dict[str, int]:
    folder = weights / RUN / "embeddings"
    return {
        p.name: json.loads((p / "part.json").read_text())["rank"]
        for p in sorted(folder.glob("part-*"))
    }


@pytest.fixture(scope="module")
def one_process(shared) -> dict[str, np.ndarray]:
    """The reference: one plain process with one thread, as each rank below has (another thread
    count may round a CPU matrix product differently: not what these tests are about)."""
    data, weights = shared
    ref = copy_weights(weights, weights.parent / "one")
    finished(launch([sys.executable, str(ROOT / "C1_extract_embeddings.py"), *argv(data, ref)], 1))
    return load_embeddings(ref / RUN)


def test_two_ranks_under_torchrun_write_the_same_bits_as_one_process(roots, one_process, tmp_path):
    data, weights = roots
    two = copy_weights(weights, tmp_path / "two")
    (out,) = finished(launch([*torchrun("--standalone", "--nproc_per_node=2"), *argv(data, two)]))
    assert_same_bits(load_embeddings(two / RUN), one_process)
    # every rank wrote its own partitions (0, 2, 4 and 1, 3), each once
    assert writers(two) == {"part-00000": 0, "part-00001": 1, "part-00002": 0, "part-00003": 1,
                            "part-00004": 0}  # fmt: skip
    assert not (two / RUN / "embeddings.partial").exists()
    # the heads' accuracy, summed over the partitions, is the whole test split's
    whole, accuracy = extract_embeddings(
        *_model_and_config(weights), data, torch.device("cpu"), 3, train_transform="train", seed=3
    )
    metrics = json.loads((two / RUN / "metrics.json").read_text())
    assert metrics["test_accuracy"] == accuracy and metrics["partitions"] == 5
    # and the values are the rows' own (seeded flips per image, not per partition); batches of
    # other composition may move the last bits only
    np.testing.assert_allclose(one_process["z"], whole["z"], rtol=0, atol=1e-5)
    assert all(np.array_equal(one_process[k], whole[k]) for k in whole if k != "z")


def _model_and_config(weights: Path):
    from src.method.encoder import load_encoder

    return load_encoder(weights / RUN, torch.device("cpu"))


def test_two_nodes_on_one_machine_write_the_same_bits(roots, one_process, tmp_path):
    """Two torchrun agents (--nnodes=2, --node-rank 0 and 1) meeting on 127.0.0.1."""
    data, weights = roots
    nodes = copy_weights(weights, tmp_path / "nodes")
    port = str(free_port())
    flags = ["--nnodes=2", "--nproc_per_node=1", "--master-addr=127.0.0.1", f"--master-port={port}"]
    procs = [launch([*torchrun(*flags, f"--node-rank={n}"), *argv(data, nodes)]) for n in (0, 1)]
    finished(*procs)
    assert_same_bits(load_embeddings(nodes / RUN), one_process)
    assert set(writers(nodes).values()) == {0, 1}


KILL_AFTER = """
import os, signal, sys
import src.partitions as P
import C1_extract_embeddings as c1
real, calls = P.save_npy, [0]
def save_then_die(*a, **k):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):  # SIGKILL in the middle of writing a partition
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
P.save_npy = save_then_die
c1.main(sys.argv[2:])
"""


def test_a_killed_rank_is_finished_by_a_rerun_that_computes_only_its_partitions(
    roots, one_process, tmp_path, monkeypatch, capsys
):
    data, weights = roots
    w = copy_weights(weights, tmp_path / "killed")
    partial = w / RUN / "embeddings.partial"
    # rank 0 of 2 (SLURM's variables) writes partitions 0, 2, 4; rank 1 (torchrun's) is killed
    # while writing its second partition (part-00003), the first of its five files written
    finished(launch([sys.executable, str(ROOT / "C1_extract_embeddings.py"), *argv(data, w)],
                    SLURM_PROCID="0", SLURM_NTASKS="2"))  # fmt: skip
    (tmp_path / "die.py").write_text(KILL_AFTER)
    cmd = [sys.executable, str(tmp_path / "die.py"), str(5 + 1), *argv(data, w)]
    dead = launch(cmd, RANK="1", WORLD_SIZE="2")
    dead.communicate(timeout=300)
    assert dead.returncode == -signal.SIGKILL
    assert sorted(p.name for p in partial.glob("part-*")) == [
        "part-00000", "part-00001", "part-00002", "part-00004"]  # fmt: skip
    assert any(p.name.startswith(".part-00003.") for p in partial.iterdir())  # its half-write
    # unfinished: every reader refuses in one line naming what is missing and how to finish
    with pytest.raises(SuiteError) as e:
        load_embeddings(w / RUN)
    msg = str(e.value)
    assert "\n" not in msg and "1 of 5 partitions missing (part-00003)" in msg
    assert "C1_extract_embeddings.py --run" in msg and "--partition-rows 4" in msg
    # the rerun (one process, all partitions its share) embeds part-00003 only
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in partial.glob("part-*/z.npy")
              for p in [p.parent]}  # fmt: skip
    embedded = []
    real = Extraction.embed
    monkeypatch.setattr(
        Extraction, "embed", lambda self, a, b: embedded.append((a, b)) or real(self, a, b)
    )
    c1.main(argv(data, w))
    assert embedded == [(12, 16)]
    folder = w / RUN / "embeddings"
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("part-*")}
    assert {k: after[k] for k in before} == before  # the other partitions untouched
    assert not partial.exists() and not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert_same_bits(load_embeddings(w / RUN), one_process)
    # a second rerun finds the set published: nothing to embed
    embedded.clear()
    c1.main(argv(data, w))
    assert embedded == []


def as_rank(rank: int, world: int, *args: str) -> None:
    """C1 in this process as rank `rank` of `world` (torchrun's variables)."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("RANK", str(rank))
        m.setenv("WORLD_SIZE", str(world))
        c1.main(list(args))


def test_an_unfinished_set_is_refused_by_the_stages_in_one_line(roots, capsys):
    data, weights = roots
    as_rank(1, 3, *argv(data, weights))  # rank 1 of 3: partitions 1 and 4 only
    import D1_train_distill as d1

    rc = run_stage(d1.main, ["--data-root", str(data), "--weights-root", str(weights), "--run",
                             RUN, "--task", "synthart-style", "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "3 of 5 partitions missing (part-00000, part-00002, part-00003)" in err[0]


def test_a_partial_set_of_other_settings_is_never_mixed_in(roots, capsys):
    data, weights = roots
    as_rank(0, 2, *argv(data, weights))
    partial = weights / RUN / "embeddings.partial"
    before = sorted(p.name for p in partial.iterdir())
    other = [*argv(data, weights)[:-1], "4"]  # --seed 4: other random flips
    assert run_stage(c1.main, other) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "seed 3 there, 4 now" in err and "--seed 3" in err
    assert sorted(p.name for p in partial.iterdir()) == before


def test_publishing_replaces_an_earlier_embeddings_npz_and_old_files_still_load(roots):
    data, weights = roots
    arrays, _ = extract_embeddings(*_model_and_config(weights), data, torch.device("cpu"))
    save_npz(weights / RUN / "embeddings.npz", **arrays)
    legacy = open_partitions(weights / RUN)
    assert legacy.source.name == "embeddings.npz" and len(legacy) == 17
    assert_same_bits(load_embeddings(weights / RUN), arrays)
    c1.main(argv(data, weights))
    assert not (weights / RUN / "embeddings.npz").exists()
    assert open_partitions(weights / RUN).source.name == "embeddings"


def test_of_two_ranks_finding_the_set_complete_one_publishes(roots, tmp_path):
    """A rank that finds the lock held waits, then sees the set published by the holder."""
    data, weights = roots
    as_rank(0, 1, *argv(data, weights))
    rdir = weights / RUN
    manifest = json.loads((rdir / "embeddings" / "manifest.json").read_text())
    plan = Plan(17, 4, {**manifest["plan"]["settings"], "batch_size": 99})  # another plan
    (rdir / "embeddings.partial").mkdir()
    shutil.copytree(rdir / "embeddings", rdir / "embeddings.partial", dirs_exist_ok=True)
    (rdir / "embeddings.partial" / "manifest.json").unlink()
    calls = []

    def other_rank() -> None:
        with stage_lock(rdir / "embeddings"):
            time.sleep(0.5)
            partitions._publish(rdir, plan, lambda infos: calls.append("other"))

    t = threading.Thread(target=other_rank)
    t.start()
    time.sleep(0.1)
    assert partitions.finish(rdir, plan, lambda infos: calls.append("me")) is True
    t.join()
    assert calls == ["other"] and partitions.published(rdir, plan)


def test_the_reader_maps_partitions_and_gathers_rows(roots):
    data, weights = roots
    c1.main(argv(data, weights))
    store = open_partitions(weights / RUN)
    whole = load_embeddings(weights / RUN)
    assert [(p.start, p.stop) for p in store.parts] == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 17)]
    z0 = store.z(0)
    assert isinstance(z0, np.memmap) and not z0.flags.writeable
    assert np.array_equal(np.concatenate([z for _, z in store.tiles()]), whole["z"])
    rows = np.array([16, 0, 5, 5, 12, 3])
    assert np.array_equal(store.take(rows), whole["z"][rows])
    with pytest.raises(SuiteError, match="rows outside 0 … 16"):
        store.take(np.array([17]))
    store.verify()
    victim = weights / RUN / "embeddings" / "part-00002" / "z.npy"
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 1
    victim.write_bytes(bytes(raw))
    with pytest.raises(SuiteError, match="part-00002/z.npy is not the file C1 wrote"):
        store.verify()


# ---------------------------------------------------------------------------------------------
# Ranks


def test_ranks_from_torchrun_slurm_or_neither():
    assert this_rank({}) == Rank(0, 1, 0, 1)
    assert this_rank(
        {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    ) == Rank(3, 8, 1, 4)
    slurm = {
        "SLURM_PROCID": "5",
        "SLURM_NTASKS": "6",
        "SLURM_LOCALID": "2",
        "SLURM_NTASKS_PER_NODE": "3(x2)",
    }
    assert this_rank(slurm) == Rank(5, 6, 2, 3)
    assert this_rank({**slurm, "RANK": "0", "WORLD_SIZE": "2"}).world == 2  # torchrun's first
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"RANK": "x", "WORLD_SIZE": "2"}):
        with pytest.raises(SuiteError):
            this_rank(bad)
    assert Plan(17, 4).mine(Rank(1, 2)) == [1, 3] and Plan(17, 4).mine(Rank(2, 8)) == [2]


def test_each_rank_takes_its_own_gpu():
    """The CUDA branch on the CPU: device objects only, no GPU needed."""
    two = Rank(1, 2, 1, 2)
    assert rank_device(torch.device("cuda"), two, 2) == torch.device("cuda", 1)  # sees the node's
    assert rank_device(torch.device("cuda"), two, 1) == torch.device("cuda", 0)  # sees its own
    assert rank_device(torch.device("cuda", 0), two, 2) == torch.device("cuda", 0)  # asked for
    assert rank_device(torch.device("cuda"), Rank(), 2) == torch.device("cuda")
    assert rank_device(torch.device("cpu"), two, 0) == torch.device("cpu")


def test_a_partition_finished_after_the_set_was_published_is_dropped(roots):
    """A slow rank of a rerun whose set another rank published meanwhile adds nothing (no stray
    partial folder is created beside the published set)."""
    data, weights = roots
    c1.main(argv(data, weights))
    rdir = weights / RUN
    plan = Plan(17, 4, {"any": 1})
    arrays = {
        "z": np.zeros((4, 8), np.float32),
        "image": np.array(["a"] * 4),
        "split": np.array(["test"] * 4),
    }
    assert partitions.write_partition(rdir / "embeddings.partial", plan, 0, arrays, {}) is None
    assert not (rdir / "embeddings.partial").exists()
