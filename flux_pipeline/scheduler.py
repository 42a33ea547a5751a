"""When to ask about a task: one heap of due times for every task in flight (DESIGN §5).

``DueHeap`` holds (due time, key); rescheduling a key supersedes its earlier entry lazily.
``PollTiming`` learns how long tasks take from observed durations and decides the next poll:
nothing before the task is likely to be done, then polls spaced so that all waiting tasks
share the poll budget (``poll_rate``), giving up polls where completions are unlikely.
In callback mode the first poll is a sweep for an overdue callback instead.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import anyio


class DueHeap:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, str]] = []
        self._current: dict[str, int] = {}
        self._seq = itertools.count()
        self._changed = anyio.Event()

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, key: str) -> bool:
        return key in self._current

    def schedule(self, key: str, due: float) -> None:
        seq = next(self._seq)
        self._current[key] = seq
        heapq.heappush(self._heap, (due, seq, key))
        if self._heap[0][1] == seq:
            self._changed.set()

    def discard(self, key: str) -> None:
        self._current.pop(key, None)

    def _drop_stale(self) -> None:
        while self._heap and self._current.get(self._heap[0][2]) != self._heap[0][1]:
            heapq.heappop(self._heap)

    async def next_due(self) -> str:
        """Wait for the earliest due key and remove it."""
        while True:
            self._drop_stale()
            if not self._heap:
                await self._wait(None)
                continue
            due, _, key = self._heap[0]
            delay = due - self._clock()
            if delay <= 0:
                heapq.heappop(self._heap)
                del self._current[key]
                return key
            await self._wait(delay)

    async def _wait(self, delay: float | None) -> None:
        self._changed = anyio.Event()
        with anyio.move_on_after(delay):
            await self._changed.wait()


class Durations:
    """A sliding sample of observed task durations (seconds), for quantiles."""

    def __init__(self, size: int = 512) -> None:
        self._recent: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._recent)

    def add(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            return
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._recent.append(seconds)
        bisect.insort(self._sorted, seconds)

    def quantile(self, q: float) -> float:
        if not self._sorted:
            raise ValueError("no durations yet")
        index = min(len(self._sorted) - 1, max(0, int(q * len(self._sorted))))
        return self._sorted[index]


@dataclass(frozen=True, kw_only=True)
class TimingConfig:
    first_poll: float = 2.0  # before anything is learned
    growth: float = 1.5  # unlearned: each interval this much longer
    max_interval: float = 15.0
    min_interval: float = 0.05
    learn_after: int = 8  # observations before the learned schedule is used
    early_quantile: float = 0.02  # no poll before this share of tasks is usually done
    callback_grace: float = 1.5  # callback mode: sweep at q99 x grace
    callback_sweep_default: float = 60.0


class PollTiming:
    def __init__(self, config: TimingConfig | None = None) -> None:
        self.config = config or TimingConfig()
        self.durations = Durations()

    def observe(self, seconds: float) -> None:
        self.durations.add(seconds)

    @property
    def learned(self) -> bool:
        return len(self.durations) >= self.config.learn_after

    def next_delay(
        self, *, age: float, polls: int, waiting: int, poll_rate: float, callback: bool
    ) -> float:
        """Seconds until the next status call of a task of ``age`` seconds that has been polled
        ``polls`` times; ``waiting`` tasks share ``poll_rate`` status calls a second."""
        c = self.config
        if callback:
            sweep = c.callback_sweep_default
            if self.learned:
                sweep = self.durations.quantile(0.99) * c.callback_grace + 1.0
            return max(c.min_interval, sweep - age) if polls == 0 else max(sweep / 2, 5.0)
        if not self.learned:
            if polls == 0:
                return c.first_poll
            return min(c.max_interval, c.first_poll * c.growth**polls)
        start = self.durations.quantile(c.early_quantile)
        if age < start:
            return start - age
        share = max(1, waiting) / max(poll_rate, 1e-6)
        overdue = age > self.durations.quantile(0.995)
        interval = max(c.min_interval, share)
        return min(c.max_interval, interval * (2.0 if overdue else 1.0))
