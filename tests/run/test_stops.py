"""``run/stops.py``: a signal in any phase of a run reaches the engine, or the exit code."""

from __future__ import annotations

from flux_pipeline.run.stops import Stops


class Engine:
    def __init__(self) -> None:
        self.stops: list[str] = []

    def request_stop(self, reason: str) -> None:
        self.stops.append(reason)


def test_a_signal_before_the_engine_exists_stops_it_as_it_starts() -> None:
    lines: list[str] = []
    stops = Stops(lines.append)
    stops.received("SIGTERM")
    engine = Engine()
    stops.attach(engine)
    assert engine.stops == ["signal SIGTERM"]
    assert not stops.late
    assert lines == [
        "flux-pipeline: SIGTERM received: stopping, state is kept (resume by rerunning)"
    ]


def test_a_signal_while_running_stops_the_engine_at_once() -> None:
    stops = Stops(lambda line: None)
    engine = Engine()
    stops.attach(engine)
    stops.received("SIGINT")
    assert engine.stops == ["signal SIGINT"]
    assert stops.reason == "signal SIGINT"


def test_a_signal_after_the_engine_ended_only_marks_the_run_late() -> None:
    stops = Stops(lambda line: None)
    engine = Engine()
    stops.attach(engine)
    stops.detach()
    stops.received("SIGHUP")
    assert engine.stops == []
    assert stops.late


def test_sigterm_outside_the_event_loop_raises_like_sigint() -> None:
    """While the manifest is read (no event loop yet) SIGTERM is a ``KeyboardInterrupt``
    (the CLI exits 3, never 143); the handlers are put back after the block."""
    import os
    import signal
    import threading

    import pytest

    from flux_pipeline.run.stops import interrupts_raise

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be set in the main thread")
    before = signal.getsignal(signal.SIGTERM)
    reached: list[int] = []

    def terminated() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1_000_000):  # the handler runs between two bytecodes, at once
            reached.append(1)

    with interrupts_raise(), pytest.raises(KeyboardInterrupt):
        terminated()
    assert len(reached) < 1_000_000
    assert signal.getsignal(signal.SIGTERM) is before
