"""The client against the real simulator: in-process (ASGITransport) and over uvicorn.

Time is a ``ManualClock`` everywhere: the client's ``sleep`` advances it, so a Retry-After of
60 s costs nothing, and a task's whole life is a few clock advances. Faults are switched on and
off through the simulator's admin API (``POST /_sim/faults``), from inside the client's sleep
when a test needs "fails twice, then recovers".
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from flux_pipeline.errors import (
    AmbiguousCreateError,
    ApiTransportError,
    AuthError,
    InsufficientCreditsError,
    InvalidRequestError,
    ServerError,
    TaskNotFoundError,
)
from flux_pipeline.run.api import ApiState, TaskStatus, build_create_body, parse_status
from flux_pipeline.run.client import ClientConfig, FluxClient, RetryPolicy
from flux_pipeline.simulator import (
    Faults,
    ManualClock,
    SimConfig,
    Simulator,
    SimulatorThread,
    create_app,
    lifespan_running,
)

from .support import FakeBudget, FakeSleep
from .test_contract import DOC_IMAGE_TO_IMAGE, DOC_TEXT_TO_IMAGE

pytestmark = pytest.mark.anyio

SIM_KEY = "sim-key"
SIM_URL = "http://sim.test"
PROMPT = {"input": {"prompt": "a castle on the hill at sunset"}}


def planned(doc: str) -> dict[str, Any]:
    """A documented create body minus ``request_type`` (build_create_body adds it back)."""
    body: dict[str, Any] = json.loads(doc)
    del body["request_type"]
    return body


def ms(seconds: float) -> int:
    return round(seconds * 1000)


class ClockSleep(FakeSleep):
    """The client's sleep: records the delay, advances the manual clock by it, and after the
    ``heal_after``-th sleep runs ``heal`` (e.g. switch the injected faults off)."""

    def __init__(
        self,
        advance: Callable[[float], Awaitable[None]],
        *,
        heal_after: int = 0,
        heal: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__()
        self._advance = advance
        self._heal_after = heal_after
        self._heal = heal

    async def __call__(self, delay: float) -> None:
        await super().__call__(delay)
        await self._advance(delay)
        if self._heal is not None and len(self.delays) == self._heal_after:
            await self._heal()


def sim_client(
    base_url: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: FakeSleep | None = None,
    budget: FakeBudget | None = None,
    attempts: int = 5,
    api_key: str = SIM_KEY,
) -> FluxClient:
    config = ClientConfig(
        base_url=base_url,
        retry=RetryPolicy(attempts=attempts, rate_limit_attempts=12, base_delay=0.5),
        timeout=httpx.Timeout(5.0),
    )
    return FluxClient(
        api_key=api_key,
        config=config,
        transport=transport,
        budget=budget,
        sleep=sleep or FakeSleep(),
        jitter=lambda: 0.5,
    )


class InProcess:
    """The simulator app with its lifespan running, reachable through ASGITransport."""

    def __init__(self, config: SimConfig) -> None:
        self.clock = ManualClock()
        self.app = create_app(config, self.clock)
        self.transport = httpx.ASGITransport(app=self.app)
        self.sim: Simulator | None = None

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def set_faults(self, **changes: object) -> None:
        async with httpx.AsyncClient(transport=self.transport, base_url=SIM_URL) as admin:
            response = await admin.post("/_sim/faults", json=changes)
            response.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(transport=self.transport, base_url=SIM_URL) as admin:
            response = await admin.get("/_sim/stats")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    def client(self, **kw: Any) -> FluxClient:
        return sim_client(SIM_URL, transport=self.transport, **kw)


@asynccontextmanager
async def in_process(config: SimConfig | None = None) -> AsyncIterator[InProcess]:
    env = InProcess(config or SimConfig(task_seconds=20, task_spread=0))
    async with lifespan_running(env.app) as sim:
        env.sim = sim
        yield env


async def poll_until_finished(
    client: FluxClient, task_id: str, advance: Callable[[float], Awaitable[None]]
) -> list[TaskStatus]:
    """The doc's cadence on a manual clock: poll, advance 3 s, poll again; bounded."""
    seen = [await client.get_status(task_id)]
    for _ in range(40):
        if seen[-1].state.finished:
            return seen
        await advance(3.0)
        seen.append(await client.get_status(task_id))
    raise AssertionError(f"task never finished: {seen[-1]}")


# --- in-process: ASGITransport --------------------------------------------------------------


@pytest.mark.parametrize("doc", [DOC_TEXT_TO_IMAGE, DOC_IMAGE_TO_IMAGE], ids=["t2i", "i2i"])
async def test_lifecycle_in_process(doc: str) -> None:
    async with in_process() as env, env.client() as client:
        created_at = env.clock()
        task_id = await client.create_task(build_create_body(planned(doc)))
        seen = await poll_until_finished(client, task_id, env.advance)
        stats = await env.stats()
        async with httpx.AsyncClient(transport=env.transport, base_url=SIM_URL) as admin:
            received = (await admin.get(f"/_sim/tasks/{task_id}")).json()["request"]
    states = [s.state for s in seen]
    assert states[0] is ApiState.PENDING
    assert ApiState.PROCESSING in states
    assert states[-1] is ApiState.SUCCESS
    assert states.index(ApiState.PROCESSING) > 0  # never backwards: pending → processing → …
    assert all(s is ApiState.PROCESSING for s in states[states.index(ApiState.PROCESSING) : -1])
    final = seen[-1]
    assert final.create_time == ms(created_at)
    assert final.cost_time == 20_000
    assert final.complete_time == final.create_time + 20_000
    ext = "jpg" if json.loads(doc)["input"]["output_format"] == "jpeg" else "png"
    assert final.result_urls == (f"{SIM_URL}/results/{task_id}/0.{ext}",)
    assert received == json.loads(doc)  # what the API got is the documented body
    assert stats["creates"] == 1
    assert stats["requests_by_endpoint"]["status"] == len(seen)


async def test_failed_task_in_process() -> None:
    async with (
        in_process(SimConfig(task_seconds=5, block_words=("forbidden",))) as env,
        env.client() as client,
    ):
        task_id = await client.create_task(build_create_body({"input": {"prompt": "forbidden"}}))
        final = (await poll_until_finished(client, task_id, env.advance))[-1]
    assert final.state is ApiState.FAILED
    assert final.fail_code == "CONTENT_VIOLATION"
    assert final.fail_msg == "Content does not meet safety guidelines"
    assert final.result_urls == ()


async def test_terminal_answers_in_process() -> None:
    async with in_process(SimConfig(credits=0)) as env:
        async with env.client(api_key="wrong-key") as client:
            with pytest.raises(AuthError):
                await client.create_task(build_create_body(PROMPT))
            with pytest.raises(AuthError):
                await client.get_status("task_x")
        async with env.client() as client:
            with pytest.raises(TaskNotFoundError):
                await client.get_status("task_does_not_exist")
            bad = build_create_body({"input": {"prompt": "x", "aspect_ratio": "5:4"}})
            with pytest.raises(InvalidRequestError, match="aspect_ratio"):
                await client.create_task(bad)
            with pytest.raises(InsufficientCreditsError):
                await client.create_task(build_create_body(PROMPT))
        stats = await env.stats()
    # terminal: one request each, never retried
    assert stats["requests_by_endpoint"] == {"create": 3, "status": 2}
    assert stats["creates"] == 0


async def test_rpm_limit_retry_after_honoured_in_process() -> None:
    budget = FakeBudget()
    async with in_process(SimConfig(rpm=2, rate_window=60)) as env:
        sleep = ClockSleep(env.advance)
        async with env.client(sleep=sleep, budget=budget) as client:
            task_id = await client.create_task(build_create_body(PROMPT))  # 1st in the window
            await env.advance(15)
            await client.get_status(task_id)  # 2nd
            status = await client.get_status(task_id)  # 429: wait until t=60, then ok
        stats = await env.stats()
    assert status.task_id == task_id
    assert sleep.delays == [45.0]  # the t=0 request leaves the window at t=60
    assert ("rate_limited", 45.0) in budget.events
    assert budget.acquires == 4
    assert stats["rate_limited"] == 1
    assert stats["requests_by_endpoint"]["status"] == 3


async def test_rate_limit_burst_in_process() -> None:
    config = SimConfig(faults=Faults(rate_limit_burst=3))
    async with in_process(config) as env:
        sleep = ClockSleep(env.advance)
        async with env.client(sleep=sleep) as client:
            task_id = await client.create_task(build_create_body(PROMPT))
        stats = await env.stats()
    assert task_id.startswith("task_")
    assert sleep.delays == [1.0, 1.0, 1.0]  # the simulator's Retry-After: 1
    assert stats["rate_limited"] == 3
    assert stats["creates"] == 1


@pytest.mark.parametrize("errors_as_200", [False, True], ids=["http-5xx", "http-200-code-5xx"])
async def test_status_5xx_retried_in_process(errors_as_200: bool) -> None:
    async with in_process() as env:
        heal = partial(env.set_faults, error_rate=0.0)
        sleep = ClockSleep(env.advance, heal_after=2, heal=heal)
        async with env.client(sleep=sleep) as client:
            task_id = await client.create_task(build_create_body(PROMPT))
            await env.set_faults(error_rate=1.0, errors_as_200=errors_as_200)
            status = await client.get_status(task_id)
        stats = await env.stats()
    assert status.task_id == task_id
    assert sleep.delays == [0.25, 0.5]  # jitter 0.5 × 0.5 s, × 1 s
    assert stats["server_errors"] == 2
    assert stats["requests_by_endpoint"]["status"] == 3


async def test_status_5xx_gives_up_after_attempts_in_process() -> None:
    async with in_process() as env:
        async with env.client(attempts=3) as client:
            task_id = await client.create_task(build_create_body(PROMPT))
            await env.set_faults(error_rate=1.0)
            with pytest.raises(ServerError) as info:
                await client.get_status(task_id)
        stats = await env.stats()
    assert info.value.task_id == task_id
    assert stats["requests_by_endpoint"]["status"] == 3


async def test_create_5xx_retried_creates_one_task_in_process() -> None:
    async with in_process(SimConfig(faults=Faults(error_rate=1.0))) as env:
        sleep = ClockSleep(env.advance, heal_after=1, heal=partial(env.set_faults, error_rate=0.0))
        async with env.client(sleep=sleep) as client:
            await client.create_task(build_create_body(PROMPT))
        stats = await env.stats()
    assert stats["requests_by_endpoint"]["create"] == 2
    assert stats["creates"] == 1


# --- over real HTTP: uvicorn on a free loopback port ----------------------------------------


class OverHttp:
    """A SimulatorThread (ManualClock) and async access to its admin API."""

    def __init__(self, thread: SimulatorThread, admin: httpx.AsyncClient) -> None:
        self.thread = thread
        self.admin = admin

    async def _admin(self, method: str, path: str, payload: object = None) -> dict[str, Any]:
        response = await self.admin.request(method, path, json=payload)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def advance(self, seconds: float) -> None:
        await self._admin("POST", "/_sim/clock", {"advance": seconds})

    async def set_faults(self, **changes: object) -> None:
        await self._admin("POST", "/_sim/faults", changes)

    async def stats(self) -> dict[str, Any]:
        return await self._admin("GET", "/_sim/stats")

    def client(self, **kw: Any) -> FluxClient:
        return sim_client(self.thread.base_url, **kw)


@pytest.fixture
async def over_http() -> AsyncIterator[OverHttp]:
    config = SimConfig(task_seconds=20, task_spread=0)
    with SimulatorThread(config, host="127.0.0.1", port=0, clock=ManualClock()) as thread:
        async with httpx.AsyncClient(
            base_url=thread.base_url, trust_env=False, timeout=10
        ) as admin:
            yield OverHttp(thread, admin)


async def test_lifecycle_over_uvicorn(over_http: OverHttp) -> None:
    async with over_http.client() as client:
        task_id = await client.create_task(build_create_body(planned(DOC_TEXT_TO_IMAGE)))
        seen = await poll_until_finished(client, task_id, over_http.advance)
    final = seen[-1]
    assert [seen[0].state, final.state] == [ApiState.PENDING, ApiState.SUCCESS]
    assert final.cost_time == 20_000
    assert final.result_urls == (f"{over_http.thread.base_url}/results/{task_id}/0.jpg",)
    assert (await over_http.stats())["requests_by_endpoint"] == {
        "create": 1,
        "status": len(seen),
    }


async def test_create_not_retried_after_dropped_answer(over_http: OverHttp) -> None:
    """drop_after: the simulator creates the task, then closes the connection mid-answer."""
    await over_http.set_faults(drop_rate=1.0, drop_after=True)
    sleep = FakeSleep()
    async with over_http.client(sleep=sleep) as client:
        with pytest.raises(AmbiguousCreateError) as info:
            await client.create_task(build_create_body(PROMPT))
    stats = await over_http.stats()
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert sleep.delays == []
    assert stats["requests_by_endpoint"] == {"create": 1}
    assert stats["creates"] == 1  # the task exists (and was paid for): the ambiguity is real
    assert stats["drops"] == 1
    assert stats["tasks_by_state"]["pending"] == 1


async def test_create_dropped_before_processing_is_also_ambiguous(over_http: OverHttp) -> None:
    """Without drop_after the task was NOT created: the client cannot tell the two apart."""
    await over_http.set_faults(drop_rate=1.0, drop_after=False)
    async with over_http.client() as client:
        with pytest.raises(AmbiguousCreateError):
            await client.create_task(build_create_body(PROMPT))
    stats = await over_http.stats()
    assert stats["requests_by_endpoint"] == {"create": 1}
    assert stats["creates"] == 0


async def test_status_retried_after_dropped_connections(over_http: OverHttp) -> None:
    heal = partial(over_http.set_faults, drop_rate=0.0)
    sleep = ClockSleep(over_http.advance, heal_after=2, heal=heal)
    async with over_http.client(sleep=sleep) as client:
        task_id = await client.create_task(build_create_body(PROMPT))
        await over_http.set_faults(drop_rate=1.0)
        status = await client.get_status(task_id)
    stats = await over_http.stats()
    assert status.task_id == task_id
    assert len(sleep.delays) == 2
    assert stats["drops"] == 2
    assert stats["requests_by_endpoint"]["status"] == 3


async def test_status_gives_up_on_dropped_connections(over_http: OverHttp) -> None:
    async with over_http.client(attempts=2) as client:
        task_id = await client.create_task(build_create_body(PROMPT))
        await over_http.set_faults(drop_rate=1.0)
        with pytest.raises(ApiTransportError) as info:
            await client.get_status(task_id)
    assert info.value.never_sent is False
    assert (await over_http.stats())["requests_by_endpoint"]["status"] == 2


async def test_429_retry_after_over_uvicorn(over_http: OverHttp) -> None:
    await over_http.set_faults(rate_limit_burst=2)
    sleep = ClockSleep(over_http.advance)
    async with over_http.client(sleep=sleep) as client:
        await client.create_task(build_create_body(PROMPT))
    stats = await over_http.stats()
    assert sleep.delays == [1.0, 1.0]
    assert stats["rate_limited"] == 2
    assert stats["creates"] == 1


# --- callbacks: the simulator POSTs to a receiver on loopback -------------------------------


class CallbackReceiver:
    """A plain http.server on 127.0.0.1:0 in a thread; records every POSTed JSON body."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.bodies.append(
                    (
                        self.path,
                        self.headers.get("Content-Type"),
                        json.loads(self.rfile.read(length)),
                    )
                )
                self.send_response(204)
                self.end_headers()
                receiver.arrived.set()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    async def wait(self) -> bool:
        """Block (in a worker thread) until a callback arrives; False after 10 s."""
        return await anyio.to_thread.run_sync(self.arrived.wait, 10.0)


@contextmanager
def callback_receiver() -> Iterator[CallbackReceiver]:
    receiver = CallbackReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(10)


async def test_callback_delivered_over_uvicorn(over_http: OverHttp) -> None:
    with callback_receiver() as receiver:
        body = build_create_body(
            PROMPT, request_type="callback", callback_url=f"{receiver.url}/hook/secret123"
        )
        async with over_http.client() as client:
            task_id = await client.create_task(body)
            assert receiver.bodies == []
            await over_http.advance(3600)  # long past due: the simulator sends the callback
            assert await receiver.wait(), "no callback arrived"
            # a callback is a hint, confirmed with one status call (docs/api-contract.md)
            confirmed = await client.get_status(task_id)
        stats = await over_http.stats()
    ((path, content_type, payload),) = receiver.bodies
    assert path == "/hook/secret123"
    assert content_type == "application/json"
    assert payload["code"] == 200
    hinted = parse_status(payload["data"])
    assert hinted == confirmed
    assert hinted.task_id == task_id
    assert hinted.state is ApiState.SUCCESS
    assert stats["callbacks_sent"] == 1
