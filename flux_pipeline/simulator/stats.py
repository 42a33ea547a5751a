"""Counters behind ``GET /_sim/stats``: what clients did and what the simulator answered."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(kw_only=True)
class Stats:
    requests: Counter[str] = field(default_factory=Counter)  # by endpoint
    responses: Counter[int] = field(default_factory=Counter)  # by body code
    rate_limited: int = 0  # 429s given (limits and bursts)
    server_errors: int = 0  # 5xx given
    drops: int = 0
    lost_after: int = 0  # requests processed whose answer was then lost (drop or gateway)
    gateway_errors: int = 0  # HTML 502/504 pages given
    slowed: int = 0
    truncated: int = 0
    creates: int = 0
    duplicate_creates: int = 0
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    callbacks_skipped: int = 0

    def answered(self, code: int) -> None:
        self.responses[code] += 1
        if code == 429:
            self.rate_limited += 1
        elif code >= 500:
            self.server_errors += 1
