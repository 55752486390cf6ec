"""Progress of long loops: a tqdm bar on a terminal, plain log lines everywhere else.

tqdm draws with carriage returns and disables itself when stderr is not a terminal, so a stage
under nohup or a batch system printed nothing for minutes, or filled its log with `\\r` debris.
Here, when stderr is not a terminal, a loop logs one line every `every` steps or `seconds`
seconds (step, rate, loss if given, ETA), the way large training scripts do.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_SECONDS = 30.0  # a log line at least this often (when steps are slow)
MIN_GAP = 5.0  # default cadence: ~10 lines a pass, but none closer than this (short passes: none)
PACE_STEPS = 3  # steps after the first (warm-up) whose pace estimates the run's time


def _clock_text(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _duration_text(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run_estimate(
    stage: str, work: str, steps: int, limit_s: float, advice: str
) -> Callable[[float], None]:
    """An `on_pace` callback: from the first steps' pace, log in one line how long `steps` steps
    of `work` will take, as a WARNING naming `advice` when that exceeds `limit_s`."""

    def estimate(seconds_per_step: float) -> None:
        total = seconds_per_step * steps
        text = (
            f"{stage}: about {_duration_text(total)} for {work} ({seconds_per_step:.2f} s/step "
            "over the first steps)"
        )
        if total > limit_s:
            log.warning("WARNING: %s; %s", text, advice)
        else:
            log.info(text)

    return estimate


class Progress:
    """Iterate `iterable`, showing progress; set `.loss` inside the loop to show it too.

    `.loss` may be a device tensor: it is read (and synchronised) only when a line is written.
    `on_pace(seconds_per_step)` is called once, after PACE_STEPS steps past the first (the first
    step pays for warm-up), so a caller can estimate the whole run from the first steps.
    """

    def __init__(
        self,
        iterable: Iterable,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        per_step: int = 1,
        every: int | None = None,
        seconds: float = LOG_SECONDS,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
        on_pace: Callable[[float], None] | None = None,
    ) -> None:
        self.iterable = iterable
        self.desc, self.unit, self.per_step = desc, unit, per_step
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.every = every or max(1, (total or 0) // 10 or 50)  # ~10 lines a pass
        self.min_gap = 0.0 if every else MIN_GAP  # keeps a demo's second-long passes quiet
        self.seconds, self.clock, self.enabled, self.on_pace = seconds, clock, enabled, on_pace
        stream = sys.stderr if stream is None else stream
        self.tty = enabled and bool(getattr(stream, "isatty", lambda: False)())
        self.loss: Any = None
        self.step = 0
        self._bar: Any = None

    def __len__(self) -> int:
        return self.total or 0

    def line(self, now: float, start: float) -> str:
        """`desc step/total (p%) · rate · loss · ETA`: one progress line."""
        elapsed = max(now - start, 1e-9)
        rate = self.step * self.per_step / elapsed
        parts = [
            f"{self.desc} {self.step}/{self.total}" if self.total else f"{self.desc} {self.step}"
        ]
        if self.total:
            parts[0] += f" ({100 * self.step / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if self.loss is not None:
            loss = float(self.loss)
            parts.append(f"loss {loss:.4f}" if math.isfinite(loss) else f"loss {loss}")
        if self.total:
            left = elapsed / self.step * (self.total - self.step)
            parts.append(f"ETA {_clock_text(left)}")
        return " · ".join(parts)

    def __iter__(self) -> Iterator:
        if not self.enabled:
            yield from self.iterable
            return
        with self:
            for item in self.iterable:
                yield item
                self.update()

    def __enter__(self) -> Progress:
        self._bar = (
            tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=False)
            if self.tty
            else None
        )
        self._start = self._last = self.clock()
        self._paced = self._start  # when the first (warm-up) step ended
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the terminal bar (log lines need no closing)."""
        bar, self._bar = getattr(self, "_bar", None), None
        if bar is not None:
            bar.close()

    def update(self) -> None:
        """One step done: advance the bar, or log a line when one is due."""
        if not self.enabled:
            return
        if not hasattr(self, "_start"):
            self.__enter__()
        self.step += 1
        now = self.clock()
        if self.step == 1:
            self._paced = now
        elif self.on_pace is not None and self.step == 1 + PACE_STEPS:
            self.on_pace((now - self._paced) / PACE_STEPS)
            self.on_pace = None
        if self._bar is not None:
            self._bar.update()
            if self.loss is not None and now - self._last >= 1.0:
                self._bar.set_postfix(loss=f"{float(self.loss):.4f}", refresh=False)
                self._last = now
        elif (
            self.step % self.every == 0 and now - self._last >= self.min_gap
        ) or now - self._last >= self.seconds:
            if self.step != self.total:  # the caller reports the pass's end itself
                log.info(self.line(now, self._start))
            self._last = now


def progress(iterable: Iterable, desc: str, **kwargs: Any) -> Progress:
    """A Progress over `iterable` (tqdm on a terminal, log lines otherwise); see Progress."""
    return Progress(iterable, desc, **kwargs)
