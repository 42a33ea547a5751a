"""The server of ``flux-pipeline review`` (docs/cli.md#review-manifest): the output
directory's files and the decisions API, on 127.0.0.1 only, with Starlette and uvicorn.

    GET /api/decisions             -> 200 {"decisions": {key: "picked"|"rejected", ...}}
    PUT /api/decisions/<task key>  {"decision": "picked"|"rejected"|"clear", "id": .., "step": ..}
                                   -> 200 {"decisions": {...}}, the review file written at once

A key the report does not list is 404, a body that is not such an object 400, a body over
``MAX_BODY`` bytes 413; every error is a JSON ``{"error": "..."}``. The ``id`` and ``step``
written are the plan's, never the body's. Requests from another address than 127.0.0.1, or
naming another host (a DNS rebinding page) or another origin, are refused (403). Files are
served from the output directory only: no ``..``, no symlink leading out of it, nothing of the
state directory but its subdirectories (the gallery's assets and thumbnails), never the state DB.
"""

from __future__ import annotations

import json
import mimetypes
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from flux_pipeline.errors import UsageError
from flux_pipeline.layout import STATE_DIR
from flux_pipeline.plan.review_gate import DECISIONS
from flux_pipeline.report.reviewfile import MAX_TEXT, Decision, write_review

HOST = "127.0.0.1"
MAX_BODY = 4096
BODY_KEYS = frozenset({"decision", "id", "step"})
CLEAR = "clear"
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass(kw_only=True)
class DecisionBook:
    """The review file's decisions in memory, written through at every change.

    ``tasks``: the report's tasks (key -> (readable id, step)), the only keys a decision may
    be made for; decisions already in the file for other keys (orphaned) are kept.
    """

    path: Path | None  # None: --no-review, decisions are not saved (PUT is 409)
    manifest: str  # the manifest's file name, as the file records it
    tasks: Mapping[str, tuple[str, str]]
    decisions: dict[str, Decision] = field(default_factory=dict)

    def verdicts(self) -> dict[str, str]:
        return {key: self.decisions[key].decision for key in sorted(self.decisions)}

    def decide(self, key: str, decision: str) -> None:
        assert self.path is not None
        rid, step = self.tasks[key]
        if decision == CLEAR:
            self.decisions.pop(key, None)
        else:
            self.decisions[key] = Decision(decision, rid, step)
        write_review(self.path, self.manifest, self.decisions)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


def _refusal(request: Request, port: int) -> Response | None:
    """403 for a request that is not from this machine's own 127.0.0.1 to this server."""
    client = request.client.host if request.client is not None else None
    if client != HOST:
        return _error(403, "only 127.0.0.1 may use this server")
    allowed = {f"{HOST}:{port}", f"localhost:{port}"}
    if request.headers.get("host", "") not in allowed:
        return _error(403, "wrong Host header")
    origin = request.headers.get("origin")
    if origin is not None and origin.removeprefix("http://") not in allowed:
        return _error(403, "requests from another origin are refused")
    return None


async def _body(request: Request) -> bytes | Response:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        return _error(413, f"the body is over {MAX_BODY} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            return _error(413, f"the body is over {MAX_BODY} bytes")
    return bytes(data)


def _parse(body: bytes) -> str:
    """The decision of a PUT body; raises ``ValueError`` with what is wrong."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        raise ValueError(f"the body is not JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(data) - BODY_KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; expected decision, id, step")
    decision = data.get("decision")
    if decision not in (*DECISIONS, CLEAR):
        raise ValueError("'decision' must be 'picked', 'rejected' or 'clear'")
    for name in ("id", "step"):
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            raise ValueError(f"{name!r} must be a string of at most {MAX_TEXT} characters")
    return str(decision)


def _no_constant(name: str) -> None:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def static_file(root: Path, relative: str) -> Path | None:
    """The file under ``root`` that URL path ``relative`` names, or None: nothing outside
    ``root`` (``..``, absolute paths, symlinks leading out), no directory, nothing directly in
    the state directory (the state DB, the lease)."""
    parts = [part for part in relative.split("/") if part]
    if not parts:
        parts = ["index.html"]
    if any(part in (".", "..") or "\\" in part or "\x00" in part for part in parts):
        return None
    if parts[0] == STATE_DIR and len(parts) < 3:
        return None
    base = root.resolve()
    try:
        target = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


def create_app(book: DecisionBook, root: Path, port: int) -> Starlette:
    """The review app serving ``root`` (the output directory); ``port``: the bound port, for
    the Host check."""

    async def get_decisions(request: Request) -> Response:
        if (refused := _refusal(request, port)) is not None:
            return refused
        return JSONResponse({"decisions": book.verdicts()}, headers=NO_STORE)

    async def put_decision(request: Request) -> Response:
        if (refused := _refusal(request, port)) is not None:
            return refused
        body = await _body(request)
        if isinstance(body, Response):
            return body
        key = request.path_params["key"]
        try:
            decision = _parse(body)
        except ValueError as exc:
            return _error(400, str(exc))
        if key not in book.tasks:
            return _error(404, "no task of the plan has this key")
        if book.path is None:
            return _error(409, "started with --no-review: decisions are not saved")
        try:
            book.decide(key, decision)
        except OSError as exc:
            return _error(500, f"cannot write the review file: {exc.strerror or exc}")
        return JSONResponse({"decisions": book.verdicts()}, headers=NO_STORE)

    async def files(request: Request) -> Response:
        if (refused := _refusal(request, port)) is not None:
            return refused
        target = static_file(root, request.path_params.get("path", ""))
        if target is None:
            return _error(404, "not found")
        kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        return FileResponse(target, media_type=kind, headers={"X-Content-Type-Options": "nosniff"})

    async def no_such_api(request: Request) -> Response:
        return _error(404, "no such API path (GET /api/decisions, PUT /api/decisions/KEY)")

    routes = [
        Route("/api/decisions", get_decisions, methods=["GET"]),
        Route("/api/decisions/{key}", put_decision, methods=["PUT"]),
        Route("/api/{rest:path}", no_such_api, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/{path:path}", files, methods=["GET", "HEAD"]),
    ]
    return Starlette(routes=routes)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (``port`` 0: any free port); another host is refused."""
    if host != HOST:
        raise UsageError(f"flux-pipeline review listens on {HOST} only, not {host!r}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}") from None
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


def serve(app: Starlette, sock: socket.socket, on_started: Callable[[], None]) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's handlers: a graceful stop)."""
    config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=2,
        server_header=False,
    )
    _Server(config, on_started).run(sockets=[sock])
