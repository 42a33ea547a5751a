"""The built-in simulator behind ``run --simulate`` (docs/simulator.md): it remembers its
tasks, credits and port in a state file beside the state DB, so a rerun meets the same API."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio

from flux_pipeline.errors import UsageError
from flux_pipeline.run.checks import Endpoint


@contextlib.asynccontextmanager
async def simulated_endpoint(
    task_seconds: float, state_file: Path, echo: Callable[[str], None]
) -> AsyncIterator[Endpoint]:
    """The built-in simulator, remembering its tasks in ``state_file`` from one run to the
    next (docs/simulator.md): same key, same port when free, same tasks and images."""
    from flux_pipeline.simulator import SimConfig, SimulatorThread
    from flux_pipeline.simulator.persist import StateError, StateFile

    try:
        state = StateFile.open(state_file, afresh=True)
    except StateError as exc:
        raise UsageError(f"the simulator state cannot be kept: {exc}") from None
    if state.problem is not None:
        echo(
            f"flux-pipeline: malformed simulator state ({state.problem}), set aside as "
            f"{state_file.name}.bad: the simulator starts afresh"
        )
    saved_keys = state.saved.api_keys if state.saved else ()
    key = saved_keys[0] if saved_keys else "sim-" + secrets.token_hex(8)
    config = SimConfig(api_keys=(key,), task_seconds=task_seconds, task_spread=task_seconds / 4)
    sim = SimulatorThread(config, host="127.0.0.1", port=0, state=state)
    await anyio.to_thread.run_sync(sim.start)
    try:
        if sim.moved_from is not None:
            echo(
                f"flux-pipeline: the simulator's earlier port {sim.moved_from} is taken: "
                f"serving on {sim.port}; its earlier result URLs still work as references, "
                "but downloads from them fail until that port is free"
            )
        yield Endpoint(base_url=sim.base_url, api_key=key)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(sim.stop)
        if state.failure is not None:
            echo(f"flux-pipeline: the simulator state is out of date: {state.failure}")


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen must be HOST:PORT, got {listen!r}")
    return host, int(port)
