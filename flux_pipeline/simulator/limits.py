"""Per-key request limits (a sliding window) and the credit balance.

The rate limit counts every API request a key makes that is let through (both endpoints);
a request refused with 429 does not use up the window. ``Retry-After`` is the whole number of
seconds until the oldest counted request leaves the window, at least 1.
"""

from __future__ import annotations

import math
from collections import deque


def retry_after_seconds(delay: float) -> int:
    """The ``Retry-After`` value for a wait of ``delay`` seconds: an integer >= 1."""
    return max(1, math.ceil(delay - 1e-9))


class SlidingWindow:
    """At most ``limit`` events in any ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def try_acquire(self, now: float) -> float | None:
        """Record an event and return None, or return the seconds until one would fit."""
        times = self._times
        horizon = now - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if len(times) >= self.limit:
            return times[0] - horizon
        times.append(now)
        return None


class RateLimiter:
    """One ``SlidingWindow`` per API key."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._windows: dict[str, SlidingWindow] = {}

    def try_acquire(self, key: str, now: float) -> float | None:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = SlidingWindow(self.limit, self.window)
        return window.try_acquire(now)


class Credits:
    """The account balance; ``None`` is unlimited. Paid at create, never refunded."""

    def __init__(self, balance: float | None) -> None:
        self.balance = balance
        self.spent = 0.0

    def can_pay(self, cost: float) -> bool:
        return self.balance is None or self.balance >= cost

    def pay(self, cost: float) -> None:
        if self.balance is not None:
            self.balance -= cost
        self.spent += cost
