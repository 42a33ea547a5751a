"""An output path that a link in the output directory leads elsewhere fails its task at write
time (``OUTPUT_OUTSIDE``, run/downloader.py); nothing is written outside the output directory.
(The run refuses such paths before anything is sent too: tests/run/test_output_paths.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_pipeline.outcome import Buckets
from flux_pipeline.run.downloads import OUTPUT_OUTSIDE
from flux_pipeline.run.memory_store import MemoryStore
from flux_pipeline.states import TaskState

from .test_engine_memory import FakeApi, manifest, run

pytestmark = pytest.mark.anyio


async def test_a_link_in_the_output_directory_fails_the_task_and_writes_nothing_outside(
    tmp_path: Path,
) -> None:
    plan = manifest(tmp_path, ["a", "b"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "gen").symlink_to(elsewhere)  # appears after planning, before writing
    api, store = FakeApi(), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    assert outcome.buckets == Buckets(failed=2)
    assert outcome.exit_code == 1
    assert list(elsewhere.iterdir()) == []
    for spec in plan.tasks:
        row = store.rows[spec.key]
        assert (row.state, row.fail_code) == (TaskState.FAILED, OUTPUT_OUTSIDE)
        assert "leads outside the output directory" in (row.fail_msg or "")
        assert "nothing was written" in (row.fail_msg or "")
