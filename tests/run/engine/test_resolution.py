"""Callback mode: a create whose answer was lost finds its taskId again through the callback
naming its key (``run/resolution.py``), confirmed by one status call; a forged callback (a
taskId the API does not know) changes nothing; no callback in time: held ambiguous.

The fake API creates ``LOST`` tasks but loses the answer (the create was processed); the test
plays the callbacks by calling ``Engine.on_callback`` as the receiver would.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from flux_pipeline.errors import AmbiguousCreateError, TaskNotFoundError
from flux_pipeline.outcome import Buckets
from flux_pipeline.run.api import TaskStatus
from flux_pipeline.run.engine import RunOutcome
from flux_pipeline.run.memory_store import MemoryStore
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.states import TaskState

from .test_engine_memory import FakeApi, engine, manifest

pytestmark = pytest.mark.anyio

CALLBACK = "http://receiver.test/callbacks/s3cret"


def sweep_after(seconds: float) -> TimingConfig:
    """Callback mode's sweep (and so the wait of a lost create) after ``seconds``."""
    return TimingConfig(
        first_poll=0.002, min_interval=0.001, max_interval=0.01, callback_sweep_default=seconds
    )


class LostAfterApi(FakeApi):
    """``LOST`` creates are processed (the task exists) but their answer is lost."""

    def __init__(self) -> None:
        super().__init__(polls_to_finish=1)
        self.lost: dict[str, str] = {}  # callback URL -> the taskId the API gave it
        self.lost_event = anyio.Event()
        self.status_calls: list[str] = []
        self.asked = anyio.Event()  # set (and replaced) at every status call

    async def create_task(
        self,
        body: Mapping[str, Any],
        *,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        lost = "LOST" in json.dumps(body)
        kept = json.loads(json.dumps(body).replace("LOST", "kept")) if lost else body
        task_id = await super().create_task(kept, speculative=speculative, before_send=before_send)
        if lost:
            self.lost[str(body["callback_url"])] = task_id
            self.lost_event.set()
            raise AmbiguousCreateError("create sent but its answer was lost (ReadError)")
        return task_id

    async def get_status(self, task_id: str) -> TaskStatus:
        self.status_calls.append(task_id)
        self.asked.set()
        self.asked = anyio.Event()
        if task_id not in self.tasks:
            raise TaskNotFoundError("no such task", task_id=task_id)
        return await super().get_status(task_id)


async def _run_with_callbacks(
    tmp_path: Path,
    api: LostAfterApi,
    store: MemoryStore,
    deliver: Callable[[Any, str, str], Awaitable[None]],
    **settings: Any,
) -> RunOutcome:
    plan = manifest(tmp_path, ["a", "LOST", "b"])
    # the fake API sends no callbacks: the others are found by the sweep
    settings.setdefault("timing", sweep_after(1.0))
    eng = engine(
        tmp_path, plan, api, store, request_type="callback", callback_url=CALLBACK, **settings
    )
    result: list[RunOutcome] = []

    async def run_it() -> None:
        result.append(await eng.run())

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_it)
            await api.lost_event.wait()
            ((url, task_id),) = api.lost.items()
            key = url.rsplit("/", 1)[1]
            await deliver(eng, key, task_id)
    return result[0]


async def test_a_lost_create_resolved_by_its_callback_is_paid_once(tmp_path: Path) -> None:
    """A forged callback first (unknown taskId: the confirm fails, nothing changes), then the
    real one: the task continues with the API's taskId, downloaded; nothing created twice."""
    api, store = LostAfterApi(), MemoryStore()
    before: list[TaskState] = []

    async def deliver(eng: Any, key: str, task_id: str) -> None:
        assert eng.on_callback("task_forged", key)  # taken as a candidate ...
        while "task_forged" not in api.status_calls:  # ... and checked once
            await api.asked.wait()
        before.append(store.state(key))
        assert eng.on_callback(task_id, key)

    outcome = await _run_with_callbacks(tmp_path, api, store, deliver)
    assert before == [TaskState.SUBMITTING]  # the forgery changed nothing
    assert api.status_calls.count("task_forged") == 1
    assert outcome.buckets == Buckets(done=3)
    assert outcome.exit_code == 0
    assert len(api.creates) == 3  # one create per task: nothing paid twice
    assert outcome.created == 3
    assert outcome.stats["resolved_by_callback"] == 1
    lost = next(k for k, r in store.rows.items() if "LOST" in r.readable_id)
    assert store.rows[lost].task_id in api.tasks
    assert store.state(lost) is TaskState.DOWNLOADED


async def test_a_callback_naming_a_key_not_being_created_is_unknown(tmp_path: Path) -> None:
    """Keys are listened for only while their create is in progress or lost."""
    api, store = LostAfterApi(), MemoryStore()

    async def deliver(eng: Any, key: str, task_id: str) -> None:
        assert not eng.on_callback("task_other", "not-a-key-being-created")
        assert eng.on_callback(task_id, key)

    outcome = await _run_with_callbacks(tmp_path, api, store, deliver)
    assert "task_other" not in api.status_calls
    assert outcome.buckets == Buckets(done=3)


async def test_no_callback_in_time_holds_the_task_ambiguous(tmp_path: Path) -> None:
    """No callback within the horizon (the callback sweep): held ambiguous, exit 1."""
    api, store = LostAfterApi(), MemoryStore()

    async def deliver(eng: Any, key: str, task_id: str) -> None:
        return None  # the callback never comes

    outcome = await _run_with_callbacks(tmp_path, api, store, deliver, timing=sweep_after(0.3))
    assert outcome.buckets == Buckets(done=2, ambiguous=1)
    assert outcome.ambiguous == ["gen@n=LOST#1"]
    assert outcome.exit_code == 1
    assert outcome.created == 2


class SlowAnswerApi(LostAfterApi):
    """``LOST`` tasks are created at once but the answer comes only when the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = anyio.Event()

    async def create_task(
        self,
        body: Mapping[str, Any],
        *,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        try:
            return await super().create_task(body, speculative=speculative, before_send=before_send)
        except AmbiguousCreateError:  # here: the answer is only late, not lost
            await self.answer.wait()
            return self.lost[str(body["callback_url"])]


async def test_a_callback_before_the_create_answer_polls_the_task_at_once(
    tmp_path: Path,
) -> None:
    """The callback comes before the create's answer: once the answer comes, the task is
    polled at once, not at the callback sweep (here 30 s; the test allows 10)."""
    api, store = SlowAnswerApi(), MemoryStore()

    async def deliver(eng: Any, key: str, task_id: str) -> None:
        assert eng.on_callback(task_id, key)
        api.answer.set()
        while len([k for k in eng.ledger.flights if k != key]) < 2:
            await eng.ledger.wait_change()
        others = [k for k in eng.ledger.flights if k != key]
        for other in others:  # the others' callbacks, as the API would send them
            assert eng.on_callback(eng.ledger.flights[other].task_id, other)

    outcome = await _run_with_callbacks(tmp_path, api, store, deliver, timing=sweep_after(30.0))
    assert outcome.buckets == Buckets(done=3)
    assert outcome.created == 3
    assert outcome.stats["resolved_by_callback"] == 0  # its answer did come
