"""How hard the client tries: the retry policy, its backoff and the Retry-After header.

A retryable failure waits a full-jitter backoff (``RetryPolicy.backoff``: a random share of
``base_delay * 2 ** (attempt - 1)``, capped at ``max_delay``); a 429 waits what its
Retry-After says when it says something readable (docs/api-contract.md).
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from dataclasses import dataclass

MAX_RETRY_AFTER = 120.0  # seconds: a longer Retry-After is waited in several steps


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard the client tries before handing a retryable error to its caller."""

    attempts: int = 5  # 5xx, timeouts, dropped connections (status calls; creates: never-sent)
    rate_limit_attempts: int = 12  # 429s in a row
    base_delay: float = 0.5  # seconds, doubled each attempt, full jitter
    max_delay: float = 30.0

    def backoff(self, attempt: int, jitter: float) -> float:
        """Full-jitter backoff before retry ``attempt`` (1-based), ``jitter`` in [0, 1)."""
        cap = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return jitter * cap


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: an integer/decimal number or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # asctime form: HTTP dates are always GMT
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)
