"""Timings that mean something: warm-up, median of repeats, min/max, and the wide-spread note."""

from __future__ import annotations

import pytest

from src.evaluation.timing import Timing, per_query_ms, spread_notes, time_repeated


class FakeClock:
    """Each timed call lasts the next of `durations` (the clock moves inside fn)."""

    def __init__(self, durations):
        self.t, self.durations, self.calls = 0.0, list(durations), 0

    def __call__(self) -> float:
        return self.t

    def work(self) -> str:
        self.calls += 1
        if self.calls > 1:  # the warm-up call is not timed: its duration does not matter
            self.t += self.durations[self.calls - 2]
        else:
            self.t += 99.0
        return f"result {self.calls}"


def test_the_median_of_repeats_after_a_warm_up():
    clock = FakeClock([0.3, 0.1, 0.2])
    out, t = time_repeated(clock.work, clock=clock)
    assert out == "result 1"  # the warm-up call's result is kept; the repeats only time
    assert clock.calls == 4
    assert (t.median, t.min, t.max) == pytest.approx((0.2, 0.1, 0.3)) and t.repeats == 3
    assert t.spread == pytest.approx(3.0) and t.wide


def test_sync_runs_around_every_timed_call():
    clock, synced = FakeClock([1.0] * 5), []
    time_repeated(clock.work, sync=lambda: synced.append(clock.calls), repeats=5, clock=clock)
    assert synced == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]


def test_per_query_ms_and_the_wide_spread_note():
    ms = per_query_ms(Timing(0.2, 0.1, 0.3, 3), 100)
    assert ms == pytest.approx(
        {"ms_per_query": 2.0, "ms_per_query_min": 1.0, "ms_per_query_max": 3.0, "timing_repeats": 3}
    )
    narrow = per_query_ms(Timing(0.2, 0.15, 0.25, 3), 100)
    notes = spread_notes(
        {"backward_search": ms, "student": narrow, "random": {"ms_per_query": None}}
    )
    assert len(notes) == 1
    assert notes[0].startswith("backward_search: the 3 timed repeats spread widely (1–3 ms/query")
