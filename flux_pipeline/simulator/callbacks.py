"""Callback delivery: POST the status envelope to a task's ``callback_url`` when it ends.

Only loopback URLs are called (``references.is_loopback``); others are skipped and counted, so
the simulator never connects to an address outside this machine. A delivery is retried with
exponential backoff on a connection error or a non-2xx answer.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx

ATTEMPTS = 4
FIRST_BACKOFF = 0.2  # seconds, doubled after each failed attempt (real time)
TIMEOUT = 2.0


async def deliver(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    attempts: int = ATTEMPTS,
    first_backoff: float = FIRST_BACKOFF,
) -> bool:
    """True once the receiver answered 2xx; False after ``attempts`` failures."""
    delay = first_backoff
    for attempt in range(attempts):
        try:
            response = await client.post(url, json=payload, timeout=TIMEOUT)
            if 200 <= response.status_code < 300:
                return True
        except httpx.HTTPError:
            pass
        if attempt + 1 < attempts:
            await anyio.sleep(delay)
            delay *= 2
    return False
