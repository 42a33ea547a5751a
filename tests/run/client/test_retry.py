"""Retry rules: what is retried, how long the client waits, and what the budget hears.

Time is a FakeSleep (records delays, never waits) and jitter is fixed, so delays are exact.
"""

from __future__ import annotations

import random
import time
from email.utils import formatdate
from typing import Any

import httpx
import pytest

from flux_pipeline.errors import (
    AmbiguousCreateError,
    ApiTransportError,
    InsufficientCreditsError,
    ProtocolError,
    RateLimitedError,
    ServerError,
    TaskNotFoundError,
)
from flux_pipeline.run.api import ApiState, build_create_body
from flux_pipeline.run.retry import parse_retry_after

from .support import (
    FakeBudget,
    FakeSleep,
    Handler,
    Script,
    created,
    envelope,
    make_client,
    ok,
    raises,
    respond,
    status_data,
    success_data,
)

BODY = build_create_body({"input": {"prompt": "a castle"}})
TOO_MANY = respond(429, {"code": 429, "message": "Rate limit exceeded", "data": None})


def too_many(retry_after: str) -> Handler:
    return respond(429, content=b"", headers={"Retry-After": retry_after})


def logged(script: Script, budget: FakeBudget) -> Handler:
    """Wrap a script so each request lands in the budget's event log, to check ordering."""

    def handler(request: httpx.Request) -> httpx.Response:
        budget.events.append(("request", None))
        return script(request)

    return handler


# --- 429 ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_429_then_200_waits_retry_after_once() -> None:
    sleep, budget = FakeSleep(), FakeBudget()
    script = Script(too_many("2"), ok(status_data()))
    async with make_client(logged(script, budget), sleep=sleep, budget=budget) as client:
        status = await client.get_status("task_1")
    assert status.state is ApiState.PENDING
    assert script.count == 2
    assert sleep.delays == [2.0]
    assert budget.events == [
        ("acquire", None),
        ("request", None),
        ("rate_limited", 2.0),
        ("acquire", None),
        ("request", None),
    ]


@pytest.mark.anyio
async def test_body_code_429_on_http_200_is_retried_with_retry_after() -> None:
    sleep, budget = FakeSleep(), FakeBudget()
    script = Script(
        respond(200, envelope(None, code=429, message="busy"), headers={"Retry-After": "1.5"}),
        created("task_9"),
    )
    async with make_client(script, sleep=sleep, budget=budget) as client:
        assert await client.create_task(BODY) == "task_9"
    assert script.count == 2
    assert sleep.delays == [1.5]
    assert ("rate_limited", 1.5) in budget.events


@pytest.mark.anyio
async def test_429_with_http_date_waits_until_that_date() -> None:
    sleep = FakeSleep()

    def later(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, headers={"Retry-After": formatdate(time.time() + 90, usegmt=True)}
        )

    script = Script(later, ok(status_data()))
    async with make_client(script, sleep=sleep) as client:
        await client.get_status("task_1")
    (delay,) = sleep.delays
    assert 88.0 <= delay <= 90.0


@pytest.mark.anyio
async def test_429_without_retry_after_uses_full_jitter_backoff_capped() -> None:
    sleep, budget = FakeSleep(), FakeBudget()
    script = Script(*[TOO_MANY] * 6, ok(status_data()))
    client = make_client(
        script, sleep=sleep, budget=budget, base_delay=1.0, max_delay=4.0, jitter=0.25
    )
    async with client:
        await client.get_status("task_1")
    assert script.count == 7
    # jitter × min(max_delay, base × 2^(n-1))
    assert sleep.delays == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert budget.events.count(("rate_limited", None)) == 6
    assert budget.acquires == 7


@pytest.mark.anyio
@pytest.mark.parametrize("seed", range(5))
async def test_backoff_with_real_jitter_stays_within_cap(seed: int) -> None:
    sleep = FakeSleep()
    rng = random.Random(seed)
    script = Script(*[TOO_MANY] * 9, ok(status_data()))
    client = make_client(script, sleep=sleep, base_delay=0.5, max_delay=3.0, jitter=rng.random)
    async with client:
        await client.get_status("task_1")
    caps = [min(3.0, 0.5 * 2**n) for n in range(9)]
    assert len(sleep.delays) == 9
    assert all(0.0 <= d <= cap for d, cap in zip(sleep.delays, caps, strict=True))
    assert max(sleep.delays) <= 3.0


@pytest.mark.anyio
async def test_429s_give_up_after_rate_limit_attempts() -> None:
    sleep, budget = FakeSleep(), FakeBudget()
    script = Script(*[too_many("1")] * 4)
    async with make_client(script, sleep=sleep, budget=budget, rate_limit_attempts=4) as client:
        with pytest.raises(RateLimitedError) as info:
            await client.get_status("task_1")
    assert info.value.retry_after == 1.0
    assert info.value.task_id == "task_1"
    assert script.count == 4
    assert sleep.delays == [1.0] * 3  # no pointless wait after the last attempt
    assert budget.acquires == 4
    assert budget.events.count(("rate_limited", 1.0)) == 4  # told about every 429


@pytest.mark.anyio
async def test_rate_limits_and_failures_are_counted_separately() -> None:
    sleep = FakeSleep()
    script = Script(TOO_MANY, respond(500), TOO_MANY, respond(503), TOO_MANY, ok(status_data()))
    async with make_client(script, sleep=sleep, attempts=3, rate_limit_attempts=4) as client:
        status = await client.get_status("task_1")
    assert status.task_id == "task_1"
    assert script.count == 6


@pytest.mark.anyio
async def test_budget_is_acquired_before_every_attempt() -> None:
    budget = FakeBudget()
    script = Script(
        respond(500),
        raises(httpx.ReadTimeout),
        TOO_MANY,
        respond(200, content=b"?"),
        ok(status_data()),
    )
    async with make_client(logged(script, budget), budget=budget) as client:
        await client.get_status("task_1")
    names = [name for name, _ in budget.events if name != "rate_limited"]
    assert names == ["acquire", "request"] * 5


# --- status: retried on anything transient ------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [
        respond(500),
        respond(502, content=b"<html>bad gateway</html>"),
        respond(200, envelope(None, code=503)),
        raises(httpx.ReadTimeout),
        raises(httpx.RemoteProtocolError),
        raises(httpx.ConnectError),
        raises(httpx.ReadError),
        respond(200, content=b"<html>maintenance</html>"),
        respond(200, content=b"{not gzip}", headers={"Content-Encoding": "gzip"}),
    ],
    ids=[
        "500",
        "502-html",
        "code-503",
        "read-timeout",
        "remote-protocol",
        "connect",
        "read",
        "not-json",
        "bad-gzip",
    ],
)
async def test_status_retried_after_transient_failure(failure: Handler) -> None:
    sleep = FakeSleep()
    script = Script(failure, failure, ok(success_data()))
    async with make_client(script, sleep=sleep, base_delay=0.5, jitter=1.0) as client:
        status = await client.get_status("task_1")
    assert status.result_urls == ("https://r.test/a.png",)
    assert script.count == 3
    assert sleep.delays == [0.5, 1.0]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (respond(500), ServerError),
        (raises(httpx.ReadTimeout), ApiTransportError),
        (raises(httpx.RemoteProtocolError), ApiTransportError),
    ],
    ids=["500", "read-timeout", "remote-protocol"],
)
async def test_status_gives_up_after_attempts(failure: Handler, error: type[Exception]) -> None:
    sleep = FakeSleep()
    script = Script(*[failure] * 3)
    async with make_client(script, sleep=sleep, attempts=3) as client:
        with pytest.raises(error) as info:
            await client.get_status("task_1")
    assert script.count == 3
    assert len(sleep.delays) == 2
    assert isinstance(info.value, ServerError | ApiTransportError)
    assert info.value.task_id == "task_1"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "data",
    [
        status_data(state="success", resultJson='{"resultUrls": ["https://r.te'),
        status_data(state="queued"),
        status_data("task_other"),
        None,
    ],
    ids=["truncated-result-json", "unknown-state", "other-task", "data-null"],
)
async def test_status_retried_after_unreadable_data(data: Any) -> None:
    """The envelope was fine but its data was not: as retryable as a garbled envelope."""
    sleep = FakeSleep()
    script = Script(ok(data), ok(success_data()))
    async with make_client(script, sleep=sleep) as client:
        status = await client.get_status("task_1")
    assert status.state is ApiState.SUCCESS
    assert script.count == 2
    assert len(sleep.delays) == 1


@pytest.mark.anyio
async def test_status_gives_up_on_unreadable_data() -> None:
    script = Script(*[ok(status_data(state="queued"))] * 3)
    async with make_client(script, attempts=3) as client:
        with pytest.raises(ProtocolError) as info:
            await client.get_status("task_1")
    assert script.count == 3
    assert info.value.task_id == "task_1"
    assert info.value.method == "GET"


@pytest.mark.anyio
async def test_terminal_status_errors_are_not_retried() -> None:
    sleep = FakeSleep()
    script = Script(respond(404))
    async with make_client(script, sleep=sleep) as client:
        with pytest.raises(TaskNotFoundError):
            await client.get_status("task_1")
    assert script.count == 1
    assert sleep.delays == []


# --- create: retried only when it provably did not create a task ---------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [
        respond(500, envelope(None, code=500, message="internal error")),
        respond(503, envelope(None, code=503, message="overloaded")),
        respond(200, envelope(None, code=502)),
        raises(httpx.ConnectError),
        raises(httpx.ConnectTimeout),
        raises(httpx.PoolTimeout),
    ],
    ids=[
        "500-envelope",
        "503-envelope",
        "code-502",
        "connect-error",
        "connect-timeout",
        "pool-timeout",
    ],
)
async def test_create_retried_when_no_task_was_made(failure: Handler) -> None:
    sleep, budget = FakeSleep(), FakeBudget()
    script = Script(failure, created("task_2"))
    async with make_client(script, sleep=sleep, budget=budget, jitter=1.0) as client:
        assert await client.create_task(BODY) == "task_2"
    assert script.count == 2
    assert sleep.delays == [0.5]
    assert budget.acquires == 2
    # the same body both times
    assert script.requests[0].content == script.requests[1].content


@pytest.mark.anyio
@pytest.mark.parametrize(
    "failure",
    [
        raises(httpx.ReadTimeout),
        raises(httpx.RemoteProtocolError),
        raises(httpx.WriteError),
        raises(httpx.WriteTimeout),
        raises(httpx.ReadError),
        respond(200, content=b'{"code": 200, "message": "success", "data": {"taskI'),
        respond(200, envelope({"task": "x"})),
        # a 5xx without the API's envelope: a gateway may answer it after the task was made
        respond(500),
        respond(503, content=b"<html>unavailable</html>"),
        respond(504, content=b"<html><h1>504 Gateway Time-out</h1></html>"),
        respond(502, content=b"upstream connect error or disconnect/reset before headers"),
        respond(500, envelope({"taskId": "task_9"})),
    ],
    ids=[
        "read-timeout",
        "remote-protocol",
        "write-error",
        "write-timeout",
        "read-error",
        "truncated-200",
        "200-without-task-id",
        "500-empty",
        "503-html",
        "504-html",
        "502-text",
        "500-envelope-code200",
    ],
)
async def test_create_never_retried_once_it_may_have_been_sent(failure: Handler) -> None:
    sleep, budget = FakeSleep(), FakeBudget()
    script = Script(failure)  # a second request would fail the test
    async with make_client(script, sleep=sleep, budget=budget) as client:
        with pytest.raises(AmbiguousCreateError) as info:
            await client.create_task(BODY)
    assert script.count == 1
    assert sleep.delays == []
    assert budget.acquires == 1
    assert info.value.method == "POST"


@pytest.mark.anyio
async def test_create_ambiguous_after_earlier_retries() -> None:
    """A connect error then a read timeout: the first is retried, the second ends it."""
    script = Script(raises(httpx.ConnectError), raises(httpx.ReadTimeout))
    async with make_client(script) as client:
        with pytest.raises(AmbiguousCreateError):
            await client.create_task(BODY)
    assert script.count == 2


@pytest.mark.anyio
async def test_create_gives_up_after_attempts_on_5xx() -> None:
    sleep = FakeSleep()
    script = Script(*[respond(503, envelope(None, code=503, message="overloaded"))] * 4)
    async with make_client(script, sleep=sleep, attempts=4) as client:
        with pytest.raises(ServerError):
            await client.create_task(BODY)
    assert script.count == 4
    assert len(sleep.delays) == 3


@pytest.mark.anyio
async def test_insufficient_credits_is_never_retried() -> None:
    sleep = FakeSleep()
    script = Script(respond(200, envelope(None, code=400, message="Insufficient credits")))
    async with make_client(script, sleep=sleep) as client:
        with pytest.raises(InsufficientCreditsError):
            await client.create_task(BODY)
    assert script.count == 1
    assert sleep.delays == []


# --- parse_retry_after ---------------------------------------------------------------------

NOW = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        ("Sun, 06 Nov 1994 08:50:37 GMT", 60.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:50:37 GMT", 60.0),  # obsolete RFC 850
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),  # now
        ("Sun, 06 Nov 1994 07:49:37 GMT", 0.0),  # past → 0, never negative
        ("Tue, 01 Jan 1980 00:00:00 GMT", 0.0),
        ("-3", 0.0),
    ],
)
def test_parse_retry_after(value: str, expected: float) -> None:
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "abc123",
        "nan",
        "inf",
        "-inf",
        "1e400",
        "5 seconds",
        "Sun, 32 Foo 1994 08:50:37 GMT",
    ],
)
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_date_uses_wall_clock_by_default() -> None:
    value = formatdate(time.time() + 600, usegmt=True)
    parsed = parse_retry_after(value)
    assert parsed is not None
    assert 598.0 <= parsed <= 600.0


def test_parse_retry_after_asctime_date() -> None:
    """RFC 9110 5.6.7: all three HTTP-date forms; asctime has no zone and is always GMT."""
    assert parse_retry_after("Sun Nov  6 08:50:37 1994", now=NOW) == pytest.approx(60.0)


@pytest.mark.anyio
async def test_creates_ask_the_budget_as_urgent_and_status_calls_do_not() -> None:
    budget = FakeBudget()
    script = Script(ok({"taskId": "task_9"}), ok(status_data(taskId="task_9")))
    async with make_client(script, budget=budget) as client:
        await client.create_task({"input": {"prompt": "p"}})
        await client.get_status("task_9")
    assert budget.urgent == [True, False]
