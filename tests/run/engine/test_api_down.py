from __future__ import annotations

import socket
from pathlib import Path

import pytest

from flux_pipeline.run.client import RetryPolicy
from flux_pipeline.run.runner import Endpoint, RunOptions, execute
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.run.store import read_records

pytestmark = pytest.mark.anyio

MANIFEST = """\
version: 1
name: down
steps:
  - id: gen
    matrix:
      n: [a, b, c]
    prompt: "picture {{ n }}"
"""


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_api_stops_resumably_without_ambiguous_tasks(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    options = RunOptions(
        manifest=manifest,
        out_dir=tmp_path / "out",
        handle_signals=False,
        api_down_after=0.5,
        retry=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02),
        timing=TimingConfig(first_poll=0.05),
    )
    endpoint = Endpoint(base_url=f"http://127.0.0.1:{closed_port()}", api_key="k")
    result = await execute(options, endpoint=endpoint)
    outcome = result.outcome
    assert outcome.exit_code == 3
    assert outcome.stop_reason is not None
    assert "the API failed every call" in outcome.stop_reason
    assert outcome.created == 0  # connection refused: nothing was sent, nothing billed
    records = await read_records(result.state_path)
    # never-sent creates go back to planned: nothing is left ambiguous
    assert {r.state.value for r in records.values()} <= {"planned"}
    assert "down" in (tmp_path / "out" / "report.md").read_text()


async def test_results_that_cannot_be_fetched_stop_the_run_instead_of_trying_each_for_seconds(
    tmp_path: Path,
) -> None:
    """Every result download fails (each one cut short): every task holds a download slot
    through its 5 attempts, about 8 s, so 400 tasks took about 3 minutes and 2,000 result
    requests before the run ended. Now, once no download has succeeded for ``api_down_after``
    since the first failing one began, the run stops, resumable: the tasks stay succeeded at
    the API and a rerun downloads them; nothing is created again."""
    from flux_pipeline.simulator.config import Faults

    from ..support import admin_of, quick_sim

    tasks = 400
    manifest = tmp_path / "m.yaml"
    numbers = ", ".join(str(i) for i in range(tasks))
    manifest.write_text(MANIFEST.replace("[a, b, c]", f"[{numbers}]"))
    with quick_sim("k", faults=Faults(truncate_rate=1.0)) as sim:
        options = RunOptions(
            manifest=manifest,
            out_dir=tmp_path / "out",
            handle_signals=False,
            api_down_after=1.0,
            timing=TimingConfig(first_poll=0.05, max_interval=0.2),
            no_lock=True,
        )
        result = await execute(options, endpoint=Endpoint(base_url=sim.base_url, api_key="k"))
        stats = admin_of(sim).stats()
    outcome = result.outcome
    assert outcome.exit_code == 3, outcome
    assert outcome.stop_reason is not None
    assert "every download failed for" in outcome.stop_reason
    fetched = stats["requests_by_endpoint"].get("results", 0)
    assert fetched < tasks, stats  # a few slots' attempts, not 5 for every task
    records = await read_records(result.state_path)
    assert len(records) == tasks
    assert not any(r.state.value == "downloaded" for r in records.values())
    assert stats["creates"] <= tasks  # each created once at most, nothing twice
