"""Idle OpenMP threads: spin or sleep, chosen from the share of the CPUs this process gets at start.

A thread that waits for its partner can spin (cheap while the partner has a core to itself: the
demo's B1 took 92 s spinning against 134 s sleeping on a quiet machine) or sleep (cheap while other
work shares the cores: beside two busy processes spinning threads burn their own share, and the
same B1 epochs took 55-85 s against 31 s). No fixed setting wins both (bench/RESULTS.md), so
`decide` measures, at `import src`, because libgomp reads its policy once, when torch loads.

It measures what the stage's threads would get rather than the load: as many threads as the stage
will run work flat out for WINDOW_S, and each notes the CPU time the kernel gave it. That share
weighs everything the scheduler weighs (other processes, their nice values, the sessions and
cgroups they run in, a hypervisor's steal), which a load count cannot: `nice -n 19` jobs of another
session take a full share of a core beside ours (autogroup scheduling, measured on the shared
machine), while the same jobs in our own session give way. When every thread got at least
MIN_SHARE of a CPU, idle threads spin SPIN_COUNT rounds, then sleep; else they sleep at once
(OMP_WAIT_POLICY=PASSIVE). A policy in the environment (OMP_WAIT_POLICY, GOMP_SPINCOUNT) is the
user's and kept, unless it is the one a parent process that imported src chose (marked in OURS).
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass

from src.errors import SuiteError
from src.threads import default_threads, usable_cpus

USER_SET = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # the user's choice when either is set
OURS = "SRC_WAIT_POLICY"  # the setting `decide` made, which a child process inherits but re-decides
WINDOW_S = 0.1  # many scheduler time slices (~3 ms), short beside torch's import (~2 s)
MIN_SHARE = 0.75  # a partner that runs 3/4 of the time or more rarely keeps a spinner waiting
SPIN_COUNT = 20_000  # libgomp's rounds of `pause` before a waiting thread sleeps (~0.5 ms here)
_BLOCK = bytes(1 << 16)  # hashed in a loop: 64 KiB releases the GIL, so the threads run at once


@dataclass(frozen=True)
class WaitPolicy:
    """What idle OpenMP threads do in this process, and why (logged, recorded in config.json)."""

    idle: str  # "spin, then sleep", "sleep", "as set" (the user's), or libgomp's default
    setting: str  # the environment that says so, e.g. "GOMP_SPINCOUNT=20000"
    cpu_share: float | None  # the smallest share of a CPU a busy thread got (None: not measured)
    threads: int  # the threads the choice was made for
    cpus: int  # the CPUs of the affinity mask

    def line(self) -> str:
        """Its part of the stage's log line."""
        if self.idle == "as set":
            why = "set in the environment"
        elif self.cpu_share is not None:
            why = f"the slowest of {self.threads} busy threads got {self.cpu_share:.2f} of a CPU"
        elif self.threads == 1:
            why = "one thread waits for no other"
        else:
            why = "torch was loaded before src"
        return f"idle threads {self.idle} ({self.setting}: {why})"

    def record(self) -> dict:
        """For config.json."""
        return asdict(self)


def cpu_share(threads: int, window_s: float = WINDOW_S) -> float:
    """The smallest share of a CPU that each of `threads` threads, all working at once for
    `window_s`, got from the scheduler (1: a core each, to itself)."""
    shares = [0.0] * threads
    go = threading.Barrier(threads)

    def work(i: int) -> None:
        go.wait()
        t0, cpu0 = time.perf_counter(), time.thread_time()
        digest = hashlib.sha256()
        while time.perf_counter() - t0 < window_s:
            digest.update(_BLOCK)
        shares[i] = (time.thread_time() - cpu0) / (time.perf_counter() - t0)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return min(shares)


def choose(share: float | None, threads: int, cpus: int) -> WaitPolicy:
    """Spin while every thread gets (nearly) a CPU of its own, else sleep (also unmeasured)."""
    if share is not None and threads > 1 and share >= MIN_SHARE:
        return WaitPolicy("spin, then sleep", f"GOMP_SPINCOUNT={SPIN_COUNT}", share, threads, cpus)
    return WaitPolicy("sleep", "OMP_WAIT_POLICY=PASSIVE", share, threads, cpus)


def decide(env: os._Environ | dict[str, str] = os.environ) -> WaitPolicy:
    """The policy for this process, written into `env` before torch loads; a policy the user set
    is kept. One thread has no partner to wait for, so it sleeps without a measurement."""
    cpus = usable_cpus()
    try:
        threads = default_threads(warn=False)
    except SuiteError:  # a bad OMP_NUM_THREADS: the stage refuses it in one line once it parses
        threads = cpus
    inherited = env.pop(OURS, "")  # a parent that imported src (a bench, the tests) chose this
    key, _, value = inherited.partition("=")
    if key in USER_SET and env.get(key) == value:
        del env[key]  # the parent's choice, made for its own start: this process measures anew
    given = [f"{k}={env[k]}" for k in USER_SET if k in env]
    if given:
        return WaitPolicy("as set", ", ".join(given), None, threads, cpus)
    if "torch" in sys.modules:  # too late: libgomp has read the environment
        return WaitPolicy("as libgomp's default", "spin 300,000 rounds", None, threads, cpus)
    policy = choose(cpu_share(threads) if threads > 1 else None, threads, cpus)
    key, value = policy.setting.split("=")
    env[key] = value
    env[OURS] = policy.setting
    return policy


CHOSEN = decide()  # at `import src`, before any module loads torch
