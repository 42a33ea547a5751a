"""Shared test doubles for the client tests: a scripted transport, a fake sleep, a fake budget.

Nothing here sleeps for real or opens a socket: the transport is ``httpx.MockTransport``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.lowlevel
import httpx

from flux_pipeline.run.client import ClientConfig, FluxClient, RequestBudget, RetryPolicy

# Distinctive, so a leak is found by substring search in messages and reprs.
API_KEY = "sk-live-TOPSECRET-4f9c2a7e81d3"
BASE_URL = "http://api.test"

Handler = Callable[[httpx.Request], httpx.Response]
# What httpx.MockTransport accepts: a handler, optionally async.
AnyHandler = Handler | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


class FakeSleep:
    """Records every delay the client asks for; never waits (yields once, like a checkpoint)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await anyio.lowlevel.checkpoint()


@dataclass
class FakeBudget:
    """A ``RequestBudget`` that logs calls in order: ("acquire", None) / ("rate_limited", s)."""

    events: list[tuple[str, float | None]] = field(default_factory=list)

    urgent: list[bool] = field(default_factory=list)

    async def acquire(self, *, urgent: bool = False) -> None:
        self.events.append(("acquire", None))
        self.urgent.append(urgent)
        await anyio.lowlevel.checkpoint()

    def rate_limited(self, retry_after: float | None) -> None:
        self.events.append(("rate_limited", retry_after))

    @property
    def acquires(self) -> int:
        return sum(1 for name, _ in self.events if name == "acquire")


class Script:
    """A MockTransport handler that answers requests from a fixed script, in order.

    Each step is a ``Handler``: it returns a response or raises (e.g. ``httpx.ReadTimeout``).
    A request beyond the script fails the test loudly instead of hanging or looping.
    """

    def __init__(self, *steps: Handler) -> None:
        self._steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) > len(self._steps):
            raise AssertionError(f"unexpected request #{len(self.requests)}: {request!r}")
        return self._steps[len(self.requests) - 1](request)

    @property
    def count(self) -> int:
        return len(self.requests)


def respond(
    status: int = 200,
    body: Any = None,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Handler:
    """A step answering ``status`` with ``body`` as JSON, or with raw ``content``."""

    def step(request: httpx.Request) -> httpx.Response:
        if content is not None:
            # a raw stream, as a real transport hands over: the *client* reads and decodes it
            return httpx.Response(status, headers=headers, stream=httpx.ByteStream(content))
        if body is None:
            return httpx.Response(status, content=b"", headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return step


def raises(kind: type[httpx.TransportError], text: str = "boom") -> Handler:
    """A step raising the httpx transport error ``kind`` for the request."""

    def step(request: httpx.Request) -> httpx.Response:
        raise kind(text, request=request)

    return step


def envelope(data: Any, *, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


def ok(data: Any) -> Handler:
    return respond(200, envelope(data))


def created(task_id: str = "task_1") -> Handler:
    return ok({"taskId": task_id})


def status_data(task_id: str = "task_1", state: str = "pending", **extra: Any) -> dict[str, Any]:
    return {"taskId": task_id, "state": state, **extra}


def success_data(task_id: str = "task_1", urls: Sequence[str] = ("https://r.test/a.png",)) -> Any:
    return status_data(task_id, "success", resultJson=json.dumps({"resultUrls": list(urls)}))


def make_client(
    handler: AnyHandler,
    *,
    attempts: int = 5,
    rate_limit_attempts: int = 12,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    max_connections: int = 100,
    budget: RequestBudget | None = None,
    sleep: Callable[[float], Coroutine[None, None, None]] | None = None,
    jitter: float | Callable[[], float] = 0.5,
    base_url: str = BASE_URL,
) -> FluxClient:
    """A client over ``MockTransport(handler)``; a FakeSleep by default, fixed jitter."""
    config = ClientConfig(
        base_url=base_url,
        max_connections=max_connections,
        retry=RetryPolicy(
            attempts=attempts,
            rate_limit_attempts=rate_limit_attempts,
            base_delay=base_delay,
            max_delay=max_delay,
        ),
    )
    return FluxClient(
        api_key=API_KEY,
        config=config,
        transport=httpx.MockTransport(handler),
        budget=budget,
        sleep=sleep if sleep is not None else FakeSleep(),
        jitter=jitter if callable(jitter) else (lambda: jitter),
    )


def single_attempt_client(handler: Handler, sleep: FakeSleep | None = None) -> FluxClient:
    """One attempt for everything: what one answer maps to, without any retry."""
    return make_client(handler, attempts=1, rate_limit_attempts=1, sleep=sleep)
