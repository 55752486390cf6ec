"""CPU threads: how many the stage's arithmetic uses (`--threads`), and Backward Search's own count.

The default respects OMP_NUM_THREADS when it is set, else the CPUs this process may run on (its
affinity mask, which a container or `taskset` narrows) and torch's own default. Backward Search's
loops — a few dozen tiny steps per batch, in D1 and in E1's and E2's searches — run on
SEARCH_THREADS unless --threads is given: a second thread never made them faster, and their
results are the same bits with any count (tests/test_threads.py). src/__init__.py also makes idle
OpenMP threads sleep instead of spin (OMP_WAIT_POLICY=PASSIVE), so that on a shared CPU no
operation waits for a spinning partner (measurements: bench/RESULTS.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from src.errors import SuiteError

SEARCH_THREADS = 1
_chosen: int | None = None  # --threads, when a stage was given it


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_threads() -> int:
    """OMP_NUM_THREADS when set, else torch's default (when loaded) capped by the usable CPUs."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env.split(",")[0]))
        except ValueError:
            raise SuiteError(
                f"OMP_NUM_THREADS={env!r} is not a number of threads; unset it or give e.g. 2"
            ) from None
    torch = sys.modules.get("torch")
    ours = torch.get_num_threads() if torch is not None else usable_cpus()
    return max(1, min(ours, usable_cpus()))


def use_threads(threads: int | None) -> int:
    """Set the stage's intra-op threads: `threads` (--threads), else the default. A stage that
    has not loaded torch (A1, A2) gets OMP_NUM_THREADS, which torch reads if it loads later."""
    global _chosen
    _chosen = threads
    n = threads if threads is not None else default_threads()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)
    return n


@contextmanager
def search_threads() -> Iterator[None]:
    """Backward Search's loops on SEARCH_THREADS (or --threads when given); restored after."""
    import torch

    before = torch.get_num_threads()
    want = _chosen if _chosen is not None else min(SEARCH_THREADS, before)
    if want == before:
        yield
        return
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)
