"""CPU threads: how many the stage's arithmetic uses (`--threads`), and Backward Search's own count.

The default respects OMP_NUM_THREADS when it is set, else the CPUs this process may run on (its
affinity mask, which a container or `taskset` narrows) and torch's own default. Neither it nor
--threads goes past the affinity mask: threads beyond the CPUs only wait for each other (1,000
asked on 2 CPUs trained at 0.18 images/s against 186), so a larger count is capped, with a warning.
Backward Search's loops — a few dozen tiny steps per batch, in D1 and in E1's and E2's searches —
run on SEARCH_THREADS unless --threads is given: a second thread never made them faster, and their
results are the same bits with any count (tests/test_threads.py). Whether idle threads spin or
sleep is src/wait_policy.py's choice (measurements: bench/RESULTS.md).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from src.errors import SuiteError

log = logging.getLogger(__name__)

SEARCH_THREADS = 1
_chosen: int | None = None  # --threads, when a stage was given it


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def capped(n: int, asked: str, warn: bool = True) -> int:
    """`n` threads, or the usable CPUs when fewer, with a warning naming who `asked` for `n`."""
    cpus = usable_cpus()
    if n <= cpus:
        return n
    if warn:
        log.warning(
            "WARNING: %s asks for %d threads, more than the %d CPUs this process may use (its "
            "affinity mask); using %d",
            asked, n, cpus, cpus,
        )  # fmt: skip
    return cpus


def default_threads(warn: bool = True) -> int:
    """OMP_NUM_THREADS when set, else torch's default (when loaded), capped by the usable CPUs."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env.split(",")[0])
        except ValueError:
            n = 0
        if n < 1:  # libgomp ignores such a value (its own default), so no count would be true
            raise SuiteError(
                f"OMP_NUM_THREADS={env!r} is not a number of threads; unset it or give e.g. 2"
            )
        return capped(n, f"OMP_NUM_THREADS={env}", warn)
    torch = sys.modules.get("torch")
    ours = torch.get_num_threads() if torch is not None else usable_cpus()
    return max(1, min(ours, usable_cpus()))


def use_threads(threads: int | None) -> int:
    """Set the stage's intra-op threads: `threads` (--threads), else the default, at most the
    usable CPUs. A stage that has not loaded torch (A1, A2) gets OMP_NUM_THREADS, which torch reads
    if it loads later."""
    global _chosen
    if threads is not None:
        threads = capped(threads, f"--threads {threads}")
    _chosen = threads
    n = threads if threads is not None else default_threads()
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)
    return n


def in_use() -> dict[str, int]:
    """The stage's threads, for config.json: its arithmetic's and Backward Search's loops'."""
    torch = sys.modules.get("torch")
    n = torch.get_num_threads() if torch is not None else default_threads(warn=False)
    return {
        "threads": n,
        "search_threads": _chosen if _chosen is not None else min(SEARCH_THREADS, n),
    }


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
