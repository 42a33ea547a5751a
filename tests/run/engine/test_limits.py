"""--max-new-tasks and --deadline stop a run resumably (exit 3); a rerun finishes the batch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flux_pipeline.run.runner import Endpoint, RunOptions, execute
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.run.store import read_records
from flux_pipeline.simulator import SimConfig, SimulatorThread

pytestmark = pytest.mark.anyio

MANIFEST = """\
version: 1
name: limits
steps:
  - id: gen
    matrix:
      n: [a, b, c, d, e, f]
    prompt: "picture {{ n }}"
"""


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig(task_seconds=0.2, task_spread=0.02)) as server:
        yield server


def options(tmp_path: Path, **kw: object) -> RunOptions:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    return RunOptions(
        manifest=manifest,
        out_dir=tmp_path / "out",
        handle_signals=False,
        timing=TimingConfig(first_poll=0.05),
        **kw,  # type: ignore[arg-type]
    )


async def test_max_new_tasks_creates_that_many_then_stops_resumably(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    endpoint = Endpoint(base_url=sim.base_url, api_key="sim-key")
    first = await execute(options(tmp_path, max_new_tasks=2), endpoint=endpoint)
    assert first.outcome.exit_code == 3
    assert first.outcome.created == 2
    assert "--max-new-tasks 2" in (first.outcome.stop_reason or "")
    records = await read_records(first.state_path)
    assert sorted(r.state.value for r in records.values()) == ["downloaded", "downloaded"]
    second = await execute(options(tmp_path), endpoint=endpoint)
    assert second.outcome.exit_code == 0
    assert second.outcome.created == 4  # only the ones never created


async def test_deadline_stops_with_every_task_id_kept(sim: SimulatorThread, tmp_path: Path) -> None:
    endpoint = Endpoint(base_url=sim.base_url, api_key="sim-key")
    # 0.1 s: creates go out at once, tasks take 0.2 s: the deadline falls mid-flight
    first = await execute(options(tmp_path, deadline=0.1), endpoint=endpoint)
    assert first.outcome.exit_code == 3
    assert "deadline" in (first.outcome.stop_reason or "")
    records = await read_records(first.state_path)
    assert records  # something was created before the deadline
    assert all(r.task_id for r in records.values())  # nothing left ambiguous
    second = await execute(options(tmp_path), endpoint=endpoint)
    assert second.outcome.exit_code == 0
    assert second.outcome.created == 6 - len(records)  # nothing created twice
