"""The state writer never stops: values made storable, a failing batch retried statement by
statement, each write not stored recorded with its task, a taskId not stored or a full disk
reported as fatal (the run stops submitting), taskIds committed ahead of other work."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from flux_pipeline.errors import StateError
from flux_pipeline.plan.tasks import TaskSpec, canonical_json
from flux_pipeline.run.store import Store, open_store, read_records
from flux_pipeline.run.store_schema import SQL_OUTPUT, rollback
from flux_pipeline.run.store_writer import (
    MAX_BATCH,
    Write,
    storable,
    storable_params,
    take_batch,
)
from flux_pipeline.states import OutputRecord, TaskState

pytestmark = pytest.mark.anyio


def spec(key: str) -> TaskSpec:
    return TaskSpec(
        key=key,
        readable_id=f"hero#{key}",
        step="hero",
        parent_key=None,
        parent_output_index=None,
        repeat_index=1,
        request_json=canonical_json({"input": {"prompt": key}}),
        output=f"hero/{key}",
        output_format="png",
    )


async def submitted(store: Store, *keys: str) -> None:
    for key in keys:
        await store.mark_submitting(spec(key))
        store.mark_submitted(key, f"id-{key}")


def poison(path: Path, task_id: str) -> None:
    """Make the taskId write ``task_id`` fail in SQLite (as a broken disk page would)."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TRIGGER poison BEFORE UPDATE OF task_id ON tasks"
        f" WHEN NEW.task_id = '{task_id}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
    )
    db.commit()
    db.close()


def test_storable_values() -> None:
    assert storable(2**63) is None
    assert storable(-(2**63) - 1) is None
    assert storable(2**63 - 1) == 2**63 - 1
    assert storable(True) is True
    assert storable("caf\ud800e") == "caf?e"
    assert storable("ok") == "ok"
    fine = ("k", 1, 2.5, None)
    assert storable_params(fine) is fine  # nothing to change: the same tuple, no copy
    assert storable_params(("é", 1)) == ("é", 1)
    assert storable_params(("k", 2**64, "x\udc80")) == ("k", None, "x?")


async def test_a_cost_time_outside_64_bits_is_stored_as_unknown_and_loses_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite3"
    async with open_store(path) as store:
        await submitted(store, "a", "b", "c")
        for key, cost in (("a", 5), ("b", 2**70), ("c", -(2**80))):  # one batch, three tasks
            store.mark_succeeded(
                key, [f"http://x/{key}"], create_time=1, complete_time=2, cost_time=cost
            )
        store.mark_failed("c", "X", "bad \ud800 text", cost_time=2**64)
        await store.flush_and_wait()
        assert store.failures == []
    records = await read_records(path)
    assert {k: (r.state, r.task_id, r.cost_time) for k, r in records.items()} == {
        "a": (TaskState.SUCCEEDED, "id-a", 5),
        "b": (TaskState.SUCCEEDED, "id-b", None),
        "c": (TaskState.FAILED, "id-c", None),
    }


async def test_a_failing_statement_is_recorded_and_the_rest_of_its_batch_stored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite3"
    async with open_store(path) as store:
        await submitted(store, "a", "b")
        for key in ("a", "b"):
            store.mark_succeeded(key, ["http://x/1"], create_time=1, complete_time=2, cost_time=1)
        # a's output has a size SQLite cannot store (NULL in a NOT NULL column): a's output and
        # its "downloaded" are not stored, b's are, in the same batch
        huge = OutputRecord(index=0, path="hero/a.png", url="http://x/1", bytes=2**70, sha256="0")
        fine = OutputRecord(index=0, path="hero/b.png", url="http://x/1", bytes=3, sha256="0")
        store.mark_downloaded("a", [huge])
        store.mark_downloaded("b", [fine])
        await store.flush_and_wait()
        assert len(store.failures) == 2
        assert "output 0 of task a" in store.failures[0]
        assert "NOT NULL" in store.failures[0]
        assert "state downloaded of task a" in store.failures[1]
        assert store.fatal is None  # not a taskId: the run goes on
        store.mark_expired("a", "later writes of a are not applied out of order")
        await submitted(store, "c")  # the writer goes on
        await store.flush_and_wait()
    records = await read_records(path)
    assert records["a"].state is TaskState.SUCCEEDED  # a rerun downloads it again
    assert records["b"].state is TaskState.DOWNLOADED
    assert records["c"].state is TaskState.SUBMITTED


async def test_a_taskid_that_cannot_be_stored_is_fatal_and_named(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    told: list[StateError] = []
    async with open_store(path) as store:
        store.watch(told.append)
        await store.mark_submitting(spec("a"))
        poison(path, "id-a")
        store.mark_submitted("a", "id-a")
        await submitted(store, "b")  # queued after it, stored
        await store.flush_and_wait()
        assert len(told) == 1
        assert "taskId id-a of task a" in str(told[0])
        assert "poisoned" in str(told[0])
        with pytest.raises(StateError, match="id-a"):  # nothing more is created
            await store.mark_submitting(spec("c"))
    records = await read_records(path)
    assert records["b"].task_id == "id-b"
    assert "c" not in records


async def test_a_full_disk_stops_submitting_with_the_real_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    told: list[StateError] = []
    async with open_store(path) as store:
        store.watch(told.append)
        await submitted(store, "a")
        await store.flush_and_wait()
        db = store._w.db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        big = [f"hero/{i}.png" * 50 for i in range(400)]
        for i, name in enumerate(big):
            store.enqueue(
                SQL_OUTPUT, ("a", i, name, name, 1, "0", None), key="a", what=f"output {i}"
            )
        await store.flush_and_wait()  # returns: the writer did not stop
        assert len(told) == 1
        assert "disk is full" in str(told[0])
        assert "cannot rollback" not in str(told[0])
        assert all("cannot rollback" not in line for line in store.failures)
        with pytest.raises(StateError, match="disk is full"):
            await store.mark_submitting(spec("b"))
        db.execute("PRAGMA max_page_count = 1073741823")


def test_rollback_without_a_transaction_keeps_quiet() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    rollback(db)  # SQLite already rolled back: no "cannot rollback" error
    db.close()


async def test_a_submitting_that_cannot_be_stored_raises_at_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    async with open_store(path) as store:
        db = sqlite3.connect(path)
        db.execute(
            "CREATE TRIGGER no_insert BEFORE INSERT ON tasks BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
        db.commit()
        db.close()
        with pytest.raises(StateError, match="state submitting of task a"):
            await store.mark_submitting(spec("a"))


def test_critical_writes_jump_ahead_of_other_tasks_only() -> None:
    def w(key: str, critical: bool = False) -> Write:
        return Write("sql", (), key=key, critical=critical)

    queue = [w("x") for _ in range(3)] + [w("y"), w("y", True), w("z", True)]
    batch, rest = take_batch(queue, limit=2)
    # z's taskId comes along; y's waits behind y's own earlier write, in order
    assert [(x.key, x.critical) for x in batch] == [("x", False), ("x", False), ("z", True)]
    assert [(x.key, x.critical) for x in rest] == [("x", False), ("y", False), ("y", True)]


async def test_a_taskid_is_committed_in_the_next_batch_not_behind_unrelated_work(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite3"
    store = await Store.open(path)  # no writer task: batches are committed one at a time here
    try:
        await store.mark_submitting(spec("a"))
        await store.mark_submitting(spec("b"))
        for i in range(3 * MAX_BATCH):
            store.enqueue(SQL_OUTPUT, ("a", i, f"p{i}", "u", 1, "0", None), key="a", what="output")
        store.mark_submitted("b", "id-b")  # queued last
        await store._w.commit_next()
        db = sqlite3.connect(path)
        task_id = db.execute("SELECT task_id FROM tasks WHERE key = 'b'").fetchone()[0]
        outputs = db.execute("SELECT count(*) FROM outputs").fetchone()[0]
        db.close()
        assert task_id == "id-b"  # in the first batch
        assert outputs == MAX_BATCH  # the unrelated work waits for later batches
        await store.flush_and_wait()  # and every write is committed in the end
        records = await store.records()
        assert len(records["a"].outputs) == 3 * MAX_BATCH
    finally:
        await store.aclose()


async def test_flush_and_wait_waits_for_writes_a_taskid_jumped_ahead_of(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    async with open_store(path) as store:
        await store.mark_submitting(spec("b"))
        for i in range(2 * MAX_BATCH):
            store.enqueue(SQL_OUTPUT, ("a", i, f"p{i}", "u", 1, "0", None), key="a", what="output")
        store.mark_submitted("b", "id-b")  # the last write queued, committed first
        await anyio.lowlevel.checkpoint()
        await store.flush_and_wait()
        db = sqlite3.connect(path)
        outputs = db.execute("SELECT count(*) FROM outputs").fetchone()[0]
        db.close()
        assert outputs == 2 * MAX_BATCH


async def test_flush_and_wait_ends_while_writes_keep_coming(tmp_path: Path) -> None:
    """It waits for what was queued when it was called, not for an empty queue: during a run
    the queue is seldom empty, and the lock keeper's wait (run/lock_keeper.py) lasted until
    the run ended (48 s of a 10,000-task run), so its keys were lost at the stop."""
    path = tmp_path / "s.sqlite3"
    stop = anyio.Event()

    async def keep_writing(store: Store) -> None:
        i = 0
        while not stop.is_set():
            store.enqueue(SQL_OUTPUT, ("w", i, f"p{i}", "u", 1, "0", None), key="w", what="out")
            i += 1
            await anyio.lowlevel.checkpoint()

    async with open_store(path) as store, anyio.create_task_group() as tg:
        await store.mark_submitting(spec("a"))
        store.mark_submitted("a", "id-a")
        tg.start_soon(keep_writing, store)
        await anyio.lowlevel.checkpoint()
        flushed = anyio.Event()

        async def flush() -> None:
            await store.flush_and_wait()
            flushed.set()

        tg.start_soon(flush)
        with anyio.move_on_after(10):  # bounds the old behaviour: it waited for the writer
            await flushed.wait()
        in_time = flushed.is_set()
        still_writing = bool(store._w.queue or store._w.committing)
        stop.set()
        assert in_time
        assert still_writing  # the wait ended without draining the queue
        records = await store.records(keys=["a"])
        assert records["a"].task_id == "id-a"  # what was queued before the call is committed


async def test_a_lock_held_past_the_busy_timeout_fails_the_batch_once_not_per_statement(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite3"
    told: list[StateError] = []
    async with open_store(path) as store:
        store.watch(told.append)
        await store.mark_submitting(spec("a"))
        store._w.db.execute("PRAGMA busy_timeout = 50")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            with anyio.fail_after(3):  # 300 statements x 50 ms would be 15 s
                for i in range(300):
                    store.enqueue(
                        SQL_OUTPUT, ("a", i, f"p{i}", "u", 1, "0", None), key="a", what="x"
                    )
                store.mark_submitted("a", "id-a")
                await store.flush_and_wait()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert len(store.failures) == 100  # the first 100 lines kept
        assert store._w.failed == 301  # all counted
        assert len(told) == 1  # the taskId was among them: fatal
        assert "taskId id-a" in str(told[0])
        assert "locked" in str(told[0])
        with pytest.raises(StateError, match="locked"):  # the run must stop submitting
            await store.mark_submitting(spec("b"))
    records = await read_records(path)
    assert records["a"].task_id is None
