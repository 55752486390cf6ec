"""--threads on every stage, its default (OMP_NUM_THREADS, the affinity mask), Backward Search's
own thread count and its bits, and idle OpenMP threads that sleep instead of spinning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.toy import toy_space, train_heads
from src import threads
from src.cli import stage_parser
from src.evaluation import methods
from src.method import student
from src.method.backward_search import backward_search

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def keep_threads():
    before, chosen = torch.get_num_threads(), threads._chosen
    yield
    torch.set_num_threads(before)
    threads._chosen = chosen


def test_threads_flag_sets_torch_threads_when_parsed():
    stage_parser("x").parse_args(["--threads", "2"])
    assert torch.get_num_threads() == 2
    stage_parser("x").parse_args(["--threads", "1"])
    assert torch.get_num_threads() == 1


def test_threads_flag_refuses_zero():
    with pytest.raises(SystemExit):
        stage_parser("x").parse_args(["--threads", "0"])


def test_default_respects_omp_num_threads_then_the_affinity_mask(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    assert threads.default_threads() == 2  # torch would take 8; the process may run on 2 CPUs


def test_a_bad_omp_num_threads_is_one_line(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    with pytest.raises(threads.SuiteError, match="OMP_NUM_THREADS"):
        threads.default_threads()


def test_search_loops_run_on_one_thread_unless_threads_is_given():
    threads.use_threads(None)
    torch.set_num_threads(2)
    with threads.search_threads():
        assert torch.get_num_threads() == threads.SEARCH_THREADS
    assert torch.get_num_threads() == 2  # restored
    threads.use_threads(2)
    with threads.search_threads():
        assert torch.get_num_threads() == 2


def test_search_gives_the_same_bits_on_one_or_two_threads():
    z, labels = toy_space(300, 32, {"style": 5, "genre": 3}, seed=0)
    heads = train_heads(z[:200], {a: y[:200] for a, y in labels.items()}, steps=30)
    g = torch.Generator().manual_seed(1)
    cond = {a: torch.randint(c, (100,), generator=g) for a, c in (("style", 5), ("genre", 3))}
    out = []
    for n in (1, 2):
        torch.set_num_threads(n)
        out.append(backward_search(heads, z[200:], cond, 1.5).z)
    assert torch.equal(out[0], out[1])


def test_e1_and_e2_search_on_the_search_threads(monkeypatch):
    seen = []
    monkeypatch.setattr(
        methods, "backward_search", lambda *a, **k: seen.append(torch.get_num_threads())
    )
    threads.use_threads(None)
    torch.set_num_threads(2)
    space = SimpleNamespace(device=torch.device("cpu"), heads={})
    methods.search(space, SimpleNamespace(z0=torch.zeros(1, 2), conditions={}), 1.0)
    assert seen == [threads.SEARCH_THREADS]


def test_idle_openmp_threads_sleep_unless_the_user_chose(tmp_path):
    code = "import os, src; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = lambda e: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], env=e, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert run(env) == "PASSIVE"
    assert run({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"


def test_d1_searches_on_the_search_threads_and_trains_on_the_stage_threads(monkeypatch):
    z, labels = toy_space(64, 8, {"style": 3}, seed=0)
    heads = train_heads(z, labels, steps=5)
    seen = []
    real = student.backward_search

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return real(*a, **k)

    monkeypatch.setattr(student, "backward_search", spy)
    threads.use_threads(None)
    torch.set_num_threads(2)
    settings = student.DistillConfig(epochs=1, batch_size=32)
    student.distill(heads, z, ["style"], {"style": 3}, 1.0, settings, progress=False)
    assert seen and set(seen) == {threads.SEARCH_THREADS}
    assert torch.get_num_threads() == 2  # the student's own steps: the stage's threads
