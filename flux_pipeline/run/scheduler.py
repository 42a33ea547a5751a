"""When to ask about a task: one heap of due times for every task in flight (docs/engine.md).

``DueHeap`` holds (due time, key); rescheduling a key supersedes its earlier entry lazily.
``PollTiming`` learns how long tasks take from observed durations and decides the next poll so
that the poll budget goes where completions are likely (see its docstring). In callback mode
the first poll is a sweep for an overdue callback instead.
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

    def cdf(self, seconds: float) -> float:
        """Share of observed durations at most ``seconds``."""
        if not self._sorted:
            return 0.0
        return bisect.bisect_right(self._sorted, seconds) / len(self._sorted)

    def quantile(self, q: float) -> float:
        if not self._sorted:
            raise ValueError("no durations yet")
        index = min(len(self._sorted) - 1, max(0, int(q * len(self._sorted))))
        return self._sorted[index]


@dataclass(frozen=True, kw_only=True)
class TimingConfig:
    first_poll: float = 0.5  # before anything is learned (docs/engine.md "Polling")
    max_interval: float = 15.0
    min_interval: float = 0.05
    learn_after: int = 8  # observations before the learned schedule is used
    initial_hit_rate: float = 0.3  # wanted share of polls that find the task finished
    callback_grace: float = 1.5  # callback mode: sweep at q99 x grace
    callback_sweep_default: float = 60.0


class PollTiming:
    """When to poll next. Learned from observed durations: a poll is placed where the task's
    chance of having finished since the last poll reaches ``hit_rate``; ``steer`` moves
    ``hit_rate`` so that status calls spend the request budget left over by creates. Before
    anything is learned, waiting tasks share the poll budget evenly."""

    def __init__(self, config: TimingConfig | None = None) -> None:
        self.config = config or TimingConfig()
        self.durations = Durations()
        self.hit_rate = self.config.initial_hit_rate

    def observe(self, seconds: float) -> None:
        self.durations.add(seconds)

    @property
    def learned(self) -> bool:
        return len(self.durations) >= self.config.learn_after

    def steer(self, *, spent: float, budget: float) -> None:
        """Status calls a second ``spent`` vs ``budget`` available: poll sooner when under."""
        if budget <= 0:
            return
        ratio = max(spent, 0.01 * budget) / budget
        factor = min(1.3, max(0.75, ratio**0.5))
        self.hit_rate = min(0.9, max(0.02, self.hit_rate * factor))

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
        share = min(c.max_interval, max(c.min_interval, max(1, waiting) / max(poll_rate, 1e-6)))
        if not self.learned:
            return c.first_poll if polls == 0 else share
        done = self.durations.cdf(age)
        if done >= 0.995:  # older than nearly every task seen: share the budget
            return share
        target = done + self.hit_rate * (1.0 - done)
        return max(c.min_interval, self.durations.quantile(target) - age)
