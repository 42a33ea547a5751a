"""One task's bad answer harms that task only (the engine on a ``MemoryStore``, a fake API).

A status call refused (400, a redirect) or an answer that cannot be handled at all is tried
again a bounded number of times, then the task is held: ``submitted`` with its taskId, in
flight, exit 3, a rerun polls it again. A taskId given twice, a state going backwards,
10,000 result URLs, a result URL that cannot be fetched, an exception nobody expected: each
stays with its task and is recorded; creates in flight are never cancelled by it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from flux_pipeline.errors import InvalidRequestError, ServerError
from flux_pipeline.outcome import Buckets
from flux_pipeline.plan.expand import Plan
from flux_pipeline.run import poller
from flux_pipeline.run.api import ApiState, TaskStatus
from flux_pipeline.run.budget import TokenBucket
from flux_pipeline.run.downloads import Downloaded, download
from flux_pipeline.run.engine import Engine, EngineSettings, RunOutcome
from flux_pipeline.run.memory_store import MemoryStore
from flux_pipeline.states import TaskState

from .test_engine_memory import QUICK, FakeApi, fake_fetch, manifest, run

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Status retries after a few milliseconds, not seconds (the count is what is tested)."""
    monkeypatch.setattr(poller, "ERROR_BACKOFF_BASE", 0.001)


def spec_of(plan: Plan, name: str) -> Any:
    return next(s for s in plan.tasks if s.readable_id == f"gen@n={name}#1")


class Hostile(FakeApi):
    """``FakeApi`` whose status answers for tasks whose prompt holds ``word`` are ``answer``
    (an exception to raise, or a function of the taskId giving a status), and whose creates
    for ``SLOW`` prompts wait until the hostile answer has been given once."""

    def __init__(self, word: str, answer: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.word = word
        self.answer = answer
        self.hostile_calls = 0
        self.hostile_given = anyio.Event()

    async def create_task(
        self,
        body: Mapping[str, Any],
        *,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        if "SLOW" in str(body):
            await self.hostile_given.wait()
        return await super().create_task(body, speculative=speculative, before_send=before_send)

    async def get_status(self, task_id: str) -> TaskStatus:
        prompt, _ = self.tasks[task_id]
        if self.word not in prompt:
            return await super().get_status(task_id)
        self.hostile_calls += 1
        self.hostile_given.set()
        if isinstance(self.answer, BaseException):
            raise self.answer
        status: TaskStatus = self.answer(task_id)
        return status


def recorded_task_ids(store: MemoryStore) -> set[str]:
    return {r.task_id for r in store.rows.values() if r.task_id is not None}


@pytest.mark.parametrize("status", [400, 302])
async def test_a_refused_status_call_holds_that_task_and_creates_in_flight_finish(
    tmp_path: Path, status: int
) -> None:
    plan = manifest(tmp_path, ["BAD", "SLOW1", "SLOW2", "SLOW3", "ok"])
    refused = InvalidRequestError("refused", method="GET", path="/status", status=status)
    api, store = Hostile("BAD", refused), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    # the bad task is held in flight; the creates that were waiting came back and finished
    assert outcome.buckets == Buckets(done=4, in_flight=1)
    assert outcome.exit_code == 3  # resumable: a rerun polls the held task again
    assert api.hostile_calls == poller.STATUS_ATTEMPTS
    assert recorded_task_ids(store) == set(api.tasks)  # every taskId the API gave is stored
    bad = store.rows[spec_of(plan, "BAD").key]
    assert bad.state is TaskState.SUBMITTED
    assert outcome.error is not None
    assert "held" in outcome.error
    assert f"HTTP {status}" in outcome.error

    api.word = "no task has this"  # the API answers again: the rerun polls it, creates nothing
    again = await run(tmp_path, plan, api, store)
    assert again.buckets == Buckets(done=5)
    assert again.created == 0


async def test_status_calls_of_one_task_failing_forever_hold_it_after_a_bound(
    tmp_path: Path,
) -> None:
    plan = manifest(tmp_path, ["DOWN", "ok"])
    api, store = Hostile("DOWN", ServerError("bad gateway", status=502)), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    assert outcome.buckets == Buckets(done=1, in_flight=1)
    assert outcome.exit_code == 3
    assert api.hostile_calls == poller.MAX_STATUS_ERRORS
    assert store.state(spec_of(plan, "DOWN").key) is TaskState.SUBMITTED


async def test_an_exception_while_reading_an_answer_is_contained_and_counted(
    tmp_path: Path,
) -> None:
    plan = manifest(tmp_path, ["DEEP", "SLOW", "ok"])
    api, store = Hostile("DEEP", RecursionError("maximum recursion depth exceeded")), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    assert outcome.buckets == Buckets(done=2, in_flight=1)
    assert outcome.exit_code == 3
    assert store.state(spec_of(plan, "DEEP").key) is TaskState.SUBMITTED
    assert outcome.stats["unexpected_errors"] == 1
    assert outcome.stats["held"] == 1
    assert outcome.error is not None
    assert "unexpected" in outcome.error
    assert "RecursionError" in outcome.error


async def test_a_bug_handling_an_answer_holds_its_task_with_the_reason(tmp_path: Path) -> None:
    def broken(task_id: str) -> TaskStatus:  # result_urls not a tuple: len() fails
        return TaskStatus(task_id=task_id, state=ApiState.SUCCESS, result_urls=5)  # type: ignore[arg-type]

    plan = manifest(tmp_path, ["BUG", "ok"])
    api, store = Hostile("BUG", broken), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    assert outcome.buckets == Buckets(done=1, in_flight=1)
    assert outcome.stats["unexpected_errors"] == 1
    assert api.hostile_calls == 1  # a bug is not retried
    assert outcome.error is not None
    assert "TypeError" in outcome.error


async def test_ten_thousand_result_urls_fail_that_task(tmp_path: Path) -> None:
    def flood(task_id: str) -> TaskStatus:
        urls = tuple(f"https://results.test/{task_id}/{i}.png" for i in range(10_000))
        return TaskStatus(task_id=task_id, state=ApiState.SUCCESS, result_urls=urls)

    plan = manifest(tmp_path, ["FLOOD", "ok"])
    api, store = Hostile("FLOOD", flood), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    assert outcome.buckets == Buckets(done=1, failed=1)
    assert outcome.exit_code == 1
    row = store.rows[spec_of(plan, "FLOOD").key]
    assert row.state is TaskState.FAILED
    assert row.fail_code == "TOO_MANY_RESULTS"
    assert row.task_id is not None  # the taskId is kept


class SameId(FakeApi):
    """Gives the taskId of the first create to the second one too."""

    async def create_task(
        self,
        body: Mapping[str, Any],
        *,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        task_id = await super().create_task(body, speculative=speculative, before_send=before_send)
        return "t1" if task_id == "t2" else task_id


@pytest.mark.parametrize("max_active", [1, 3], ids=["first-finished", "both-in-flight"])
async def test_a_taskid_given_to_two_creates_fails_the_second_and_keeps_its_taskid(
    tmp_path: Path, max_active: int
) -> None:
    plan = manifest(tmp_path, ["a", "b", "c"])
    api, store = SameId(), MemoryStore()
    outcome = await run(tmp_path, plan, api, store, max_active=max_active)
    assert outcome.buckets == Buckets(done=2, failed=1)
    failed = [r for r in store.rows.values() if r.state is TaskState.FAILED]
    assert [(r.fail_code, r.task_id) for r in failed] == [("DUPLICATE_TASK_ID", "t1")]
    assert outcome.error is not None
    assert "t1" in outcome.error


class Backwards(FakeApi):
    """The first status call of a ``BACK`` task waits for a second one (a callback's) to
    answer success, then answers ``processing``: a state going backwards."""

    def __init__(self) -> None:
        super().__init__()
        self.first_entered = anyio.Event()
        self.second_done = anyio.Event()
        self.back_calls = 0

    async def get_status(self, task_id: str) -> TaskStatus:
        prompt, _ = self.tasks[task_id]
        if "BACK" not in prompt:
            return await super().get_status(task_id)
        self.back_calls += 1
        if self.back_calls == 1:
            self.first_entered.set()
            await self.second_done.wait()
            return TaskStatus(task_id=task_id, state=ApiState.PROCESSING)
        urls = (f"https://results.test/{task_id}/0.png",)
        self.second_done.set()
        return TaskStatus(task_id=task_id, state=ApiState.SUCCESS, result_urls=urls)


async def test_a_state_going_backwards_changes_nothing(tmp_path: Path) -> None:
    plan = manifest(tmp_path, ["BACK", "ok"])
    api, store = Backwards(), MemoryStore()
    eng = Engine(
        plan=plan,
        store=store,
        client=api,
        downloads=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))),
        budget=TokenBucket(1e9),
        settings=EngineSettings(out_dir=tmp_path / "out", timing=QUICK),
        fetch=fake_fetch,
    )
    result: list[RunOutcome] = []

    async def run_it() -> None:
        result.append(await eng.run())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_it)
            await api.first_entered.wait()
            task_id = next(t for t, (p, _) in api.tasks.items() if "BACK" in p)
            assert eng.on_callback(task_id)  # a second status call while the first waits
    assert result[0].buckets == Buckets(done=2)
    assert store.state(spec_of(plan, "BACK").key) is TaskState.DOWNLOADED
    assert api.back_calls == 2  # the late "processing" did not bring it back to polling


def bad_url(task_id: str) -> TaskStatus:
    return TaskStatus(task_id=task_id, state=ApiState.SUCCESS, result_urls=("http://[::1",))


async def run_real_fetch(tmp_path: Path, plan: Plan, api: FakeApi, store: MemoryStore) -> Any:
    async def fetch(http: httpx.AsyncClient, url: str, dest: Path) -> Downloaded:
        if url.startswith("https://results.test/"):
            return await fake_fetch(http, url, dest)
        return await download(http, url, dest)  # the real download, on the bad URL

    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(500))
    ) as http:
        eng = Engine(
            plan=plan,
            store=store,
            client=api,
            downloads=http,
            budget=TokenBucket(1e9),
            settings=EngineSettings(out_dir=tmp_path / "out", timing=QUICK),
            fetch=fetch,
        )
        with anyio.fail_after(10):
            return await eng.run()


@pytest.mark.parametrize("url", ["http://[::1", "ftp://results.test/a.png", "http:///a.png"])
async def test_a_result_url_that_cannot_be_fetched_fails_that_task(
    tmp_path: Path, url: str
) -> None:
    plan = manifest(tmp_path, ["URL", "ok"])
    answer = lambda t: TaskStatus(task_id=t, state=ApiState.SUCCESS, result_urls=(url,))  # noqa: E731
    api, store = Hostile("URL", answer), MemoryStore()
    outcome = await run_real_fetch(tmp_path, plan, api, store)
    assert outcome.buckets == Buckets(done=1, failed=1)
    assert outcome.exit_code == 1
    row = store.rows[spec_of(plan, "URL").key]
    assert (row.state, row.fail_code) == (TaskState.FAILED, "INVALID_RESULT_URL")

    again = await run_real_fetch(tmp_path, plan, api, store)  # the stored URL blocks nothing
    assert again.exit_code == 1
    assert again.buckets == outcome.buckets


async def test_a_stored_bad_result_url_fails_on_resume_instead_of_crashing(
    tmp_path: Path,
) -> None:
    plan = manifest(tmp_path, ["URL"])
    api, store = FakeApi(), MemoryStore()
    spec = plan.tasks[0]
    await store.mark_submitting(spec)
    store.mark_submitted(spec.key, "t9")
    store.mark_succeeded(spec.key, ["http://[::1"], create_time=1, complete_time=2, cost_time=1)
    outcome = await run_real_fetch(tmp_path, plan, api, store)
    assert outcome.buckets == Buckets(failed=1)
    assert store.rows[spec.key].fail_code == "INVALID_RESULT_URL"
    assert api.creates == []


async def test_an_unexpected_exception_downloading_holds_that_task(tmp_path: Path) -> None:
    async def fetch(http: httpx.AsyncClient, url: str, dest: Path) -> Downloaded:
        if "t1/" in url:
            raise KeyError("a bug")
        return await fake_fetch(http, url, dest)

    plan = manifest(tmp_path, ["first", "second"])
    api, store = FakeApi(), MemoryStore()
    async with httpx.AsyncClient() as http:
        eng = Engine(
            plan=plan,
            store=store,
            client=api,
            downloads=http,
            budget=TokenBucket(1e9),
            settings=EngineSettings(out_dir=tmp_path / "out", timing=QUICK, max_active=1),
            fetch=fetch,
        )
        with anyio.fail_after(10):
            outcome = await eng.run()
    assert outcome.buckets == Buckets(done=1, in_flight=1)
    assert outcome.exit_code == 3
    states = sorted(r.state for r in store.rows.values())
    assert states == [TaskState.DOWNLOADED, TaskState.SUCCEEDED]  # a rerun downloads it again
    assert outcome.stats["unexpected_errors"] == 1
    assert outcome.error is not None
    assert "KeyError" in outcome.error
