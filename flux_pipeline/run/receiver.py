"""The callback receiver (callback mode): an ASGI app on loopback, served by uvicorn in the
run's own event loop.

The callback URL carries a per-run secret and the task's key (``/callbacks/<secret>/<key>``;
``/callbacks/<secret>`` is accepted too); a wrong secret is 404. A callback is only a hint
(docs/api-contract.md, ambiguity 2): the receiver extracts a taskId from the body (the status
``data`` object, bare or inside the usual envelope) and asks the engine to confirm it with one
status call; the key lets a create whose answer was lost find its taskId again
(``run/resolution.py``). Forged, replayed, malformed or oversized callbacks therefore change
nothing; at worst a known taskId costs one status request.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

MAX_CALLBACK_BYTES = 64 * 1024
MAX_KEY_CHARS = 128  # task keys are SHA-256 hex (docs/keys.md)


def extract_task_id(payload: Any) -> str | None:
    """The taskId of a callback body: ``{"data": {"taskId": ...}}`` or ``{"taskId": ...}``."""
    if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
        payload = payload["data"]
    if not isinstance(payload, dict):
        return None
    task_id = payload.get("taskId")
    if isinstance(task_id, str) and 0 < len(task_id) <= 200:
        return task_id
    return None


class CallbackReceiver:
    def __init__(
        self, confirm: Callable[[str, str | None], bool], *, secret: str | None = None
    ) -> None:
        self.secret = secret or secrets.token_urlsafe(24)
        self._confirm = confirm
        self.counts: Counter[str] = Counter()
        routes = [
            Route("/callbacks/{secret}", self._handle, methods=["POST"]),
            Route("/callbacks/{secret}/{key}", self._handle, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes)

    def __repr__(self) -> str:
        return "CallbackReceiver(secret=<hidden>)"

    @property
    def path(self) -> str:
        return f"/callbacks/{self.secret}"

    async def _handle(self, request: Request) -> Response:
        given = str(request.path_params.get("secret", ""))
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            self.counts["wrong secret"] += 1
            return PlainTextResponse("not found", status_code=404)
        key = request.path_params.get("key")
        if key is not None and not (0 < len(str(key)) <= MAX_KEY_CHARS):
            self.counts["malformed"] += 1
            return PlainTextResponse("bad key", status_code=400)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_CALLBACK_BYTES):
            self.counts["oversized"] += 1
            return PlainTextResponse("too large", status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_CALLBACK_BYTES:
                self.counts["oversized"] += 1
                return PlainTextResponse("too large", status_code=413)
        try:
            payload = json.loads(body)
        except ValueError:
            self.counts["malformed"] += 1
            return PlainTextResponse("not JSON", status_code=400)
        task_id = extract_task_id(payload)
        if task_id is None:
            self.counts["malformed"] += 1
            return PlainTextResponse("no taskId", status_code=400)
        if self._confirm(task_id, None if key is None else str(key)):
            self.counts["accepted"] += 1
        else:
            self.counts["unknown task"] += 1
        return PlainTextResponse("ok")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the run handles signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets it recognises as TCP,
    # and without it every answer waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class BackgroundServer:
    """uvicorn serving ``app`` on a bound socket: ``run`` in a task group, ``stop`` to shut
    down cleanly (connections closed) before the group is cancelled."""

    def __init__(self, app: Any, sock: socket.socket) -> None:
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = _Server(config)
        self._sock = sock
        self._done = anyio.Event()
        host, port = sock.getsockname()[:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def run(self) -> None:
        try:
            await self._server.serve(sockets=[self._sock])
        finally:
            self._sock.close()
            self._done.set()

    async def stop(self) -> None:
        self._server.should_exit = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self._done.wait()
