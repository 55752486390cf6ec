"""--threads on every stage, its default (OMP_NUM_THREADS, the affinity mask) and its cap, Backward
Search's own thread count and its bits, and whether idle OpenMP threads spin or sleep."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench.toy import toy_space, train_heads
from src import cli, threads, wait_policy
from src.artifacts import stage_config
from src.cli import stage_parser
from src.errors import SuiteError
from src.evaluation import methods
from src.hints import STAGE_SCRIPTS
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
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.default_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert threads.default_threads() == 2  # torch would take 8; the process may run on 2 CPUs


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_threads_past_the_affinity_mask_are_capped_with_one_warning(how, monkeypatch, caplog):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with caplog.at_level(logging.WARNING, logger="src.threads"):
        if how == "flag":
            stage_parser("x").parse_args(["--threads", "1000"])
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", "1000")
            threads.use_threads(None)
    assert torch.get_num_threads() == 2 and threads.default_threads(warn=False) == 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "1000" in lines[0] and "using 2" in lines[0], lines


def test_threads_within_the_affinity_mask_are_not_capped(monkeypatch, caplog):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with caplog.at_level(logging.WARNING, logger="src.threads"):
        assert threads.default_threads() == 3
        stage_parser("x").parse_args(["--threads", "3"])
    assert torch.get_num_threads() == 3 and caplog.records == []


def test_a_thousand_threads_asked_for_start_no_more_than_the_cpus():
    """The symptom: OMP_NUM_THREADS=1000 on a 2-CPU machine started 2,001 threads."""
    code = (
        "import os, torch; from src.threads import use_threads; use_threads(None); "
        "x = torch.randn(512, 512); (x @ x).sum(); torch.nn.functional.conv2d("
        "torch.randn(8, 16, 32, 32), torch.randn(16, 16, 3, 3)).sum(); "
        "print(len(os.listdir('/proc/self/task')))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1000"}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )
    cpus = len(os.sched_getaffinity(0))
    # the main thread, at most `cpus` OpenMP threads, torch's few helper threads
    assert int(run.stdout) <= 2 * cpus + 4, run.stdout
    assert run.stderr.count("WARNING") == 1 and f"using {cpus}" in run.stderr


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


# -- whether idle threads spin or sleep (src/wait_policy.py) -------------------------------------


def busy_processes(per_cpu: int) -> list[subprocess.Popen]:
    """`per_cpu` busy processes pinned to each CPU of the affinity mask, at this process's nice."""
    return [
        subprocess.Popen(["taskset", "-c", str(c), sys.executable, "-c", "while True: pass"])
        for c in sorted(os.sched_getaffinity(0))
        for _ in range(per_cpu)
    ]


def stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        p.kill()
        p.wait()


def test_threads_that_share_their_cpus_with_busy_processes_get_less_than_the_min_share():
    busy = busy_processes(per_cpu=2)
    try:
        time.sleep(0.3)
        # each thread can get at most a third of its CPU beside two equals (others only lower it)
        assert wait_policy.cpu_share(len(os.sched_getaffinity(0))) < wait_policy.MIN_SHARE
    finally:
        stop(busy)


def test_two_threads_on_one_cpu_get_half_of_it_each():
    """The share is each thread's own CPU time over the wall time, not the process's."""
    code = "from src.wait_policy import cpu_share; print(cpu_share(2, 0.3))"
    cpu = str(min(os.sched_getaffinity(0)))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # no measurement at `import src`
    run = subprocess.run(
        ["taskset", "-c", cpu, sys.executable, "-c", code],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert 0.0 < float(run.stdout) <= 0.55


@pytest.mark.parametrize(
    ("share", "n", "idle"),
    [
        (1.0, 2, "spin, then sleep"),  # a quiet machine: a core each
        (0.8, 2, "spin, then sleep"),  # a little other work
        (0.5, 2, "sleep"),  # one thread shares its core with an equal
        (0.12, 2, "sleep"),  # the shared machine at load 19
        (1.0, 1, "sleep"),  # one thread waits for no other
        (None, 2, "sleep"),  # unmeasured: the safe choice
    ],
)
def test_threads_spin_only_while_each_gets_a_cpu_of_its_own(share, n, idle):
    assert wait_policy.choose(share, n, 2).idle == idle


def test_the_choice_goes_into_the_environment_unless_the_user_chose(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.delitem(sys.modules, "torch")  # as at a stage's `import src`
    for share, key, value in ((0.3, "OMP_WAIT_POLICY", "PASSIVE"),
                              (1.0, "GOMP_SPINCOUNT", str(wait_policy.SPIN_COUNT))):  # fmt: skip
        monkeypatch.setattr(wait_policy, "cpu_share", lambda n, s=share: s)
        env: dict[str, str] = {}
        assert wait_policy.decide(env).cpu_share == share
        assert env == {key: value, wait_policy.OURS: f"{key}={value}"}
    mark = {wait_policy.OURS: "OMP_WAIT_POLICY=PASSIVE"}  # what a parent that imported src chose
    for given in (
        {"OMP_WAIT_POLICY": "ACTIVE"},
        {"GOMP_SPINCOUNT": "7"},
        {"OMP_WAIT_POLICY": "ACTIVE", **mark},
    ):
        env = dict(given)
        policy = wait_policy.decide(env)
        assert env == {k: v for k, v in given.items() if k != wait_policy.OURS}
        assert policy.idle == "as set" and policy.setting in policy.line()
    # the parent's own choice is inherited, not the user's: the child measures for itself
    env = {"OMP_WAIT_POLICY": "PASSIVE", **mark}
    assert wait_policy.decide(env).cpu_share == 1.0  # the last share patched in above
    assert env == {
        "GOMP_SPINCOUNT": str(wait_policy.SPIN_COUNT),
        wait_policy.OURS: "GOMP_SPINCOUNT=20000",
    }


def test_a_busy_machine_makes_idle_threads_sleep_in_a_stage_process():
    env = dict(os.environ)  # holds this test process's own choice: the child measures anew
    code = (
        "import os, src; print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))"
    )
    run = lambda e: subprocess.run(  # noqa: E731
        [sys.executable, "-c", code], env=e, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    busy = busy_processes(per_cpu=2)
    try:
        assert run(env) == ["PASSIVE", "None"]
        assert run({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == ["ACTIVE", "None"]
        assert run({**env, "GOMP_SPINCOUNT": "7"}) == ["None", "7"]
    finally:
        stop(busy)


@pytest.mark.parametrize("stage", list(STAGE_SCRIPTS))
def test_every_stage_chooses_the_policy_before_torch_loads(stage):
    """libgomp reads the policy once, when torch loads: a stage that loaded torch before `src`
    would run with libgomp's own default whatever the load."""
    module = STAGE_SCRIPTS[stage].removesuffix(".py")
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    done = [line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if "|" in line]
    first_torch = next((i for i, name in enumerate(done) if name.split(".")[0] == "torch"), None)
    assert done.index("src.wait_policy") < (first_torch if first_torch is not None else len(done))


def test_the_choice_is_logged_once_and_recorded_in_config(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_threads_logged", False)
    cli.setup_logging()
    cli.setup_logging()
    out = capsys.readouterr().out
    assert out.count("CPU threads: ") == 1 and wait_policy.CHOSEN.line() in out
    record = json.loads(json.dumps(stage_config(SimpleNamespace(seed=0))))["cpu_threads"]
    assert record["wait_policy"] == wait_policy.CHOSEN.record()
    assert record["threads"] == torch.get_num_threads()


@pytest.mark.parametrize(
    "given",
    [{"OMP_WAIT_POLICY": "bogus"}, {"OMP_WAIT_POLICY": ""}, {"GOMP_SPINCOUNT": "abc"},
     {"GOMP_SPINCOUNT": "-1"}, {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "1e5"}],
)  # fmt: skip
def test_a_policy_openmp_would_ignore_is_refused_in_one_line(given):
    """libgomp ignores such values and runs its default, while the log would say 'as set'."""
    policy = wait_policy.decide(dict(given))
    with pytest.raises(SuiteError) as e:
        policy.check()
    assert "\n" not in str(e.value) and "OpenMP" in str(e.value)


@pytest.mark.parametrize(
    "given",
    [{"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": " active "}, {"GOMP_SPINCOUNT": "20000"},
     {"GOMP_SPINCOUNT": "20k"}, {"GOMP_SPINCOUNT": "INFINITE"}, {"GOMP_SPINCOUNT": "0"}],
)  # fmt: skip
def test_a_policy_openmp_reads_is_kept(given):
    policy = wait_policy.decide(dict(given))
    policy.check()
    assert policy.idle == "as set"


def test_a_stage_refuses_a_policy_openmp_would_ignore(tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "bogus"}
    run = subprocess.run(
        [sys.executable, "A2_make_queries.py", "--task", "synthart-style", "--data-root", str(tmp_path)],
        env=env, cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0
    assert "'OMP_WAIT_POLICY=bogus' is not a value OpenMP accepts" in run.stderr
