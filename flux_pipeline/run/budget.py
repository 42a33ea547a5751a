"""The request budget: one token bucket shared by every API call (docs/engine.md).

The bucket refills at a little under ``rpm / 60`` tokens a second (a margin keeps a client that
also bursts inside any 60-second window of the API's limit). A 429 pauses every caller for the
Retry-After it carried (or a second) and shrinks the rate, which recovers linearly over
``recovery`` seconds without another 429. It never fails anything: callers only wait.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

SAFETY = 0.99  # share of the nominal rate we spend (burst + 60 s of refill stay under rpm)


class TokenBucket:
    def __init__(
        self,
        rpm: float,
        *,
        burst_seconds: float = 0.5,
        recovery: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if rpm <= 0:
            raise ValueError("rpm must be positive")
        self.rate = rpm / 60.0 * SAFETY
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.recovery = recovery
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._paused_until = 0.0
        self._factor = 1.0
        self._factor_at = self._updated
        self._lock = anyio.Lock()  # status calls queue here, first come first served
        self._urgent_lock = anyio.Lock()  # creates queue here, ahead of status calls
        self._urgent_waiting = 0
        self._no_urgent = anyio.Event()
        self.acquired = 0
        self.rate_limits = 0

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:.1f}/s, capacity={self.capacity:.0f})"

    @property
    def factor(self) -> float:
        """Current share of the nominal rate (1.0 unless recently rate limited)."""
        elapsed = self._clock() - self._factor_at
        return min(1.0, self._factor + (1.0 - self._factor) * elapsed / self.recovery)

    @property
    def effective_rate(self) -> float:
        return self.rate * self.factor

    def _refill(self, now: float) -> None:
        self._tokens = min(
            self.capacity, self._tokens + (now - self._updated) * self.effective_rate
        )
        self._updated = now

    async def acquire(self, *, urgent: bool = False) -> None:
        """Wait for a token. ``urgent`` callers (creates: each one fills an idle slot) are
        served before everyone else who is waiting (status calls)."""
        if urgent:
            self._urgent_waiting += 1
            try:
                async with self._urgent_lock:
                    await self._take(urgent=True)
            finally:
                self._urgent_waiting -= 1
                if not self._urgent_waiting:
                    self._no_urgent.set()
        else:
            async with self._lock:
                await self._take(urgent=False)

    async def _take(self, *, urgent: bool) -> None:
        while True:
            if not urgent and self._urgent_waiting:
                self._no_urgent = anyio.Event()
                await self._no_urgent.wait()
                continue
            now = self._clock()
            if now < self._paused_until:
                await self._sleep(self._paused_until - now)
                continue
            self._refill(now)
            if self._tokens >= 1.0 - 1e-9:  # float residue must not stall the loop
                self._tokens = max(0.0, self._tokens - 1.0)
                self.acquired += 1
                return
            await self._sleep(max(0.001, (1.0 - self._tokens) / self.effective_rate))

    def rate_limited(self, retry_after: float | None) -> None:
        now = self._clock()
        self.rate_limits += 1
        pause = 1.0 if retry_after is None else min(retry_after, 60.0)
        self._paused_until = max(self._paused_until, now + pause)
        self._factor = max(0.2, self.factor * 0.7)
        self._factor_at = now
        self._tokens = 0.0
        self._updated = now
