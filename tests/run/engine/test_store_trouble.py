"""The engine when the state DB cannot store a write (``MemoryStore(refuse=...)``, which fails
writes as the SQLite writer does), and when a chained template fails for one parent output.

A taskId that cannot be stored stops the run: nothing more is created, creates already sent
come back, exit 2 with the taskId in the error. Any other write not stored leaves its task
in its last recorded state, which a rerun handles. A template failing only for output 1 of a
parent fails those chained tasks (TEMPLATE_ERROR) and the run goes on, nothing ambiguous.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from flux_pipeline.outcome import Buckets
from flux_pipeline.plan.expand import load_plan
from flux_pipeline.run.memory_store import MemoryStore
from flux_pipeline.states import TaskState

from .test_engine_memory import FakeApi, manifest, run

pytestmark = pytest.mark.anyio


class GatedApi(FakeApi):
    """Creates after the first wait until the first taskId has been handed out."""

    def __init__(self) -> None:
        super().__init__()
        self.first = anyio.Event()

    async def create_task(
        self,
        body: Mapping[str, Any],
        *,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        if self.first.is_set() or not self.creates:
            task_id = await super().create_task(
                body, speculative=speculative, before_send=before_send
            )
            self.first.set()
            return task_id
        await self.first.wait()
        return await super().create_task(body, speculative=speculative, before_send=before_send)


async def test_a_taskid_that_cannot_be_stored_stops_the_run_with_exit_2(tmp_path: Path) -> None:
    plan = manifest(tmp_path, [f"x{i}" for i in range(20)])
    api = GatedApi()
    store = MemoryStore(refuse=lambda op, key: op == "taskId t1")
    outcome = await run(tmp_path, plan, api, store, max_active=4)
    assert outcome.exit_code == 2
    assert outcome.error is not None
    assert "taskId t1" in outcome.error
    assert len(api.creates) < 20  # submitting stopped at once
    # every other create that was sent came back and its taskId is stored
    stored = {r.task_id for r in store.rows.values() if r.task_id}
    assert stored == set(api.tasks) - {"t1"}
    assert outcome.buckets.total == 20


async def test_a_submitting_that_cannot_be_stored_sends_nothing_and_exits_2(
    tmp_path: Path,
) -> None:
    plan = manifest(tmp_path, ["a", "b", "c"])
    api, store = FakeApi(), MemoryStore(refuse=lambda op, key: op == "submitting")
    outcome = await run(tmp_path, plan, api, store)
    assert outcome.exit_code == 2
    assert api.creates == []
    assert outcome.buckets == Buckets(not_started=3)


async def test_a_result_not_stored_leaves_the_task_for_a_rerun(tmp_path: Path) -> None:
    plan = manifest(tmp_path, ["a", "b"])
    key_a = plan.tasks[0].key
    api = FakeApi()
    store = MemoryStore(refuse=lambda op, key: op == "succeeded" and key == key_a)
    outcome = await run(tmp_path, plan, api, store)
    assert outcome.exit_code == 3  # the run went on; the state DB is behind: resumable
    assert outcome.error is not None
    assert "not stored" in outcome.error
    assert store.state(plan.tasks[1].key) is TaskState.DOWNLOADED
    row = store.rows[key_a]
    assert (row.state, row.task_id in api.tasks) == (TaskState.SUBMITTED, True)
    assert len(store.failures) == 2  # succeeded refused, downloaded skipped after it

    fixed = MemoryStore(store.rows.values())  # the disk is fine again: the rerun polls it
    again = await run(tmp_path, plan, api, fixed)
    assert again.exit_code == 0
    assert again.created == 0
    assert fixed.state(key_a) is TaskState.DOWNLOADED


def two_outputs_manifest(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        "\n".join(
            [
                "version: 1",
                "name: mem",
                "steps:",
                "  - id: gen",
                "    matrix:",
                '      n: ["a", "TWO"]',
                "    prompt: 'picture {{ n }}'",
                "  - id: edit",
                "    from: gen",
                # fails only for output 1: there is no second element
                "    prompt: 'edit {{ parent.n }} {{ [\"only\"][parent.output_index] }}'",
            ]
        )
        + "\n"
    )
    return path


async def test_a_template_failing_for_output_1_fails_those_tasks_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    plan = load_plan(two_outputs_manifest(tmp_path))
    api, store = FakeApi(), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    # a, TWO, the edit of a and of TWO's first image done; the edit of its second: failed
    assert outcome.buckets == Buckets(done=4, failed=1)
    assert outcome.exit_code == 1
    assert outcome.ambiguous == []
    assert outcome.error is not None
    assert "TEMPLATE_ERROR" in outcome.error
    assert "gen@n=TWO#1 output 1" in outcome.error
    assert {r.state for r in store.rows.values()} == {TaskState.DOWNLOADED}

    again = await run(tmp_path, plan, api, store)  # a rerun counts it the same, sends nothing
    assert again.buckets == outcome.buckets
    assert again.created == 0
