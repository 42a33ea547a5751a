"""``LockKeeper`` (flux_pipeline/run/lock_keeper.py): during a run the lock is rewritten every
interval from the state DB, so a job cancelled without a clean stop leaves a current one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tracemalloc
from functools import partial
from pathlib import Path

import anyio
import pytest

from flux_pipeline.plan.expand import load_plan
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.lock_keeper import LOCK_INTERVAL, LockKeeper
from flux_pipeline.run.store import Store
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

from .support import await_for, roots_manifest, write_manifest


@pytest.mark.anyio
async def test_the_lock_follows_the_state_db_every_interval(tmp_path: Path) -> None:
    assert LOCK_INTERVAL == 30.0
    plan = load_plan(write_manifest(tmp_path, roots_manifest("keeper", 2)))
    lock = tmp_path / "keeper.lock.json"
    keeper = LockKeeper(lock, plan, None, interval=0.05)
    store = await Store.open(tmp_path / "state.sqlite3")
    first, second = plan.tasks

    async def lock_says(ids: set[str | None]) -> bool:
        if not lock.exists():
            return False
        entries = json.loads(lock.read_text(encoding="utf-8"))["tasks"].values()
        return {e["taskId"] for e in entries} == ids

    async with anyio.create_task_group() as tg:
        store.start(tg)
        tg.start_soon(keeper.every, store)
        await store.mark_submitting(first)
        store.mark_submitted(first.key, "task_one")
        await await_for(lambda: lock_says({"task_one"}), within=10, what="the first taskId")
        await store.mark_submitting(second)
        await await_for(lambda: lock_says({"task_one", None}), within=10, what="an ambiguous")
        keeper.stop()
        await store.aclose()
    states = {e["id"]: e["state"] for e in json.loads(lock.read_text())["tasks"].values()}
    assert states == {first.readable_id: "submitted", second.readable_id: "ambiguous"}


@pytest.mark.anyio
async def test_a_write_cancelled_at_the_stop_leaves_its_keys_to_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A periodic write cancelled after it took the keys written since the last one (a stop
    while it read them) must leave them to the write at the stop: a 100,000-task run's lock
    lacked 18,954 paid tasks, and adoption created them again."""
    plan = load_plan(write_manifest(tmp_path, roots_manifest("cut", 2)))
    lock = tmp_path / "cut.lock.json"
    keeper = LockKeeper(lock, plan, None)
    first, second = plan.tasks
    async with anyio.create_task_group() as tg:
        store = await Store.open(tmp_path / "state.sqlite3")
        store.start(tg)
        await store.mark_submitting(first)
        store.mark_submitted(first.key, "task_one")
        assert await keeper.write_from(store)  # the first write: every row
        await store.mark_submitting(second)
        store.mark_submitted(second.key, "task_two")  # touched: for the next write
        reading = anyio.Event()
        real_records = store.records

        async def stuck(**kwargs: object) -> dict[str, TaskRecord]:
            reading.set()
            await anyio.sleep_forever()
            raise AssertionError

        monkeypatch.setattr(store, "records", stuck)
        periodic = anyio.CancelScope()
        done = anyio.Event()

        async def periodic_write() -> None:
            with periodic:  # as keeper.stop() cancels keeper.every
                await keeper.write_from(store)
            done.set()

        tg.start_soon(periodic_write)
        await reading.wait()
        periodic.cancel()
        await done.wait()
        monkeypatch.setattr(store, "records", real_records)
        await store.flush_and_wait()
        await keeper.write_from(store, await store.records())  # the write at the stop
        await store.aclose()
    ids = {e["taskId"] for e in json.loads(lock.read_text(encoding="utf-8"))["tasks"].values()}
    assert ids == {"task_one", "task_two"}


@pytest.mark.anyio
async def test_incremental_writes_give_the_text_of_a_full_write(tmp_path: Path) -> None:
    """After its first write the keeper remakes only the blocks of the tasks written since
    (``Store.take_touched``): the text must be exactly what a full write of the same rows
    gives, also for a chained task whose parent was written in an earlier round."""
    from flux_pipeline.report.lockfile import lock_entries
    from flux_pipeline.report.locktext import lock_pieces
    from flux_pipeline.states import OutputRecord

    from .support import chained_manifest

    plan = load_plan(write_manifest(tmp_path, chained_manifest("inc", ["a", "b", "c"], ["x"])))
    roots = [t for t in plan.tasks if t.parent_key is None]
    children = [t for t in plan.tasks if t.parent_key is not None]
    lock = tmp_path / "inc.lock.json"
    keeper = LockKeeper(lock, plan, None)
    async with anyio.create_task_group() as tg:
        store = await Store.open(tmp_path / "state.sqlite3")
        store.start(tg)
        await store.mark_submitting(roots[0])
        store.mark_submitted(roots[0].key, "task_a")
        assert await keeper.write_from(store)  # the first: every row
        for i, root in enumerate(roots):
            if i:
                await store.mark_submitting(root)
                store.mark_submitted(root.key, f"task_{i}")
            store.mark_succeeded(
                root.key, [f"https://r/{i}.png"], create_time=1, complete_time=2, cost_time=1
            )
            out = OutputRecord(index=0, path=f"o{i}.png", url="u", bytes=3, sha256="a" * 64)
            store.mark_downloaded(root.key, [out])
        await store.mark_submitting(children[0])
        assert await keeper.write_from(store)  # only what changed since
        assert not await keeper.write_from(store)  # nothing changed: not written
        store.mark_submitted(children[0].key, "task_child")
        await store.flush_and_wait()  # as at a stop: end_run commits what is queued
        await keeper.write_from(store, await store.records())  # the stop's write
        full = "".join(lock_pieces(plan.name, lock_entries(plan, await store.records(), None)))
        await store.aclose()
    text = lock.read_text(encoding="utf-8")
    assert text == full
    entries = json.loads(text)["tasks"]
    assert entries[children[0].key]["parent"] == roots[0].readable_id
    assert entries[children[0].key]["taskId"] == "task_child"
    assert {entries[r.key]["state"] for r in roots} == {"done"}


def _downloaded(plan_tasks: list[TaskSpec], count: int) -> dict[str, TaskRecord]:
    """``count`` downloaded rows shaped like ``plan_tasks[0]``'s (distinct keys and ids)."""
    spec = plan_tasks[0]
    rows = {}
    for i in range(count):
        key = hashlib.sha256(str(i).encode()).hexdigest()
        url = f"https://results.test/{i}.png"
        rows[key] = TaskRecord(
            key=key,
            readable_id=f"{spec.readable_id}-{i}",
            step=spec.step,
            parent_key=None,
            parent_output_index=None,
            state=TaskState.DOWNLOADED,
            task_id=f"task_{i:08d}",
            request_json=spec.request_json,
            output=f"{spec.output}-{i}",
            output_format="png",
            result_urls=(url,),
            fail_code=None,
            fail_msg=None,
            attempts=1,
            api_create_time=1,
            api_complete_time=2,
            cost_time=1,
            first_submitted_at=1.0e9,
            submitted_at=1.0e9,
            finished_at=1.0e9 + i,
            downloaded_at=1.0e9 + i,
            updated_at=1.0e9 + i,
            outputs=[OutputRecord(index=0, path=f"o/{i}.png", url=url, bytes=9, sha256=key)],
        )
    return rows


def test_a_full_write_never_holds_the_entries_and_the_text_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keeper's first write of 4,000 rows: its blocks stay (its later writes remake only
    some), but while writing, at most half as much again is allocated (it was five times as
    much: every entry at once, the text joined, the file read back), and the text is exactly
    that of ``lock_entries``. Pieces of 64 KiB, so the pieces in hand are small beside it."""
    from flux_pipeline.report import locktext
    from flux_pipeline.report.lockfile import lock_entries
    from flux_pipeline.report.locktext import lock_pieces

    monkeypatch.setattr(locktext, "PIECE_CHARS", 1 << 16)

    plan = load_plan(write_manifest(tmp_path, roots_manifest("mem", 1)))
    rows = _downloaded(list(plan.tasks), 4000)
    lock = tmp_path / "mem.lock.json"
    for existing in (False, True):  # a new file, then one that holds exactly this
        keeper = LockKeeper(lock, plan, None)
        tracemalloc.start()
        try:
            wrote = keeper.write(rows)
            retained, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert wrote is not existing
        assert peak <= 1.5 * retained, (peak, retained)
    assert lock.read_text(encoding="utf-8") == "".join(
        lock_pieces(plan.name, lock_entries(plan, rows, None))
    )


@pytest.mark.parametrize("piece_chars", [1, 200, 1 << 20])
def test_the_streamed_text_is_the_joined_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece_chars: int
) -> None:
    from flux_pipeline.report import locktext

    monkeypatch.setattr(locktext, "PIECE_CHARS", piece_chars)
    for count in (0, 1, 3):
        blocks = {
            f"{k:064x}": f'    "{k:064x}": {{\n      "id": "é{k}"\n    }}' for k in range(count)
        }
        for stored in (False, True):
            text = locktext.lock_text("m", blocks, stored=stored)
            assert "".join(locktext.lock_stream("m", blocks, stored=stored)) == text
            path = tmp_path / f"{count}-{stored}.lock.json"
            pieces = partial(locktext.lock_stream, "m", blocks, stored=stored)
            assert locktext.write_lock_stream(path, pieces)
            assert path.read_text(encoding="utf-8") == text
            before = path.stat().st_mtime_ns, path.stat().st_ino
            assert not locktext.write_lock_stream(path, pieces)  # holds exactly this
            assert (path.stat().st_mtime_ns, path.stat().st_ino) == before
            path.write_bytes(b"\xff" + text.encode())  # not UTF-8, not this: written
            assert locktext.write_lock_stream(path, pieces)
            assert path.read_text(encoding="utf-8") == text


def test_a_keeper_that_forgot_its_text_writes_the_same_lock(tmp_path: Path) -> None:
    """``forget`` (the run's ending, before the reports): the text kept for the next write is
    dropped; a write after it makes every block again and the lock says the same."""
    plan = load_plan(write_manifest(tmp_path, roots_manifest("forget", 1)))
    rows = _downloaded(list(plan.tasks), 3)
    lock = tmp_path / "forget.lock.json"
    keeper = LockKeeper(lock, plan, None)
    assert keeper.write(rows)
    text = lock.read_text(encoding="utf-8")
    keeper.forget()
    assert keeper._blocks is None
    later = dict(rows)
    key = next(iter(later))
    later[key] = dataclasses.replace(later[key], attempts=2)
    keeper.write(later, changed=True)  # as the next write_from would: every block made again
    assert lock.read_text(encoding="utf-8") != text
    assert '"attempts": 2' in lock.read_text(encoding="utf-8")
    assert keeper.write(rows)
    assert lock.read_text(encoding="utf-8") == text


def test_reading_a_big_lock_never_holds_its_bytes_and_parsed_json_beside_the_entries(
    tmp_path: Path,
) -> None:
    """``load_lock`` of 4,000 entries: the file's bytes are dropped once decoded, and each
    task's parsed JSON once its entry is made; at its peak it holds less than twice what it
    keeps (2.5 times before, at 20,000 entries: 79.5 MB for 31.6 MB kept)."""
    from flux_pipeline.report.lockfile import load_lock

    plan = load_plan(write_manifest(tmp_path, roots_manifest("big", 1)))
    lock = tmp_path / "big.lock.json"
    assert LockKeeper(lock, plan, None).write(_downloaded(list(plan.tasks), 4000))
    tracemalloc.start()
    try:
        read = load_lock(lock, plan=plan)
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert read is not None
    assert len(read.entries) == 4000
    assert list(read.entries) == list(json.loads(lock.read_text(encoding="utf-8"))["tasks"])
    assert peak < 2 * retained, (peak, retained)
