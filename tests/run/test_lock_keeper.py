"""``LockKeeper`` (flux_pipeline/run/lock_keeper.py): during a run the lock is rewritten every
interval from the state DB, so a job cancelled without a clean stop leaves a current one."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from flux_pipeline.plan.expand import load_plan
from flux_pipeline.run.lock_keeper import LOCK_INTERVAL, LockKeeper
from flux_pipeline.run.store import Store

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
