"""Timings that mean something: a dedicated timing pass, warm-up then the median of repeats.

One timed call on a busy machine gave Backward Search 0.12 to 28 ms/query for the same command;
the median of ≥ 3 repeats after a warm-up call, reported with its min and max, says how much a
number can be trusted, and a wide spread (max/min > WIDE_SPREAD) is said in Table 5.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

REPEATS = 3
WIDE_SPREAD = 2.0  # max/min above this: the machine was busy, the time is only indicative


@dataclass(frozen=True)
class Timing:
    """Wall seconds of the repeats of one call: median, min, max."""

    median: float
    min: float
    max: float
    repeats: int

    @property
    def spread(self) -> float:
        """max/min (inf when the fastest repeat took no measurable time)."""
        return self.max / self.min if self.min > 0 else float("inf")

    @property
    def wide(self) -> bool:
        return self.spread > WIDE_SPREAD


def time_repeated(
    fn: Callable[[], Any],
    sync: Callable[[], None] = lambda: None,
    repeats: int = REPEATS,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Any, Timing]:
    """fn's result (from the warm-up call, untimed) and the Timing of `repeats` further calls;
    `sync` waits for the device (torch.cuda.synchronize) so its queued work is counted."""
    out = fn()  # warm-up: lazy initialisation, caches, kernels; its result is the one kept
    seconds = []
    for _ in range(max(1, repeats)):
        sync()
        t0 = clock()
        fn()
        sync()
        seconds.append(clock() - t0)
    return out, Timing(statistics.median(seconds), min(seconds), max(seconds), len(seconds))


def per_query_ms(timing: Timing, n_queries: int) -> dict[str, float]:
    """metrics.json's ms_per_query (median) with its min and max, per query."""
    per = 1000 / n_queries
    return {
        "ms_per_query": timing.median * per,
        "ms_per_query_min": timing.min * per,
        "ms_per_query_max": timing.max * per,
        "timing_repeats": timing.repeats,
    }


def spread_notes(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Table 5's caveat for each method whose repeated times spread widely (max/min > 2)."""
    notes = []
    for method, s in summary.items():
        lo, hi = s.get("ms_per_query_min"), s.get("ms_per_query_max")
        if lo is not None and hi is not None and (lo <= 0 or hi / lo > WIDE_SPREAD):
            notes.append(
                f"{method}: the {s.get('timing_repeats', REPEATS)} timed repeats spread widely "
                f"({lo:.3g}–{hi:.3g} ms/query, median {s['ms_per_query']:.3g}): the machine was "
                "busy; the time is only indicative."
            )
    return notes
