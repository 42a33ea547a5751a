"""When a lock entry is taken over the state DB's row (flux_pipeline/run/adopt.py
``behind``, docs/lockfile.md "Adoption")."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from flux_pipeline.run.lock_memo import behind
from flux_pipeline.states import TaskRecord, TaskState

S = TaskState
BASE = TaskRecord(
    key="a" * 64,
    readable_id="shot@n=1#1",
    step="shot",
    parent_key=None,
    parent_output_index=None,
    state=S.PLANNED,
    task_id=None,
    request_json="{}",
    output="shot/n-1-1",
    output_format="png",
    result_urls=(),
    fail_code=None,
    fail_msg=None,
    attempts=1,
    api_create_time=None,
    api_complete_time=None,
    cost_time=None,
    first_submitted_at=None,
    submitted_at=None,
    finished_at=None,
    downloaded_at=None,
    updated_at=0.0,
)


@pytest.mark.parametrize(
    ("db", "lock", "adopted"),
    [
        (None, (S.SUBMITTING, 1), True),  # no row: the lock, ambiguous stays ambiguous
        ((S.PLANNED, 1), (S.SUBMITTED, 1), True),  # the DB never heard of the taskId
        ((S.SUBMITTING, 1), (S.DOWNLOADED, 1), True),  # an older DB
        ((S.FAILED, 1), (S.DOWNLOADED, 1), True),  # another machine has the image
        ((S.PLANNED, 1), (S.SUBMITTING, 1), False),  # since the lock: it never left
        ((S.SUBMITTED, 1), (S.SUBMITTING, 1), False),  # since the lock: its taskId came
        ((S.SUBMITTING, 2), (S.FAILED, 1), False),  # a retry made since the lock
        ((S.DOWNLOADED, 1), (S.EXPIRED, 1), False),  # the files are here
        ((S.DOWNLOADED, 1), (S.DOWNLOADED, 1), False),  # the same: the DB's memo stays
        ((S.DOWNLOADED, 1), (S.SUBMITTED, 2), True),  # regenerated elsewhere since
    ],
)
def test_a_lock_entry_is_adopted_only_where_the_db_is_behind(
    db: tuple[TaskState, int] | None, lock: tuple[TaskState, int], adopted: bool
) -> None:
    row = None if db is None else replace(BASE, state=db[0], attempts=db[1])
    known = replace(BASE, state=lock[0], attempts=lock[1])
    assert behind(row, known) is adopted


def test_a_rerun_rebuilds_no_row_from_the_lock(tmp_path: Path) -> None:
    """``adoption`` with a DB as far as the lock on every one of 3,000 tasks adopts nothing
    and rebuilds no state DB row from the lock on the way (it made one per entry first:
    1.4 MB here; now 0.17 MB), while one entry the DB is behind on is still adopted."""
    from flux_pipeline.plan.expand import load_plan
    from flux_pipeline.report.lockfile import Lock, LockEntry, LockOutput
    from flux_pipeline.run.adopt import adoption

    from .support import roots_manifest, write_manifest

    plan = load_plan(write_manifest(tmp_path, roots_manifest("rerun", 3000)))
    entries = {
        t.key: LockEntry(
            key=t.key,
            readable_id=t.readable_id,
            step=t.step,
            state=S.DOWNLOADED,
            task_id=f"task_{i}",
            outputs=(LockOutput(path=f"o/{i}.png", bytes=9, sha256="b" * 64),),
            result_urls=(f"https://r/{i}.png",),
            urls_expire=2_000_000_000,
        )
        for i, t in enumerate(plan.tasks)
    }
    lock = Lock(path=tmp_path / "rerun.lock.json", manifest=plan.name, entries=entries)
    db = {k: replace(BASE, key=k, state=S.DOWNLOADED) for k in entries}
    tracemalloc.start()
    try:
        found = adoption(plan, db, lock, tmp_path, had_db=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found.source == ""
    assert found.records == {}
    assert peak < 600_000, peak
    first = plan.tasks[0].key
    db[first] = replace(db[first], state=S.SUBMITTED)
    found = adoption(plan, db, lock, tmp_path, had_db=True)
    assert found.source == "lock"
    assert list(found.records) == [first]
    assert found.records[first].state is S.DOWNLOADED


@pytest.mark.anyio
async def test_a_rerun_reads_the_state_db_rows_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adoption and the engine share one read of every row when nothing is adopted (the
    no-op rerun of 100,000 tasks read them twice: once for adoption, once for the engine)."""
    from flux_pipeline.run.store import Store
    from flux_pipeline.simulator import SimConfig, SimulatorThread

    from .support import roots_manifest, run_inprocess, write_manifest

    key = "adopt-key"
    manifest = write_manifest(tmp_path, roots_manifest("once", 4))
    out = tmp_path / "out"
    reads: list[bool] = []
    real = Store.records

    async def counted(
        self: Store, *, with_outputs: bool = True, keys: object = None
    ) -> dict[str, TaskRecord]:
        if keys is None:
            reads.append(with_outputs)
        return await real(self, with_outputs=with_outputs, keys=keys)  # type: ignore[arg-type]

    with SimulatorThread(SimConfig(api_keys=(key,), task_seconds=0.05, task_spread=0.0)) as sim:
        first = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=key)
        assert first.outcome.exit_code == 0
        monkeypatch.setattr(Store, "records", counted)
        again = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=key)
    assert again.outcome.exit_code == 0
    assert again.outcome.created == 0
    assert reads == [True]
