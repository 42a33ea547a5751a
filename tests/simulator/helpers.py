"""Shared helpers of the simulator tests: in-process clients, a loopback file/callback server."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import httpx
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from flux_pipeline.simulator import SimConfig, Simulator, create_app, lifespan_running
from flux_pipeline.simulator.clock import Clock
from flux_pipeline.simulator.server import _Server, base_url_of, bind, uvicorn_config

CREATE = "/api/v1/generateTask/flux-kontext"
STATUS = "/api/v1/statusTask/flux-kontext"
AUTH = {"Authorization": "Bearer sim-key"}


@asynccontextmanager
async def running_sim(
    config: SimConfig | None = None, clock: Clock | None = None
) -> AsyncIterator[tuple[httpx.AsyncClient, Simulator]]:
    """The simulator in-process: lifespan running, an httpx client on ASGITransport."""
    app = create_app(config or SimConfig(), clock)
    transport = httpx.ASGITransport(app=app)
    async with (
        lifespan_running(app) as sim,
        httpx.AsyncClient(transport=transport, base_url="http://sim.test") as client,
    ):
        yield client, sim


async def create(
    client: httpx.AsyncClient,
    prompt: str = "a castle on the hill at sunset",
    *,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    inp = {"prompt": prompt, **fields.pop("input", {})}
    return await client.post(CREATE, json={"input": inp, **fields}, headers=headers or AUTH)


async def create_id(client: httpx.AsyncClient, prompt: str = "a castle", **fields: Any) -> str:
    response = await create(client, prompt, **fields)
    assert response.status_code == 200, response.text
    task_id = response.json()["data"]["taskId"]
    assert isinstance(task_id, str)
    return task_id


async def status(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    response = await client.get(STATUS, params={"taskId": task_id}, headers=AUTH)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert isinstance(data, dict)
    return data


async def await_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait for an observable condition, failing after ``within`` seconds."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - counters have no event to wait on
            await anyio.sleep(0.005)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, fmt)
    return out.getvalue()


class Receiver:
    """A loopback server for tests: serves reference files and records callbacks.

    ``fail_next`` callback posts are answered 500 before the others get 200.
    """

    def __init__(self) -> None:
        self.callbacks: list[dict[str, Any]] = []
        self.fail_next = 0
        self.files: dict[str, tuple[bytes, str]] = {}
        self.base_url = ""

    def app(self) -> Starlette:
        async def callback(request: Request) -> Response:
            if self.fail_next > 0:
                self.fail_next -= 1
                return Response("try again", status_code=500)
            self.callbacks.append(await request.json())
            return Response("ok")

        async def file(request: Request) -> Response:
            found = self.files.get(request.path_params["name"])
            if found is None:
                return Response("no such file", status_code=404)
            return Response(found[0], media_type=found[1])

        return Starlette(
            routes=[
                Route("/callback", callback, methods=["POST"]),
                Route("/files/{name}", file, methods=["GET"]),
            ]
        )


@contextmanager
def serve_in_thread(app: Starlette) -> Iterator[str]:
    """Serve any ASGI app with uvicorn on a free loopback port; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    ready = threading.Event()
    server = _Server(uvicorn_config(app), ready.set)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "test server did not start"
        yield base_url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    with serve_in_thread(rec.app()) as url:
        rec.base_url = url
        yield rec
