"""Long work shows progress in a log too: plain lines when stderr is not a terminal; B1's CPU
estimate. A fake clock stands in for time, so nothing here depends on the machine's speed."""

from __future__ import annotations

import io
import logging

import torch

from src.progress import PACE_STEPS, Progress
from src.tasks import AUTHORS_TRAINING, SYNTHART_TRAINING
from src.training.engine import Runtime
from src.training.loop import cpu_time_warning


class FakeClock:
    """Time that moves only when a step says so."""

    def __init__(self, step_seconds: float) -> None:
        self.t, self.dt = 1000.0, step_seconds

    def __call__(self) -> float:
        return self.t

    def tick(self) -> None:
        self.t += self.dt


def _run(bar: Progress, clock: FakeClock, losses=None) -> list[int]:
    seen = []
    for i, item in enumerate(bar):
        clock.tick()  # the step's work
        if losses is not None:
            bar.loss = losses[i]
        seen.append(item)
    return seen


def test_a_non_tty_stream_gets_log_lines_every_n_steps(caplog):
    clock = FakeClock(0.5)
    bar = Progress(
        range(40),
        "B1 epoch 1",
        unit="img",
        per_step=8,
        every=10,
        seconds=1e9,
        stream=io.StringIO(),
        clock=clock,
    )
    with caplog.at_level(logging.INFO, logger="src"):
        assert _run(bar, clock, [torch.tensor(2.0 - i / 40) for i in range(40)]) == list(range(40))
    lines = [r.getMessage() for r in caplog.records]
    # steps 10, 20, 30 (the pass's end is the caller's line); 8 img a step every 0.5 s = 16 img/s
    assert lines == [
        "B1 epoch 1 10/40 (25%) · 16 img/s · loss 1.7750 · ETA 0:00:15",
        "B1 epoch 1 20/40 (50%) · 16 img/s · loss 1.5250 · ETA 0:00:10",
        "B1 epoch 1 30/40 (75%) · 16 img/s · loss 1.2750 · ETA 0:00:05",
    ]
    assert all("\r" not in line for line in lines)


def test_slow_steps_log_every_30_seconds(caplog):
    clock = FakeClock(20.0)  # 20 s a step: a line every other step, not every 10th
    bar = Progress(range(6), "C1 train", every=10, stream=io.StringIO(), clock=clock)
    with caplog.at_level(logging.INFO, logger="src"):
        _run(bar, clock)
    steps = [r.getMessage().split()[2] for r in caplog.records]
    assert steps == ["2/6", "4/6"]


def test_a_tty_gets_a_bar_and_no_log_lines(caplog, capsys):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    clock = FakeClock(100.0)
    bar = Progress(range(30), "D1 epoch 1/2", every=1, stream=Tty(), clock=clock)
    with caplog.at_level(logging.INFO, logger="src"):
        _run(bar, clock)
    assert bar.tty and caplog.records == []


def test_disabled_progress_just_iterates(caplog):
    bar = Progress(range(5), "x", every=1, enabled=False, stream=io.StringIO())
    with caplog.at_level(logging.INFO, logger="src"):
        assert list(bar) == list(range(5))
    assert caplog.records == []


def test_push_style_updates_log_too(caplog):
    clock = FakeClock(1.0)
    with caplog.at_level(logging.INFO, logger="src"):
        with Progress(
            (), "A1 images", total=20, unit="img", every=5, stream=io.StringIO(), clock=clock
        ) as bar:
            for _ in range(20):
                clock.tick()
                bar.update()
    assert [r.getMessage() for r in caplog.records][
        0
    ] == "A1 images 5/20 (25%) · 1 img/s · ETA 0:00:15"


def test_the_pace_comes_from_the_steps_after_the_first():
    clock = FakeClock(0.0)
    paces = []
    bar = Progress(range(10), "x", stream=io.StringIO(), clock=clock, on_pace=paces.append)
    for i, _ in enumerate(bar):
        clock.t += 60.0 if i == 0 else 2.0  # the first step pays for warm-up
    assert paces == [2.0] and PACE_STEPS == 3


def test_b1_on_a_cpu_warns_once_when_the_estimate_passes_an_hour(caplog):
    rt = Runtime(torch.device("cpu"))
    warn = cpu_time_warning(rt, AUTHORS_TRAINING, steps_per_epoch=200, epochs_left=30)
    clock = FakeClock(0.0)
    bar = Progress(
        range(8), "B1 epoch 1", stream=io.StringIO(), clock=clock, every=100, on_pace=warn
    )
    with caplog.at_level(logging.INFO, logger="src"):
        for i, _ in enumerate(bar):
            clock.t += 30.0 if i == 0 else 1.5  # 1.5 s/step × 200 × 30 = 2.5 h
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    w = warnings[0]
    assert w.startswith("WARNING: B1 on the CPU: about 2.5 h for 30 epochs of convnext_base")
    assert "--device cuda" in w and "--recipe small" in w


def test_a_short_cpu_run_logs_its_estimate_without_warning_and_cuda_neither(caplog):
    rt = Runtime(torch.device("cpu"))
    with caplog.at_level(logging.INFO, logger="src"):
        cpu_time_warning(rt, SYNTHART_TRAINING, steps_per_epoch=20, epochs_left=10)(1.0)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.INFO,
            "B1 on the CPU: about 3 min for 10 epochs of convnext_atto at 48 px (1.00 s/step "
            "over the first steps)",
        )
    ]
    assert cpu_time_warning(Runtime(torch.device("cuda")), AUTHORS_TRAINING, 200, 30) is None


def test_the_default_cadence_keeps_short_passes_quiet(caplog):
    caplog.set_level(logging.INFO, logger="src")
    clock = FakeClock(0.01)
    quick = Progress(range(100), "D1 epoch 1/49", stream=io.StringIO(), clock=clock)
    assert _run(quick, clock) == list(range(100))
    assert caplog.records == []  # a 1-second pass: no line (the caller reports its end)
    clock = FakeClock(1.0)
    _run(Progress(range(100), "B1 epoch 1", stream=io.StringIO(), clock=clock), clock)
    steps = [r.getMessage().split()[3] for r in caplog.records]
    assert steps == [f"{n}/100" for n in range(10, 100, 10)]  # ~10 lines when each is ≥ 5 s apart
