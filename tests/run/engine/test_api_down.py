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
