"""The report a run writes must say what its state DB says.

``runner.execute`` ends with ``store.end_run`` (which calls ``Store.flush_and_wait``) and then
reads ``store.records()`` to write report.json. If ``flush_and_wait`` returns while the writer
is still committing the batch it took, the report is built from stale rows: a task downloaded
at the very end shows as ``succeeded`` with no outputs although the DB (once closed) says
``downloaded``. Seen under CPU load in the credits test (report: 4 downloaded + 1 succeeded,
DB: 5 downloaded).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio.lowlevel
import pytest

from flux_pipeline.run.store import open_store

INSERT_RUN = (
    "INSERT INTO runs (manifest, manifest_sha256, settings_json, planned, started_at)"
    " VALUES (?, ?, ?, ?, ?)"
)


def committed_runs(path: Path) -> int:
    """What another connection sees: only committed rows."""
    db = sqlite3.connect(path, timeout=10)
    try:
        count: int = db.execute("SELECT count(*) FROM runs").fetchone()[0]
        return count
    finally:
        db.close()


@pytest.mark.anyio
async def test_flush_and_wait_waits_for_the_batch_the_writer_is_committing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    writes = 5000
    async with open_store(path) as store:
        for i in range(writes):
            store.enqueue(INSERT_RUN, (f"m{i}", "0" * 64, "{}", 0, 0.0))
        await anyio.lowlevel.checkpoint()  # the writer wakes and takes the queue as one batch
        await store.flush_and_wait()  # "Wait until everything queued so far is committed."
        seen = committed_runs(path)
    assert seen == writes


@pytest.mark.anyio
async def test_flush_and_wait_commits_what_is_queued(tmp_path: Path) -> None:
    """The part that works: writes still queued are committed by ``flush_and_wait``."""
    path = tmp_path / "state.sqlite3"
    async with open_store(path) as store:
        for i in range(50):
            store.enqueue(INSERT_RUN, (f"m{i}", "0" * 64, "{}", 0, 0.0))
        await store.flush_and_wait()
        seen = committed_runs(path)
    assert seen == 50
