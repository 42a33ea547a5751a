"""The Flux Kontext API simulator. Imports nothing from the rest of flux_pipeline.

An independent implementation of the upstream doc page (``docs/api-contract.md`` restates it):
the two endpoints, auth, validation, limits, credits, task lifecycle, result images, callbacks
and fault injection.

    from flux_pipeline.simulator import SimConfig, Faults, create_app, ManualClock, SimulatorThread

In-process (``httpx.ASGITransport`` does not run lifespans)::

    app = create_app(SimConfig(), clock=ManualClock())
    async with lifespan_running(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client: ...

Over real HTTP::

    with SimulatorThread(SimConfig(), port=0) as sim:
        sim.base_url, sim.stats()
"""

from flux_pipeline.simulator.app import create_app, lifespan_running, simulator_of
from flux_pipeline.simulator.clock import ManualClock
from flux_pipeline.simulator.config import Faults, SimConfig
from flux_pipeline.simulator.core import Simulator
from flux_pipeline.simulator.server import SimulatorThread

__all__ = [
    "Faults",
    "ManualClock",
    "SimConfig",
    "Simulator",
    "SimulatorThread",
    "create_app",
    "lifespan_running",
    "simulator_of",
]
