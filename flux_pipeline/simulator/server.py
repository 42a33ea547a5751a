"""Serving the simulator with uvicorn: in a background thread (tests, ``--simulate``) or in the
foreground (``flux-pipeline sim``). Only loopback addresses are ever bound.

    with SimulatorThread(SimConfig(), port=0) as sim:
        httpx.get(f"{sim.base_url}/_sim/stats")
        sim.stats()
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from flux_pipeline.simulator.app import create_app, simulator_of
from flux_pipeline.simulator.clock import Clock, ManualClock
from flux_pipeline.simulator.config import SimConfig
from flux_pipeline.simulator.core import Simulator
from flux_pipeline.simulator.persist import StateFile
from flux_pipeline.simulator.references import is_loopback

_DELIBERATE = "ASGI callable returned without completing response."


class _HideDeliberateDrops(logging.Filter):
    """Dropped and truncated answers are on purpose: do not log them as server errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _DELIBERATE


_FILTER = _HideDeliberateDrops()


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def check_loopback(host: str) -> None:
    if not is_loopback(host):
        raise ValueError(f"the simulator only listens on loopback addresses, not {host!r}")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on a loopback ``host`` (``port`` 0: any free port)."""
    check_loopback(host)
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # "localhost"
        family = socket.AF_INET
        host = "127.0.0.1"
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it every answer (headers, then body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def bind_remembered(
    host: str, port: int, state: StateFile | None
) -> tuple[socket.socket, int | None]:
    """``bind(host, port)``; with ``port`` 0 and a saved state, the port it served before
    (its result URLs point there) when that is free. Returns the socket and, when the saved
    port was taken, that port (the caller says so: docs/simulator.md)."""
    saved = state.saved.port if state is not None and state.saved is not None else None
    if port != 0 or saved is None:
        return bind(host, port), None
    try:
        return bind(host, saved), None
    except OSError:
        return bind(host, 0), saved


def base_url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """A uvicorn server that reports when it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


def uvicorn_config(app: Starlette, *, log_config: dict[str, Any] | None = None) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        log_level="warning",
        log_config=log_config,
        timeout_graceful_shutdown=3,
        server_header=False,
    )
    _install_log_filter()
    return config


def serve(
    app: Starlette, sock: socket.socket, *, on_started: Callable[[], None] = lambda: None
) -> None:
    """Serve in this thread until SIGINT/SIGTERM (main thread) or the server is told to exit."""
    server = _Server(uvicorn_config(app, log_config=uvicorn.config.LOGGING_CONFIG), on_started)
    server.run(sockets=[sock])


class SimulatorThread:
    """uvicorn serving a fresh simulator in a daemon thread; a context manager."""

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock | None = None,
        startup_timeout: float = 10.0,
        state: StateFile | None = None,
    ) -> None:
        check_loopback(host)
        self.config = config or SimConfig()
        self.state = state
        self.app = create_app(self.config, clock, state)
        self.simulator: Simulator = simulator_of(self.app)
        self._host, self._port = host, port
        self._timeout = startup_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.base_url = ""
        self.moved_from: int | None = None  # the saved port, when it was taken

    def __repr__(self) -> str:
        return f"SimulatorThread(base_url={self.base_url!r})"

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1]) if self.base_url else 0

    def start(self) -> SimulatorThread:
        if self._thread is not None:
            raise RuntimeError("already started")
        sock, self.moved_from = bind_remembered(self._host, self._port, self.state)
        self.base_url = base_url_of(sock)
        self.simulator.serving(self.base_url)
        self._server = _Server(uvicorn_config(self.app), self._ready.set)
        self._thread = threading.Thread(
            target=self._run, args=(self._server, sock), name="flux-simulator", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(self._timeout) or self._error is not None:
            self.stop()
            raise RuntimeError(f"the simulator did not start: {self._error!r}")
        return self

    def _run(self, server: _Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported by start()/stop(), never lost in the thread
            self._error = exc
        finally:
            sock.close()
            self._ready.set()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            if self._thread.is_alive():
                raise RuntimeError("the simulator thread did not stop")
        self._thread = None
        self._server = None
        if self.state is not None:
            self.state.close()

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _admin(self, method: str, path: str, payload: object = None) -> dict[str, Any]:
        with httpx.Client(base_url=self.base_url, trust_env=False, timeout=10) as client:
            response = client.request(method, path, json=payload)
            response.raise_for_status()
            data = response.json()
        assert isinstance(data, dict)
        return data

    def stats(self) -> dict[str, Any]:
        """The same dict as ``GET /_sim/stats``."""
        return self._admin("GET", "/_sim/stats")

    def set_faults(self, **changes: object) -> dict[str, Any]:
        """Change faults at runtime (same names as ``Faults``), like ``POST /_sim/faults``."""
        return self._admin("POST", "/_sim/faults", changes)

    def advance(self, seconds: float) -> None:
        """Advance the simulator's ManualClock and run what fell due."""
        if not isinstance(self.simulator.clock, ManualClock):
            raise RuntimeError("this simulator runs on a real clock")
        self._admin("POST", "/_sim/clock", {"advance": seconds})
