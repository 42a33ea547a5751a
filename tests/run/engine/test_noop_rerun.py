"""A rerun that changes nothing keeps the report files; any change rewrites them."""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_pipeline.run.runner import Endpoint, RunOptions, execute
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.simulator import SimConfig, SimulatorThread

pytestmark = pytest.mark.anyio

MANIFEST = """\
version: 1
name: noop
steps:
  - id: gen
    matrix:
      n: [a, b]
    prompt: "picture {{ n }}"
"""


async def test_reports_are_kept_when_nothing_changed_and_rewritten_otherwise(
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    options = RunOptions(
        manifest=manifest, out_dir=out, handle_signals=False, timing=TimingConfig(first_poll=0.05)
    )
    report = out / "report.json"
    with SimulatorThread(SimConfig(task_seconds=0.1, task_spread=0.01)) as sim:
        endpoint = Endpoint(base_url=sim.base_url, api_key="sim-key")
        first = await execute(options, endpoint=endpoint)
        assert first.outcome.exit_code == 0
        written = report.read_bytes()
        stamp = report.stat().st_mtime_ns

        again = await execute(options, endpoint=endpoint)
        assert again.outcome.exit_code == 0
        assert again.outcome.created == 0
        assert report.stat().st_mtime_ns == stamp  # kept: nothing changed
        assert report.read_bytes() == written

        (out / "junit.xml").unlink()  # a missing report file is written again
        await execute(options, endpoint=endpoint)
        assert (out / "junit.xml").exists()
        stamp = report.stat().st_mtime_ns

        (out / "gen" / "n-a-1.jpg").unlink()  # a change: re-downloaded, report rewritten
        third = await execute(options, endpoint=endpoint)
        assert third.outcome.exit_code == 0
        assert third.outcome.created == 0
        assert report.stat().st_mtime_ns != stamp
