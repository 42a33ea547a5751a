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
