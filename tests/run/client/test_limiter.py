"""At most ``max_connections`` requests in flight, held by the client's own limiter.

httpx ignores ``Limits`` when a transport is injected, so whatever the handler sees here is the
client's ``CapacityLimiter`` at work (httpcore #1093 is why it exists).
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import httpx
import pytest

from flux_pipeline.run.api import ApiState

from .support import envelope, make_client, status_data


class Gate:
    """An async handler that holds every request until released, counting those inside."""

    def __init__(self, *, expect_inside: int) -> None:
        self.inside = 0
        self.max_inside = 0
        self.handled = 0
        self.release = anyio.Event()
        self.full = anyio.Event()  # set once ``expect_inside`` requests are inside together
        self._expect = expect_inside

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.inside += 1
        self.max_inside = max(self.max_inside, self.inside)
        if self.inside >= self._expect:
            self.full.set()
        try:
            await self.release.wait()
        finally:
            self.inside -= 1
        self.handled += 1
        task_id = request.url.params["taskId"]
        return httpx.Response(200, json=envelope(status_data(task_id, "processing")))


async def settle(rounds: int = 100) -> None:
    """Let every runnable task run (yields to the loop; never waits for wall time)."""
    for _ in range(rounds):
        await anyio.lowlevel.checkpoint()


@pytest.mark.anyio
async def test_no_more_than_max_connections_in_flight() -> None:
    gate = Gate(expect_inside=3)
    results: dict[str, ApiState] = {}
    async with make_client(gate, max_connections=3) as client:

        async def poll(task_id: str) -> None:
            results[task_id] = (await client.get_status(task_id)).state

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(poll, f"task_{i}")
                await gate.full.wait()
                # every other call had every chance to get in: none did
                await settle()
                assert gate.inside == 3
                assert gate.handled == 0
                gate.release.set()
    assert gate.max_inside == 3
    assert gate.handled == 10
    assert results == {f"task_{i}": ApiState.PROCESSING for i in range(10)}


@pytest.mark.anyio
async def test_backoff_wait_does_not_hold_a_slot() -> None:
    """A call sleeping before its retry leaves its slot to others (max_connections=1)."""
    wake = anyio.Event()
    sleeping = anyio.Event()
    delays: list[float] = []

    async def slow_sleep(delay: float) -> None:
        delays.append(delay)
        sleeping.set()
        await wake.wait()

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        task_id = request.url.params["taskId"]
        seen.append(task_id)
        if task_id == "task_a" and seen.count("task_a") == 1:
            return httpx.Response(429, headers={"Retry-After": "5"})
        return httpx.Response(200, json=envelope(status_data(task_id)))

    async with make_client(handler, max_connections=1, sleep=slow_sleep) as client:

        async def poll_a() -> None:
            await client.get_status("task_a")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(poll_a)
                await sleeping.wait()
                # task_a waits out its Retry-After; task_b gets the only slot meanwhile
                status = await client.get_status("task_b")
                assert status.task_id == "task_b"
                wake.set()
    assert seen == ["task_a", "task_b", "task_a"]
    assert delays == [5.0]
