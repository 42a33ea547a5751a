"""Stop signals for the whole of a run: planning, running and reporting (docs/exit-codes.md).

``Stops.watch`` runs in a task group around everything ``runner.execute`` does once the event
loop runs. A signal while the engine runs stops it (``Engine.request_stop``: submissions stop,
creates in flight get their grace, state is flushed); one before the engine exists is handed
to it as soon as it does (it starts stopped: nothing is created); one after the engine ended
(while the reports are written) lets the reports finish, and the run exits 3. Outside the
event loop (the manifest being read, the simulator starting) SIGTERM and SIGHUP raise
``KeyboardInterrupt`` like SIGINT (``interrupts_raise``): the command exits 3, never 143.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Protocol

import anyio
from anyio.abc import TaskStatus

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stoppable(Protocol):
    def request_stop(self, reason: str) -> None: ...


class Stops:
    """What the run was told by signals, and who to tell."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self._echo = echo
        self.reason: str | None = None  # the first signal's, whenever it came
        self.late = False  # a signal came after the engine ended (while reporting)
        self._target: Stoppable | None = None
        self._ended = False

    def attach(self, engine: Stoppable) -> None:
        self._target = engine
        if self.reason is not None:
            engine.request_stop(self.reason)

    def detach(self) -> None:
        """The engine has ended: later signals only change the exit code."""
        self._target = None
        self._ended = True

    def received(self, name: str) -> None:
        self._echo(f"flux-pipeline: {name} received: stopping, state is kept (resume by rerunning)")
        reason = f"signal {name}"
        if self.reason is None:
            self.reason = reason
        if self._ended:
            self.late = True
        elif self._target is not None:
            self._target.request_stop(reason)

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
                task_status.started()
                async for signum in signals:
                    self.received(signal.Signals(signum).name)
        finally:
            # closing the receiver put SIGTERM and SIGHUP back to their default (exit 143)
            if _raising:
                _install()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


_raising = False  # inside ``interrupts_raise``


def _install() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)


@contextlib.contextmanager
def interrupts_raise() -> Iterator[Callable[[], None]]:
    """SIGTERM and SIGHUP raise ``KeyboardInterrupt`` (like SIGINT) for the block; yields a
    function that installs the handlers again (the event loop resets them to the default
    when its signal receiver closes)."""
    global _raising
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None  # only the main thread may set handlers (in-process test calls)
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    _install()
    _raising = True
    try:
        yield _install
    finally:
        _raising = False
        for sig, handler in previous.items():
            signal.signal(sig, handler)
