"""The HTTP face of the simulator: the two API endpoints, result downloads and ``/_sim/*``.

``create_app(config, clock=None)`` returns a Starlette app whose lifespan runs the background
loop. ``httpx.ASGITransport`` does not run lifespans: wrap such tests in
``async with lifespan_running(app):``.

API endpoints (auth, limits, faults):
    POST /api/v1/generateTask/flux-kontext
    GET  /api/v1/statusTask/flux-kontext?taskId=...
Results (no auth; truncation faults only):
    GET  /results/{taskId}/{index}.{jpg|png|webp}
Admin (no auth, no faults):
    GET  /_sim/stats              counters (see ``Simulator.snapshot``)
    GET  /_sim/tasks              every task ever created, in creation order:
                                  ``{"tasks": [{"taskId", "prompt", "request", "created"}]}``
    GET  /_sim/tasks/{taskId}     debug view, incl. the request received
    GET  /_sim/faults             current faults; POST the same names to change them
    POST /_sim/clock              {"advance": seconds}; only with a ManualClock
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from flux_pipeline.simulator import references, wire
from flux_pipeline.simulator.clock import Clock, ManualClock
from flux_pipeline.simulator.config import SimConfig
from flux_pipeline.simulator.core import ApiFailure, Simulator
from flux_pipeline.simulator.images import FORMAT_OF_EXTENSION, MEDIA_TYPES, ImageSpec, render
from flux_pipeline.simulator.persist import StateFile
from flux_pipeline.simulator.validation import InvalidRequest, parse_create

CREATE_PATH = "/api/v1/generateTask/flux-kontext"
STATUS_PATH = "/api/v1/statusTask/flux-kontext"
SERVER_ERROR_MESSAGES = {
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}

Handler = Callable[[Request], Awaitable[Response]]


def json_response(
    payload: object, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def gateway_page(status: int) -> Response:
    """What a proxy in front of the API answers: an HTML page, no API envelope."""
    title = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}.get(status, f"{status} Error")
    body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return Response(body, status_code=status, media_type="text/html")


def envelope(data: object) -> Response:
    return json_response({"code": 200, "message": "success", "data": data})


class ApiEndpoint:
    """One API endpoint as a raw ASGI app: faults and error answers around a handler."""

    def __init__(self, sim: Simulator, name: str, handler: Handler) -> None:
        self.sim = sim
        self.name = name
        self.handler = handler

    def error(self, failure: ApiFailure) -> Response:
        self.sim.stats.answered(failure.code)
        status = 200 if self.sim.faults.faults.errors_as_200 else failure.code
        headers = None
        if failure.retry_after is not None:
            headers = {"Retry-After": str(failure.retry_after)}
        payload = {"code": failure.code, "message": failure.message, "data": None}
        return json_response(payload, status, headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sim = self.sim
        sim.stats.requests[self.name] += 1
        tracked = wire.TrackedReceive(receive)
        decision = sim.faults.decide()
        if decision.status is not None:
            message = SERVER_ERROR_MESSAGES.get(decision.status, "Rate limit exceeded")
            retry = 1 if decision.status == 429 else None
            failure = ApiFailure(decision.status, message, retry_after=retry)
            await self.error(failure)(scope, receive, send)
            return
        if decision.gateway is not None and not decision.gateway_after:
            sim.stats.gateway_errors += 1
            await gateway_page(decision.gateway)(scope, receive, send)
            return
        if decision.drop:
            sim.stats.drops += 1
            await wire.drop(tracked, send)
            return
        request = Request(scope, tracked)
        try:
            response = await self.handler(request)
            sim.stats.answered(200)
        except ApiFailure as failure:
            response = self.error(failure)
        if decision.slow:
            sim.stats.slowed += 1
            await anyio.sleep(decision.slow)
        if decision.drop_after:
            sim.stats.drops += 1
            sim.stats.lost_after += 1
            await wire.drop(tracked, send)
            return
        if decision.gateway is not None:
            sim.stats.gateway_errors += 1
            sim.stats.lost_after += 1
            await gateway_page(decision.gateway)(scope, receive, send)
            return
        await response(scope, receive, send)


def _api_routes(sim: Simulator) -> list[Route]:
    async def create(request: Request) -> Response:
        key = sim.authenticate(request.headers.get("authorization"))
        sim.admit(key)
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiFailure(400, "request body: not valid JSON") from None
        try:
            parsed = parse_create(body)
        except InvalidRequest as exc:
            raise ApiFailure(400, str(exc)) from None
        task_id = sim.create(key, parsed, str(request.base_url))
        return envelope({"taskId": task_id})

    async def status(request: Request) -> Response:
        key = sim.authenticate(request.headers.get("authorization"))
        sim.admit(key)
        task_id = request.query_params.get("taskId")
        if not task_id:
            raise ApiFailure(400, "taskId: required query parameter is missing")
        return envelope(sim.status(key, task_id))

    return [
        Route(CREATE_PATH, ApiEndpoint(sim, "create", create), methods=["POST"]),
        Route(STATUS_PATH, ApiEndpoint(sim, "status", status), methods=["GET"]),
    ]


class ResultEndpoint:
    """``GET /results/{taskId}/{index}.{ext}``: the image, while the task's TTL lasts."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sim = self.sim
        internal = any(
            name.decode("latin-1").lower() == references.INTERNAL_HEADER.lower()
            for name, _ in scope["headers"]
        )
        sim.stats.requests["results_internal" if internal else "results"] += 1
        params = scope["path_params"]
        index_text, _, ext = str(params["name"]).partition(".")
        task = sim.store.tasks.get(str(params["task_id"]))
        fmt = FORMAT_OF_EXTENSION.get(ext)
        sim.settle()
        if (
            task is None
            or not index_text.isdigit()
            or fmt != task.request.output_format
            or not sim.result_available(task, int(index_text))
        ):
            await Response("Not Found", status_code=404)(scope, receive, send)
            return
        spec = ImageSpec(
            task_id=task.task_id,
            prompt=task.request.prompt,
            index=int(index_text),
            aspect_ratio=task.request.aspect_ratio,
            output_format=fmt,
            size=sim.config.image_size,
        )
        body = sim.images.get(spec)
        if body is None:
            body = await anyio.to_thread.run_sync(render, spec)
            sim.images.put(spec, body)
        media_type = MEDIA_TYPES[fmt]
        if not internal and sim.faults.truncate():
            sim.stats.truncated += 1
            await wire.truncated(send, body, media_type)
            return
        headers = {"Cache-Control": "public, max-age=86400"}
        await Response(body, media_type=media_type, headers=headers)(scope, receive, send)


def _admin_routes(sim: Simulator) -> list[Route]:
    async def stats(request: Request) -> Response:
        return json_response(sim.snapshot())

    async def task_list(request: Request) -> Response:
        tasks = [
            {
                "taskId": task.task_id,
                "prompt": task.request.prompt,
                "request": task.request.raw,
                "created": task.created,
            }
            for task in list(sim.store.tasks.values())
        ]
        return json_response({"tasks": tasks})

    async def task_view(request: Request) -> Response:
        try:
            task = sim.task_for(None, request.path_params["task_id"])
        except ApiFailure as failure:
            return json_response({"error": failure.message}, failure.code)
        return json_response(sim.debug_view(task))

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = json.loads(await request.body() or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object of fault settings")
                sim.faults.update(changes)
            except (ValueError, TypeError) as exc:
                return json_response({"error": str(exc)}, 400)
        return json_response(sim.faults.snapshot())

    async def clock(request: Request) -> Response:
        if not isinstance(sim.clock, ManualClock):
            return json_response({"error": "the simulator runs on a real clock"}, 409)
        try:
            payload: Any = json.loads(await request.body() or b"{}")
            seconds = float(payload.get("advance", 0)) if isinstance(payload, dict) else -1.0
            if seconds < 0:
                raise ValueError
        except (ValueError, TypeError):
            return json_response({"error": 'expected {"advance": seconds >= 0}'}, 400)
        now = sim.clock.advance(seconds)
        sim.settle()
        return json_response({"now": now})

    return [
        Route("/_sim/stats", stats, methods=["GET"]),
        Route("/_sim/tasks", task_list, methods=["GET"]),
        Route("/_sim/tasks/{task_id}", task_view, methods=["GET"]),
        Route("/_sim/faults", faults, methods=["GET", "POST"]),
        Route("/_sim/clock", clock, methods=["POST"]),
    ]


def create_app(
    config: SimConfig | None = None, clock: Clock | None = None, state: StateFile | None = None
) -> Starlette:
    """The simulator as an ASGI app; ``app.state.simulator`` is its ``Simulator`` (restored
    from ``state`` and saved there: ``persist.StateFile``)."""
    sim = Simulator(config or SimConfig(), clock, state)
    routes = [
        *_api_routes(sim),
        Route("/results/{task_id}/{name}", ResultEndpoint(sim), methods=["GET"]),
        *_admin_routes(sim),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with sim.running():
            yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.simulator = sim
    return app


def simulator_of(app: Starlette) -> Simulator:
    sim = app.state.simulator
    assert isinstance(sim, Simulator)
    return sim


def lifespan_running(app: Starlette) -> AbstractAsyncContextManager[Simulator]:
    """``async with lifespan_running(app) as sim:`` runs the background loop for ASGI tests."""
    return simulator_of(app).running()
