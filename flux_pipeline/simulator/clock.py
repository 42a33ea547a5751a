"""Time for the simulator: any callable returning epoch-like seconds, or a ``ManualClock``.

With an ordinary clock (``time.time`` by default) the background loop sleeps in real time until
the next due event. A ``ManualClock`` only moves when told to; ``advance()`` wakes every
subscribed loop (thread-safely), so due side effects such as callbacks run promptly.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]

# The doc's example createTime (1767965610929 ms): a fixed, readable start for manual time.
MANUAL_EPOCH = 1_767_965_610.929


def system_clock() -> float:
    return time.time()


class ManualClock:
    """A clock that stands still until ``advance(seconds)`` or ``set(t)`` moves it forward."""

    def __init__(self, start: float = MANUAL_EPOCH) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def __call__(self) -> float:
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0), wake subscribers, and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards ({seconds!r} s)")
        with self._lock:
            self._now += seconds
            listeners = list(self._listeners)
        for wake in listeners:
            wake()
        return self._now

    def set(self, now: float) -> float:
        return self.advance(max(0.0, now - self._now))

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` after every advance; returns the function that unsubscribes."""
        with self._lock:
            self._listeners.append(wake)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(wake)

        return unsubscribe
