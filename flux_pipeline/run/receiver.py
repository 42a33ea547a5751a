"""The callback receiver (callback mode): an ASGI app on loopback, served by uvicorn in the
run's own event loop.

The callback URL carries a per-run secret and the task's key (``/callbacks/<secret>/<key>``;
``/callbacks/<secret>`` is accepted too); a wrong secret is 404. A callback is only a hint
(docs/api-contract.md, ambiguity 2): the receiver extracts a taskId from the body (the status
``data`` object, bare or inside the usual envelope) and asks the engine to confirm it with one
status call; the key lets a create whose answer was lost find its taskId again
(``run/resolution.py``). Forged, replayed, malformed or oversized callbacks therefore change
nothing; at worst a known taskId costs one status request. A bad callback (wrong secret,
garbage, JSON nested too deep, a body too large or too slow, a client gone mid-body) is
counted and logged as one line (the first of each kind, then at powers of two), never a
traceback.
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from flux_pipeline.run.caps import TooDeepError, loads, one_line

MAX_CALLBACK_BYTES = 64 * 1024
MAX_KEY_CHARS = 128  # task keys are SHA-256 hex (docs/keys.md)
CALLBACK_READ_SECONDS = 10.0  # a whole callback body, at most: slower is refused (408)


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


class _Refused(Exception):
    """A bad callback: counted under ``kind``, answered ``status``."""

    def __init__(self, kind: str, status: int, why: str) -> None:
        super().__init__(why)
        self.kind = kind
        self.status = status
        self.why = why


class CallbackReceiver:
    def __init__(
        self,
        confirm: Callable[[str, str | None], bool],
        *,
        secret: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.secret = secret or secrets.token_urlsafe(24)
        self._confirm = confirm
        self._log = log
        self._reading: set[anyio.CancelScope] = set()
        self._closing = False
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

    def _refused(self, refusal: _Refused) -> Response:
        self.counts[refusal.kind] += 1
        count = self.counts[refusal.kind]
        if self._log is not None and count & (count - 1) == 0:  # 1, 2, 4, 8, ...
            self._log(
                f"flux-pipeline: callback refused ({refusal.kind}: {one_line(refusal.why, 120)});"
                f" {count} {refusal.kind} so far"
            )
        return PlainTextResponse(refusal.why, status_code=refusal.status)

    async def _handle(self, request: Request) -> Response:
        try:
            return await self._receive(request)
        except _Refused as refusal:
            return self._refused(refusal)
        except ClientDisconnect:
            return self._refused(_Refused("incomplete", 400, "client gone before the body"))
        except Exception as exc:  # a bug of ours must not print a traceback per callback
            return self._refused(_Refused("error", 500, f"{type(exc).__name__}: {exc}"))

    async def _receive(self, request: Request) -> Response:
        given = str(request.path_params.get("secret", ""))
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            raise _Refused("wrong secret", 404, "not found")
        key = request.path_params.get("key")
        if key is not None and not (0 < len(str(key)) <= MAX_KEY_CHARS):
            raise _Refused("malformed", 400, "bad key")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_CALLBACK_BYTES):
            raise _Refused("oversized", 413, "too large")
        body = await self._body(request)
        try:
            payload = loads(body, "callback")
        except TooDeepError as exc:
            raise _Refused("malformed", 400, str(exc)) from None
        except ValueError:
            raise _Refused("malformed", 400, "not JSON") from None
        task_id = extract_task_id(payload)
        if task_id is None:
            raise _Refused("malformed", 400, "no taskId")
        if self._confirm(task_id, None if key is None else str(key)):
            self.counts["accepted"] += 1
        else:
            self.counts["unknown task"] += 1
        return PlainTextResponse("ok")

    def close(self) -> None:
        """The run is ending: bodies still being read are refused now (a body that never
        ends must not hold the server's shutdown)."""
        self._closing = True
        for scope in list(self._reading):
            scope.cancel()

    async def _body(self, request: Request) -> bytes:
        """The body, within ``MAX_CALLBACK_BYTES`` and ``CALLBACK_READ_SECONDS``."""
        body = bytearray()
        scope = anyio.move_on_after(CALLBACK_READ_SECONDS)
        self._reading.add(scope)
        try:
            with scope:
                if self._closing:
                    scope.cancel()
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_CALLBACK_BYTES:
                        raise _Refused("oversized", 413, "too large")
                return bytes(body)
        finally:
            self._reading.discard(scope)
        if self._closing:
            raise _Refused("unfinished", 503, "the run is ending")
        raise _Refused("slow", 408, f"body not received within {CALLBACK_READ_SECONDS:g}s")


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

    def __init__(
        self, app: Any, sock: socket.socket, *, before_stop: Callable[[], None] | None = None
    ) -> None:
        self._before_stop = before_stop
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
        if self._before_stop is not None:
            self._before_stop()
        self._server.should_exit = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await self._done.wait()
