from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from flux_pipeline.errors import StateError
from flux_pipeline.plan.tasks import TaskSpec, canonical_json
from flux_pipeline.run.store import MIGRATIONS, Store, migrate, open_store, read_records
from flux_pipeline.states import OutputRecord, TaskState

pytestmark = pytest.mark.anyio


def spec(key: str = "k1") -> TaskSpec:
    return TaskSpec(
        key=key,
        readable_id=f"hero#{key}",
        step="hero",
        parent_key=None,
        parent_output_index=None,
        repeat_index=1,
        request_json=canonical_json({"input": {"prompt": "p"}}),
        output=f"hero/{key}",
        output_format="png",
    )


async def test_transitions_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    async with open_store(path) as store:
        await store.mark_submitting(spec())
        store.mark_submitted("k1", "task_1")
        store.mark_succeeded("k1", ["http://x/1.png"], create_time=1, complete_time=3, cost_time=2)
        store.mark_downloaded(
            "k1",
            [OutputRecord(index=0, path="hero/k1.png", url="http://x/1.png", bytes=5, sha256="ab")],
        )
        await store.flush_and_wait()
        record = (await store.records())["k1"]
        assert record.state is TaskState.DOWNLOADED
        assert record.task_id == "task_1"
        assert record.result_urls == ("http://x/1.png",)
        assert record.cost_time == 2
        assert record.attempts == 1
        assert [o.path for o in record.outputs] == ["hero/k1.png"]
    # the writer flushed and closed: a fresh reader sees the same
    again = await read_records(path)
    assert again["k1"].state is TaskState.DOWNLOADED


async def test_resubmission_counts_attempts_and_unsent_undoes(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "s.sqlite3") as store:
        await store.mark_submitting(spec())
        store.mark_failed("k1", "CONTENT_VIOLATION", "no")
        await store.flush()
        await store.mark_submitting(spec())  # --retry-failed
        record = (await store.records())["k1"]
        assert record.state is TaskState.SUBMITTING
        assert record.attempts == 2
        assert record.fail_code is None
        store.mark_unsent("k1")  # e.g. 429 on the create: nothing was created
        await store.flush()
        record = (await store.records())["k1"]
        assert record.state is TaskState.PLANNED
        assert record.attempts == 1


async def test_submitting_is_durable_before_returning(tmp_path: Path) -> None:
    """mark_submitting must be committed when it returns: another connection sees it."""
    path = tmp_path / "s.sqlite3"
    async with open_store(path) as store:
        await store.mark_submitting(spec("a"))
        with sqlite3.connect(path) as other:
            rows = other.execute("SELECT state FROM tasks WHERE key='a'").fetchall()
        assert rows == [("submitting",)]


async def test_group_commit_batches_many_writes(tmp_path: Path) -> None:
    async with open_store(tmp_path / "s.sqlite3") as store:
        async with anyio.create_task_group() as writers:
            for i in range(200):
                writers.start_soon(store.mark_submitting, spec(f"k{i}"))
        assert store.writes == 200
        assert store.batches < 50  # concurrent writers share commits
        assert len(await store.records()) == 200


def test_migrations_are_recorded_and_newer_db_refused(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "m.sqlite3", isolation_level=None)
    assert migrate(db) == [name for name, _ in MIGRATIONS]
    assert migrate(db) == []
    db.execute("INSERT INTO _migrations VALUES ('m999_future', 0)")
    with pytest.raises(StateError, match="newer flux-pipeline"):
        migrate(db)
    db.close()


async def test_garbage_file_is_a_state_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="not a usable state DB"):
        await Store.open(path)
