"""Counters behind ``GET /_sim/stats``: what clients did and what the simulator answered."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field, fields
from typing import Any


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
    # most API requests that reached the rate limiter within any one rate window (sliding;
    # 60 s by default, so the per-minute peak), the ones answered 429 included: what the
    # clients asked of the key, not what the limit let through
    peak_per_window: int = 0

    def __post_init__(self) -> None:
        self._recent: deque[float] = deque()

    def arrived(self, now: float, window: float) -> None:
        """One API request counted against a key at ``now``: update ``peak_per_window``."""
        recent = self._recent
        recent.append(now)
        while recent[0] <= now - window:
            recent.popleft()
        self.peak_per_window = max(self.peak_per_window, len(recent))

    def answered(self, code: int) -> None:
        self.responses[code] += 1
        if code == 429:
            self.rate_limited += 1
        elif code >= 500:
            self.server_errors += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            f.name: dict(v) if isinstance(v := getattr(self, f.name), Counter) else v
            for f in fields(self)
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Stats:
        """Counters as ``as_dict`` wrote them; ValueError for anything else."""
        stats = cls()
        for f in fields(cls):
            value = saved.get(f.name, getattr(stats, f.name))
            current = getattr(stats, f.name)
            if isinstance(current, Counter):
                if not isinstance(value, dict) or not all(_count(v) for v in value.values()):
                    raise ValueError(f"stats.{f.name}: expected counts")
                keys = [int(k) if f.name == "responses" else str(k) for k in value]
                setattr(stats, f.name, Counter(dict(zip(keys, value.values(), strict=True))))
            elif _count(value):
                setattr(stats, f.name, value)
            else:
                raise ValueError(f"stats.{f.name}: expected a count, found {value!r:.40}")
        return stats


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
