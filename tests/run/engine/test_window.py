"""The ambiguity window at its minimum (docs/states.md, docs/engine.md): ``submitting`` is
written inside the client's ``before_send`` (after the request-budget token and the
connection are held), so a stop leaves ambiguous only the creates that were really sent, and
"created" counts taskIds the API returned, nothing else.

A ``GatedApi`` wraps the memory tests' ``FakeApi``: a create first waits for a budget token
(``tokens``: a semaphore the test refills), then calls ``before_send``, then either answers or
(``hold_answers``) keeps its answer back until the run cancels it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from flux_pipeline.errors import ApiTransportError, InvalidRequestError
from flux_pipeline.outcome import Buckets
from flux_pipeline.run.engine import RunOutcome
from flux_pipeline.run.memory_store import MemoryStore
from flux_pipeline.states import TaskState

from .test_engine_memory import FakeApi, engine, manifest

pytestmark = pytest.mark.anyio


class GatedApi(FakeApi):
    def __init__(self, tokens: int, *, hold_answers: bool = False) -> None:
        super().__init__()
        self.tokens = anyio.Semaphore(tokens)
        self.hold_answers = hold_answers
        self.sent = 0  # creates that got past before_send
        self.waiting_for_token = 0
        self.never_sent_once: set[str] = set()
        self.probe: Callable[[str], None] = lambda body: None  # called as each create starts
        self.moved = anyio.Event()  # set (and replaced) whenever sent or waiting change

    def _moved(self) -> None:
        self.moved.set()
        self.moved = anyio.Event()

    async def create_task(
        self,
        body: Mapping[str, Any],
        *,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        self.probe(str(body))
        self.waiting_for_token += 1
        self._moved()
        await self.tokens.acquire()  # the request budget: never given back
        self.waiting_for_token -= 1
        if before_send is not None:
            await before_send()
        self.sent += 1
        self._moved()
        if "NEVERSENT" in str(body) and str(body) not in self.never_sent_once:
            self.never_sent_once.add(str(body))  # the first attempt only
            raise ApiTransportError("could not connect: ConnectError", never_sent=True)
        if "BAD" in str(body):
            raise InvalidRequestError("400: prompt refused")
        if self.hold_answers:
            await anyio.sleep_forever()
        return await super().create_task(body, speculative=speculative)


async def _stop_when(
    eng: Any, api: GatedApi, reached: Callable[[], bool], *, reason: str = "signal SIGINT"
) -> RunOutcome:
    result: list[RunOutcome] = []

    async def run_it() -> None:
        result.append(await eng.run())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_it)
            while not reached():
                await api.moved.wait()
            eng.request_stop(reason)
    return result[0]


async def test_a_stop_while_creates_wait_for_budget_leaves_nothing_submitting(
    tmp_path: Path,
) -> None:
    """3 tokens for 20 tasks: 3 created, 17 waiting for a token. A stop: nothing is in
    ``submitting``; the waiting ones are not started (no row at all), created says 3."""
    plan = manifest(tmp_path, [f"HOLD{i}" for i in range(20)])
    api, store = GatedApi(tokens=3), MemoryStore()
    eng = engine(tmp_path, plan, api, store)
    outcome = await _stop_when(eng, api, lambda: api.sent == 3 and api.waiting_for_token == 17)
    states = [store.state(spec.key) for spec in plan.tasks]
    assert states.count(TaskState.SUBMITTING) == 0
    assert states.count(TaskState.SUBMITTED) == 3
    assert states.count(TaskState.PLANNED) == 17
    assert len(store.rows) == 3  # the waiting creates never wrote a row
    assert outcome.buckets == Buckets(in_flight=3, not_started=17)
    assert outcome.created == 3 == len(api.tasks)
    assert outcome.exit_code == 3


async def test_only_creates_really_sent_are_left_ambiguous(tmp_path: Path) -> None:
    """4 tokens, answers held back: 4 creates sent and never answered, 6 waiting for a token.
    A stop (short grace): exactly the 4 sent are ambiguous (rows ``submitting``), the 6 are
    not started, created says 0, and a rerun of the same command holds the 4: exit 1."""
    plan = manifest(tmp_path, [f"n{i}" for i in range(10)])
    api, store = GatedApi(tokens=4, hold_answers=True), MemoryStore()
    eng = engine(tmp_path, plan, api, store, stop_grace=0.05)
    outcome = await _stop_when(eng, api, lambda: api.sent == 4 and api.waiting_for_token == 6)
    states = [store.state(spec.key) for spec in plan.tasks]
    assert states.count(TaskState.SUBMITTING) == 4
    assert states.count(TaskState.PLANNED) == 6
    assert outcome.buckets == Buckets(ambiguous=4, not_started=6)
    assert outcome.created == 0
    assert len(outcome.ambiguous) == 4
    assert outcome.exit_code == 3  # six never sent: a rerun sends them

    api.hold_answers = False
    api.tokens = anyio.Semaphore(100)
    with anyio.fail_after(10):
        again = await engine(tmp_path, plan, api, store).run()
    assert again.buckets == Buckets(done=6, ambiguous=4)
    assert again.created == 6
    assert again.exit_code == 1  # only held ambiguous tasks left: a rerun makes no progress


async def test_never_sent_and_refused_creates_are_not_created_nor_ambiguous(
    tmp_path: Path,
) -> None:
    """A create that never left (connect error, after ``submitting`` was written) goes back to
    ``planned`` and is sent again later; a 400 fails its task. Neither counts as created,
    neither is ambiguous."""
    plan = manifest(tmp_path, ["ok", "BAD", "NEVERSENT"])
    api, store = GatedApi(tokens=100), MemoryStore()
    lost = next(spec for spec in plan.tasks if "NEVERSENT" in spec.readable_id)
    seen: list[TaskState] = []
    api.probe = lambda body: seen.append(store.state(lost.key)) if "NEVERSENT" in body else None
    with anyio.fail_after(10):
        outcome = await engine(tmp_path, plan, api, store, api_down_after=1.0).run()
    assert seen == [TaskState.PLANNED, TaskState.PLANNED]  # back to planned in between
    by_id = {spec.readable_id: store.state(spec.key) for spec in plan.tasks}
    assert by_id == {
        "gen@n=ok#1": TaskState.DOWNLOADED,
        "gen@n=BAD#1": TaskState.FAILED,
        "gen@n=NEVERSENT#1": TaskState.DOWNLOADED,
    }
    assert store.rows[lost.key].attempts == 1
    assert outcome.created == 2 == len(api.tasks)  # the 400 is not counted as created
    assert outcome.buckets == Buckets(done=2, failed=1)
    assert outcome.ambiguous == []
