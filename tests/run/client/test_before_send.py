"""``create_task(before_send=...)``: awaited after the budget token and the connection slot,
right before the request is sent, once per attempt; never when the wait for a token is
cancelled; if it raises, nothing is sent and its exception propagates."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import httpx
import pytest

from flux_pipeline.errors import (
    AmbiguousCreateError,
    ApiTransportError,
    RateLimitedError,
    ServerError,
)
from flux_pipeline.run.api import build_create_body
from flux_pipeline.run.client import BeforeSend

from .support import (
    FakeBudget,
    FakeSleep,
    Handler,
    Script,
    created,
    envelope,
    make_client,
    raises,
    respond,
    status_data,
)

pytestmark = pytest.mark.anyio

BODY = build_create_body({"input": {"prompt": "a castle"}})


class Logged:
    """A handler that logs each request into the budget's event log, then runs the script."""

    def __init__(self, script: Script, budget: FakeBudget) -> None:
        self.script = script
        self.budget = budget

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.budget.events.append(("request", None))
        return self.script(request)


def hook_into(budget: FakeBudget) -> tuple[list[int], BeforeSend]:
    calls: list[int] = []

    async def before_send() -> None:
        calls.append(1)
        budget.events.append(("before_send", None))
        await anyio.lowlevel.checkpoint()

    return calls, before_send


async def test_hook_runs_after_the_token_and_right_before_sending() -> None:
    budget = FakeBudget()
    script = Script(created("task_7"))
    calls, before_send = hook_into(budget)
    async with make_client(Logged(script, budget), budget=budget) as client:
        task_id = await client.create_task(BODY, before_send=before_send)
    assert task_id == "task_7"
    assert [name for name, _ in budget.events] == ["acquire", "before_send", "request"]
    assert calls == [1]


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (raises(httpx.ConnectError), ApiTransportError),
        (respond(500, envelope(None, code=500, message="internal")), ServerError),
        (respond(429, envelope(None, code=429, message="slow down")), RateLimitedError),
    ],
    ids=["never-sent", "500-envelope", "429"],
)
async def test_with_a_hook_a_create_that_created_nothing_is_not_retried(
    failure: Handler, error: type[Exception]
) -> None:
    """The caller marked the task as being sent in its hook: the client raises at once (no
    backoff wait with the task looking sent), so the caller puts it back and retries it.
    Without a hook the same failures are retried (tests/run/client/test_retry.py)."""
    budget = FakeBudget()
    script = Script(failure, created("task_3"))
    calls, before_send = hook_into(budget)
    async with make_client(Logged(script, budget), budget=budget) as client:
        with pytest.raises(error):
            await client.create_task(BODY, before_send=before_send)
    assert calls == [1]
    assert script.count == 1
    assert [name for name, _ in budget.events][:3] == ["acquire", "before_send", "request"]
    if error is RateLimitedError:
        assert ("rate_limited", None) in budget.events  # the shared budget still slows down


async def test_hook_once_when_the_create_is_ambiguous() -> None:
    budget = FakeBudget()
    script = Script(respond(504, content=b"<html>504 Gateway Time-out</html>"))
    calls, before_send = hook_into(budget)
    async with make_client(Logged(script, budget), budget=budget) as client:
        with pytest.raises(AmbiguousCreateError):
            await client.create_task(BODY, before_send=before_send)
    assert calls == [1]
    assert script.count == 1


async def test_hook_raising_sends_nothing_and_frees_the_slot() -> None:
    class Stop(Exception):
        pass

    async def refuse() -> None:
        raise Stop("the run is stopping")

    script = Script(created("task_2"))
    async with make_client(script, max_connections=1) as client:
        with pytest.raises(Stop):
            await client.create_task(BODY, before_send=refuse)
        assert script.count == 0
        # the only slot is free again: the next create goes through
        with anyio.fail_after(5):
            assert await client.create_task(BODY) == "task_2"
    assert script.count == 1


async def test_hook_holds_the_connection_slot() -> None:
    """While the hook runs, the attempt holds its slot: with one slot, a status call waits."""
    release = anyio.Event()
    in_hook = anyio.Event()
    order: list[str] = []

    async def before_send() -> None:
        in_hook.set()
        await release.wait()
        order.append("hook done")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            order.append("create sent")
            return httpx.Response(200, json=envelope({"taskId": "task_1"}))
        order.append("status sent")
        return httpx.Response(200, json=envelope(status_data("task_1")))

    async with make_client(handler, max_connections=1) as client:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def create() -> None:
                    await client.create_task(BODY, before_send=before_send)

                async def poll() -> None:
                    await client.get_status("task_1")

                tg.start_soon(create)
                await in_hook.wait()
                tg.start_soon(poll)
                for _ in range(50):
                    await anyio.lowlevel.checkpoint()
                assert order == []  # the status call could not get the slot
                release.set()
    assert order == ["hook done", "create sent", "status sent"]


class BlockedBudget(FakeBudget):
    """A budget whose acquire never returns (no token ever comes)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = anyio.Event()

    async def acquire(self, *, urgent: bool = False) -> None:
        self.events.append(("acquire", None))
        self.waiting.set()
        await anyio.sleep_forever()


async def test_no_hook_and_nothing_sent_when_the_token_wait_is_cancelled() -> None:
    budget = BlockedBudget()
    script = Script()  # any request fails the test
    calls, before_send = hook_into(budget)
    async with make_client(script, budget=budget, sleep=FakeSleep()) as client:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def create() -> None:
                    await client.create_task(BODY, before_send=before_send)

                tg.start_soon(create)
                await budget.waiting.wait()
                tg.cancel_scope.cancel()  # the run stops while the create waits for a token
    assert calls == []
    assert script.count == 0
    assert [name for name, _ in budget.events] == ["acquire"]


async def test_hook_exception_is_never_retried_even_when_retryable() -> None:
    """What the hook raises is the caller's: propagated as it is, whatever its class."""
    calls: list[int] = []

    async def outage() -> None:
        calls.append(1)
        raise ServerError("the caller's own outage")

    script = Script()
    sleep = FakeSleep()
    async with make_client(script, sleep=sleep) as client:
        with pytest.raises(ServerError, match="the caller's own outage") as info:
            await client.create_task(BODY, before_send=outage)
    assert calls == [1]
    assert script.count == 0
    assert sleep.delays == []
    assert info.value.method == ""  # untouched: not dressed up as one of the client's errors
