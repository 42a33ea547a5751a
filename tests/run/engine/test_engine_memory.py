"""The engine on a ``MemoryStore`` and a fake API: no HTTP, no SQLite, no simulator.

The fake API decides each task's fate from its prompt: ``FAIL`` fails at the API, ``LOST``
loses the create's answer, ``TWO`` returns two images, ``HOLD`` stays processing until the
test lets it go; anything else succeeds after two polls. Downloads are an injected function
that writes a small PNG. Timing settings are a few milliseconds, so nothing really waits.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from flux_pipeline.errors import AmbiguousCreateError, ResultExpiredError
from flux_pipeline.outcome import Buckets
from flux_pipeline.plan.expand import Plan, load_plan
from flux_pipeline.report.files import task_entries
from flux_pipeline.run.api import ApiState, TaskStatus
from flux_pipeline.run.budget import TokenBucket
from flux_pipeline.run.downloads import Downloaded
from flux_pipeline.run.engine import Engine, EngineSettings, RunOutcome
from flux_pipeline.run.memory_store import MemoryStore
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

pytestmark = pytest.mark.anyio

QUICK = TimingConfig(first_poll=0.002, min_interval=0.001, max_interval=0.01)
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


class FakeApi:
    """What the engine calls of ``FluxClient``, in memory, counting concurrency."""

    def __init__(self, *, polls_to_finish: int = 2) -> None:
        self.polls_to_finish = polls_to_finish
        self.creates: list[str] = []  # prompts, in order
        self.tasks: dict[str, tuple[str, int]] = {}  # taskId -> (prompt, polls)
        self.active = 0
        self.max_active_seen = 0
        self.released = anyio.Event()  # HOLD tasks finish once set
        self._ids = itertools.count(1)

    async def create_task(
        self,
        body: Mapping[str, Any],
        *,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        if before_send is not None:
            await before_send()
        prompt = json.dumps(body)
        self.creates.append(prompt)
        if "LOST" in prompt:
            raise AmbiguousCreateError("the answer was lost")
        task_id = f"t{next(self._ids)}"
        self.tasks[task_id] = (prompt, 0)
        self.active += 1
        self.max_active_seen = max(self.max_active_seen, self.active)
        return task_id

    async def get_status(self, task_id: str) -> TaskStatus:
        prompt, polls = self.tasks[task_id]
        self.tasks[task_id] = (prompt, polls + 1)
        held = "HOLD" in prompt and not self.released.is_set()
        if held or polls + 1 < self.polls_to_finish:
            return TaskStatus(task_id=task_id, state=ApiState.PROCESSING)
        self.active -= 1
        if "FAIL" in prompt:
            return TaskStatus(
                task_id=task_id, state=ApiState.FAILED, fail_code="NSFW", fail_msg="refused"
            )
        count = 2 if "TWO" in prompt else 1
        where = "gone/" if "EXPIRE" in prompt else ""
        urls = tuple(f"https://results.test/{where}{task_id}/{i}.png" for i in range(count))
        return TaskStatus(task_id=task_id, state=ApiState.SUCCESS, result_urls=urls)


async def fake_fetch(http: httpx.AsyncClient, url: str, dest: Path) -> Downloaded:
    if "/gone/" in url:
        raise ResultExpiredError(f"{url}: 410")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(PNG)
    return Downloaded(bytes=len(PNG), sha256=hashlib.sha256(PNG).hexdigest(), image_type="png")


def manifest(tmp_path: Path, names: list[str], *, chained: bool = False) -> Plan:
    lines = [
        "version: 1",
        "name: mem",
        "steps:",
        "  - id: gen",
        "    matrix:",
        f"      n: {json.dumps(names)}",
        "    prompt: 'picture {{ n }}'",
    ]
    if chained:
        lines += ["  - id: edit", "    from: gen", "    prompt: 'edit {{ parent.n }}'"]
    path = tmp_path / "m.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_plan(path)


def engine(tmp_path: Path, plan: Plan, api: FakeApi, store: MemoryStore, **settings: Any) -> Engine:
    return Engine(
        plan=plan,
        store=store,
        client=api,
        downloads=httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500))),
        budget=TokenBucket(1e9),
        settings=EngineSettings(out_dir=tmp_path / "out", **({"timing": QUICK} | settings)),
        fetch=fake_fetch,
    )


async def run(
    tmp_path: Path, plan: Plan, api: FakeApi, store: MemoryStore, **settings: Any
) -> RunOutcome:
    with anyio.fail_after(10):
        return await engine(tmp_path, plan, api, store, **settings).run()


async def report_count(plan: Plan, store: MemoryStore) -> int:
    """How many tasks the report shows for this state."""
    return len(task_entries(plan, await store.records()))


async def test_every_task_done_once(tmp_path: Path) -> None:
    plan = manifest(tmp_path, ["a", "b", "c"], chained=True)
    api, store = FakeApi(), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    assert outcome.buckets == Buckets(done=6)
    assert outcome.exit_code == 0
    assert len(api.creates) == outcome.created == 6
    assert {store.state(spec.key) for spec in plan.tasks} == {TaskState.DOWNLOADED}
    assert (tmp_path / "out" / "gen" / "n-a-1.jpg").read_bytes() == PNG

    again = await run(tmp_path, plan, api, store)  # a rerun: nothing to do
    assert again.buckets == Buckets(done=6)
    assert again.created == 0
    assert len(api.creates) == 6


async def test_max_active_is_never_exceeded(tmp_path: Path) -> None:
    plan = manifest(tmp_path, [f"x{i}" for i in range(30)])
    api, store = FakeApi(polls_to_finish=3), MemoryStore()
    outcome = await run(tmp_path, plan, api, store, max_active=4)
    assert outcome.buckets == Buckets(done=30)
    assert api.max_active_seen == 4  # full, never over


async def test_buckets_add_up_to_the_plan_and_the_report(tmp_path: Path) -> None:
    plan = manifest(tmp_path, ["good", "FAIL", "LOST", "TWO"], chained=True)
    api, store = FakeApi(), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    # good + its edit, TWO + an edit of each of its two images; the failed task's edit is
    # blocked; the lost create is held (a rerun does not send it again): its edit is blocked
    assert outcome.buckets == Buckets(done=5, failed=1, blocked=2, ambiguous=1)
    assert outcome.buckets.total == len(plan.tasks) + 1  # the edit of TWO's second image
    assert outcome.buckets.total == await report_count(plan, store)
    assert outcome.exit_code == 1  # a rerun makes no progress: held, like a failure
    assert outcome.ambiguous == ["gen@n=LOST#1"]
    lost = next(s for s in plan.tasks if s.readable_id == "gen@n=LOST#1")
    assert store.state(lost.key) is TaskState.SUBMITTING  # may have been billed: kept so
    assert outcome.buckets.summary() == "5 done, 1 failed, 2 blocked, 1 ambiguous"


async def test_a_failed_parent_blocks_its_chain_and_exits_1(tmp_path: Path) -> None:
    plan = manifest(tmp_path, ["good", "FAIL"], chained=True)
    api, store = FakeApi(), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    assert outcome.buckets == Buckets(done=2, failed=1, blocked=1)
    assert outcome.buckets.total == len(plan.tasks) == await report_count(plan, store)
    assert outcome.exit_code == 1
    edit = next(s for s in plan.tasks if s.readable_id == "gen@n=FAIL#1/edit#1")
    assert store.state(edit.key) is TaskState.PLANNED  # never started

    again = await run(tmp_path, plan, api, store)  # held: the rerun counts them the same
    assert again.buckets == outcome.buckets
    assert again.created == 0


async def test_request_stop_sends_nothing_more_and_keeps_what_is_in_flight(
    tmp_path: Path,
) -> None:
    plan = manifest(tmp_path, [f"HOLD{i}" for i in range(10)])
    api, store = FakeApi(), MemoryStore()
    eng = engine(tmp_path, plan, api, store, max_active=3)
    result: list[RunOutcome] = []

    async def run_it() -> None:
        result.append(await eng.run())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_it)
            while len(eng.ledger.flights) < 3:  # the API is full: three in flight
                await eng.ledger.wait_change()
            eng.request_stop("signal SIGTERM")
            sent = len(api.creates)
    outcome = result[0]
    assert len(api.creates) == sent == 3  # nothing created after the stop
    assert outcome.exit_code == 3
    assert outcome.stop_reason == "signal SIGTERM"
    assert outcome.buckets == Buckets(in_flight=3, not_started=7)
    flying = [store.rows[s.key] for s in plan.tasks if s.key in store.rows]
    assert sorted(r.state for r in flying) == [TaskState.SUBMITTED] * 3
    assert all(r.task_id in api.tasks for r in flying)  # each one's taskId is recorded

    api.released.set()  # a rerun polls those three, creates the rest, pays nothing twice
    again = await run(tmp_path, plan, api, store)
    assert again.buckets == Buckets(done=10)
    assert again.created == 7
    assert len(api.creates) == 10


async def test_an_expired_parent_blocks_every_chained_task_of_its_images(tmp_path: Path) -> None:
    plan = manifest(tmp_path, ["good", "EXPIRE-TWO"], chained=True)
    api, store = FakeApi(), MemoryStore()
    outcome = await run(tmp_path, plan, api, store)
    # the expired task returned two images: an edit is planned for each, both blocked
    assert outcome.buckets == Buckets(done=2, expired=1, blocked=2)
    assert outcome.buckets.total == len(plan.tasks) + 1 == await report_count(plan, store)
    assert outcome.exit_code == 1


async def test_a_parent_older_than_its_urls_goes_inline_from_disk(tmp_path: Path) -> None:
    plan = manifest(tmp_path, ["old"], chained=True)
    parent = plan.tasks[0]
    path = parent.output_paths(1)[0]
    (tmp_path / "out" / path).parent.mkdir(parents=True)
    (tmp_path / "out" / path).write_bytes(PNG)
    long_ago = time.time() - 15 * 24 * 3600
    row = TaskRecord(
        key=parent.key,
        readable_id=parent.readable_id,
        step=parent.step,
        parent_key=None,
        parent_output_index=None,
        state=TaskState.DOWNLOADED,
        task_id="t0",
        request_json=parent.request_json,
        output=parent.output,
        output_format=parent.output_format,
        result_urls=("https://results.test/expired-by-now.png",),
        fail_code=None,
        fail_msg=None,
        attempts=1,
        api_create_time=None,
        api_complete_time=None,
        cost_time=None,
        first_submitted_at=long_ago,
        submitted_at=long_ago,
        finished_at=long_ago,
        downloaded_at=long_ago,
        updated_at=long_ago,
        outputs=[
            OutputRecord(
                index=0, path=path, url="u", bytes=len(PNG), sha256=hashlib.sha256(PNG).hexdigest()
            )
        ],
    )
    api, store = FakeApi(), MemoryStore([row])
    outcome = await run(tmp_path, plan, api, store)
    assert outcome.buckets == Buckets(done=2)
    assert len(api.creates) == 1  # the edit only: the parent is on disk
    assert "data:image/png;base64," in api.creates[0]
    assert "expired-by-now" not in api.creates[0]
