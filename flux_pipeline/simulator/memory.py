"""What a restarted simulator remembers, and how it is put back (docs/simulator.md).

``restore`` rebuilds the tasks, credits and counters of a saved state; ``serving`` records the
port served and moves the result URLs of earlier tasks to it; ``meta`` is what a save
records beside the tasks; ``old_result`` judges a reference URL that points at one of this
simulator's own results on a port it served before (the saved port was taken at restart): such
an image is ours, so it is judged from the task record, never fetched from whoever holds that
port now.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from flux_pipeline.simulator.images import FORMAT_OF_EXTENSION
from flux_pipeline.simulator.references import is_loopback
from flux_pipeline.simulator.stats import Stats

if TYPE_CHECKING:
    from flux_pipeline.simulator.core import Simulator
    from flux_pipeline.simulator.persist import Saved

_RESULT_PATH = re.compile(r"/results/([^/]+)/(\d+)\.([a-z]+)")


def restore(sim: Simulator, saved: Saved) -> None:
    """Put a saved state back; tasks whose time passed while stopped finish at their time."""
    sim.ports.update(saved.ports)
    for task in saved.tasks:
        sim.store.restore(task)
        sim.inputs.add(task.digest)
        if task.checks_pending:  # a check cut short by the stop: made again (inline images
            task.checks_pending = 0  # passed at create; only their markers are kept)
            sim.judge_references(
                task, tuple(u for u in task.request.image_urls if u[:5].lower() != "data:")
            )
    sim.stats = Stats.from_dict(saved.stats)
    sim.store.max_unfinished = max(saved.max_unfinished, sim.store.max_unfinished)
    sim.credits.spent = saved.spent
    if sim.credits.balance is not None:
        sim.credits.balance = max(0.0, sim.credits.balance - saved.spent)
    sim.store.reseed_ids(f"{sim.config.seed}:{saved.now!r}:{len(saved.tasks)}")


def serving(sim: Simulator, base_url: str) -> None:
    """The server's address: its port is recorded, and the result URLs of tasks made on an
    earlier port move to it (their old URLs stay valid as references: ``old_result``)."""
    port = httpx.URL(base_url).port
    if port is None:
        return
    sim.port = port
    sim.ports.add(port)
    base, earlier = base_url.rstrip("/"), dict[str, bool]()
    for task in sim.store.tasks.values():
        if task.base_url != base:
            moves = earlier.get(task.base_url)
            if moves is None:
                moves = earlier[task.base_url] = httpx.URL(task.base_url).port in sim.ports
            if moves:
                task.base_url = base


def meta(sim: Simulator) -> dict[str, Any]:
    now = sim.clock()
    return {
        "port": sim.port,
        "ports": sorted(sim.ports),
        "api_keys": list(sim.config.api_keys),
        "now": now if math.isfinite(now) else 0.0,
        "spent": sim.credits.spent,
        "max_unfinished": sim.store.max_unfinished,
        "stats": sim.stats.as_dict(),
    }


def old_result(sim: Simulator, url: str) -> str | bool | None:
    """False when ``url`` is not one of our results on an earlier port; else the problem a
    fetch would have found (None: the image is there)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return False
    if port is None or port == sim.port or port not in sim.ports:
        return False
    if not is_loopback(parts.hostname):
        return False
    match = _RESULT_PATH.fullmatch(parts.path)
    if match is None:
        return False
    task = sim.store.tasks.get(match.group(1))
    fmt = FORMAT_OF_EXTENSION.get(match.group(3))
    if task is None or fmt != task.request.output_format:
        return f"{url} answered HTTP 404"
    if not sim.result_available(task, int(match.group(2))):
        return f"{url} answered HTTP 404"
    return None
