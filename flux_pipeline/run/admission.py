"""Speculative admission: creating beyond ``max_active`` against completions not yet seen.

The API frees a concurrency slot when a task finishes, not when we poll it. Once a full wave
of task durations is learned, the tasks in flight that have most likely finished at the API
without our having seen it are room for new creates (docs/engine.md). The estimate is the
expected number of such unseen completions minus a safety margin in standard deviations; a
429 on a speculative create widens the margin and pauses speculation a moment. A speculative
create that succeeds narrows it, but only while the speculative 429s so far are within their
allowance, ``SPECULATIVE_429_SHARE`` of the run's requests: every 429 costs a request of the
budget, so the margin settles where speculation spends about that share and no more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

MARGIN_START = 2.0  # standard deviations of safety at the start of a run
MARGIN_CEILING = 4.0  # widened by every speculative 429 up to this
MARGIN_FLOOR = 0.5  # narrowed by speculative successes down to this
MARGIN_STEP_ON_429 = 0.3
MARGIN_STEP_ON_SUCCESS = 0.02  # while the 429s are within their allowance
PAUSE_AFTER_429 = 0.2  # seconds without speculation after a speculative create met a 429
SPECULATIVE_429_SHARE = 0.003  # of the run's requests: what speculation may spend on 429s
ALLOWANCE_START = 3  # speculative 429s allowed before the requests have earned any
ESTIMATE_CACHE_SECONDS = 0.05  # the estimate is O(flights): not more often than this
LEARN_WAVE_CAP = 512  # durations needed: min(max_active, this) (a full wave)
ROOM_CAP_DIVISOR = 10  # at most max_active // this beyond max_active


class Cdf(Protocol):
    def __len__(self) -> int: ...

    def cdf(self, seconds: float) -> float: ...


class Aged(Protocol):
    """A task in flight as admission sees it."""

    @property
    def started(self) -> float: ...  # monotonic

    @property
    def checked_age(self) -> float: ...  # age when the API last said "not finished"


class Admission:
    def __init__(
        self,
        *,
        max_active: int,
        durations: Cdf,
        enabled: bool = True,
        clock: Callable[[], float],
        requests: Callable[[], int] = lambda: 0,
    ) -> None:
        """``requests``: how many API requests the run has sent so far (the budget's count)."""
        self.max_active = max_active
        self.enabled = enabled
        self.margin = MARGIN_START
        self.speculative_429s = 0
        self._durations = durations
        self._clock = clock
        self._requests = requests
        self._room_at = -1.0
        self._room = 0
        self._paused_until = 0.0

    def may_speculate(self) -> bool:
        """Only once a full wave has finished: the first completions seen are the fastest
        tasks, and a CDF learned from them alone would overestimate completions."""
        return (
            self.enabled
            and len(self._durations) >= min(self.max_active, LEARN_WAVE_CAP)
            and self._clock() >= self._paused_until
        )

    def room(self, flights: Callable[[], Iterable[Aged]]) -> int:
        """How many tasks beyond ``max_active`` may be created now (at most a tenth of
        ``max_active``). ``flights`` is called only when the estimate is recomputed."""
        if not self.may_speculate():
            return 0
        now = self._clock()
        if now - self._room_at < ESTIMATE_CACHE_SECONDS:
            return self._room
        expected = variance = 0.0
        cdf = self._durations.cdf
        for flight in flights():
            seen = cdf(flight.checked_age)
            if seen >= 1.0:
                continue
            p = (cdf(now - flight.started) - seen) / (1.0 - seen)
            expected += p
            variance += p * (1.0 - p)
        room = int(expected - self.margin * variance**0.5)
        self._room_at = now
        self._room = max(0, min(room, self.max_active // ROOM_CAP_DIVISOR))
        return self._room

    def rate_limited(self) -> None:
        """A speculative create met a 429: the API was still full. Bet less, pause a moment."""
        self._paused_until = self._clock() + PAUSE_AFTER_429
        self.margin = min(MARGIN_CEILING, self.margin + MARGIN_STEP_ON_429)
        self.speculative_429s += 1

    def allowance(self) -> float:
        """Speculative 429s the run may have had by now."""
        return ALLOWANCE_START + SPECULATIVE_429_SHARE * self._requests()

    def succeeded(self) -> None:
        """A speculative create was accepted: the bet paid; it may be a little bolder, unless
        its 429s have already spent their allowance."""
        if self.speculative_429s < self.allowance():
            self.margin = max(MARGIN_FLOOR, self.margin - MARGIN_STEP_ON_SUCCESS)
