"""The simulator's state and rules, independent of HTTP: ``Simulator``.

Request handlers (``app.py``) call ``authenticate``, ``admit``, ``create`` and ``status``; each
raises ``ApiFailure`` for an error answer. ``running()`` is the background side: one loop that
settles due events of the task heap, and the jobs they produce (reference-image fetches,
callbacks), run in one task group with one shared ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup

from flux_pipeline.simulator import callbacks, memory, references
from flux_pipeline.simulator.clock import Clock, ManualClock, system_clock
from flux_pipeline.simulator.config import SimConfig
from flux_pipeline.simulator.faults import FaultInjector
from flux_pipeline.simulator.images import ImageCache
from flux_pipeline.simulator.limits import Credits, RateLimiter, retry_after_seconds
from flux_pipeline.simulator.persist import SAVE_INTERVAL, StateFile, input_digest
from flux_pipeline.simulator.stats import Stats
from flux_pipeline.simulator.tasks import (
    CONTENT_VIOLATION,
    INVALID_IMAGE_URL,
    STATES,
    Task,
    TaskStore,
)
from flux_pipeline.simulator.validation import CreateRequest

Job = Callable[[], Awaitable[None]]
MAX_JOBS = 64  # concurrent fetches and callback deliveries
REAL_CLOCK_MAX_SLEEP = 1.0  # re-read a (non-manual) clock at least this often


class ApiFailure(Exception):
    """An error answer: ``{"code": code, "message": message, "data": null}``."""

    def __init__(self, code: int, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


UNAUTHORIZED = "Invalid or missing API Key"
RATE_LIMITED = "Rate limit exceeded"
NOT_FOUND = "Task not found"
INSUFFICIENT = "Insufficient credits"


def _block_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    cleaned = [w.strip() for w in words if w.strip()]
    if not cleaned:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(cleaned, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class Simulator:
    """``state``: where tasks, credits and counters are kept across restarts (loaded here,
    saved every ``SAVE_INTERVAL`` seconds while running and when it stops)."""

    def __init__(
        self, config: SimConfig, clock: Clock | None = None, state: StateFile | None = None
    ) -> None:
        self.config = config
        self.clock: Clock = clock or system_clock
        self.stats = Stats()
        self.store = TaskStore(
            task_seconds=config.task_seconds,
            spread=config.spread,
            time_scale=config.time_scale,
            seed=config.seed,
            on_finish=self._on_finish,
        )
        self.limiter = RateLimiter(config.rpm, config.rate_window)
        self.credits = Credits(config.credits)
        self.faults = FaultInjector(config.faults, config.seed)
        self.images = ImageCache(config.image_cache_size)
        self._keys = frozenset(config.api_keys)
        self._blocked = _block_pattern(config.block_words)
        self._unreachable = frozenset(h.lower().strip("[]") for h in config.unreachable_hosts)
        self.inputs: set[bytes] = set()
        self._jobs: deque[Job] = deque()
        self._wake: asyncio.Event | None = None
        self._wake_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client: httpx.AsyncClient | None = None
        self.state = state
        self.port: int | None = None  # the port served on, once known (``serving``)
        self.ports: set[int] = set()  # every port served on, this run and earlier ones
        self._quiet_until = -math.inf  # tasks done by then finished while it was stopped
        if state is not None and state.saved is not None:
            memory.restore(self, state.saved)
            self._quiet_until = self.clock()

    def serving(self, base_url: str) -> None:
        """Where the server listens: recorded (``memory.serving``)."""
        memory.serving(self, base_url)

    # -- requests ---------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> str:
        """The API key of a ``Bearer`` header, or ApiFailure 401."""
        if authorization:
            scheme, _, key = authorization.partition(" ")
            key = key.strip()
            if scheme.lower() == "bearer" and key in self._keys:
                return key
        raise ApiFailure(401, UNAUTHORIZED)

    def admit(self, api_key: str) -> None:
        """Count one API request against the key's window (settling due events first)."""
        now = self.clock()
        self.store.settle(now)
        self.stats.arrived(now, self.config.rate_window)
        wait = self.limiter.try_acquire(api_key, now)
        if wait is not None:
            raise ApiFailure(429, RATE_LIMITED, retry_after=retry_after_seconds(wait))

    def create(self, api_key: str, request: CreateRequest, base_url: str) -> str:
        config, store = self.config, self.store
        now = self.clock()
        if store.unfinished(api_key) >= config.max_concurrent:
            wait = store.seconds_until_slot(api_key, now)
            raise ApiFailure(429, RATE_LIMITED, retry_after=retry_after_seconds(wait))
        cost = config.cost(request.mode)
        if not self.credits.can_pay(cost):
            raise ApiFailure(400, INSUFFICIENT)
        self.credits.pay(cost)
        pending, total = store.draw_durations()
        task = Task(
            task_id=store.new_id(),
            api_key=api_key,
            request=request,
            base_url=base_url.rstrip("/"),
            created=now,
            started=now + pending,
            due=now + total,
        )
        self._judge(task)
        store.add(task)
        self._note_input(task)
        if self.state is not None:
            self.state.note_new(task)
        if self._jobs or task.started < self._wake_at:
            self._poke()
        return task.task_id

    def _judge(self, task: Task) -> None:
        """Decide what can be decided now; schedule the loopback fetches."""
        request = task.request
        if self._blocked is not None and self._blocked.search(request.prompt):
            task.fail = CONTENT_VIOLATION
            return
        self.judge_references(task)

    def judge_references(self, task: Task, urls: tuple[str, ...] | None = None) -> None:
        """Judge reference images (all of the task's by default): now when possible, else by
        a scheduled fetch."""
        urls = task.request.image_urls if urls is None else urls
        pre = references.precheck(urls, self._unreachable)
        problem, to_fetch = pre.problem, []
        for url in pre.to_fetch if not problem else ():
            judged = memory.old_result(self, url)
            if judged is False:
                to_fetch.append(url)
            elif judged is not None:
                problem = str(judged)
                break
        if problem:
            task.fail = (INVALID_IMAGE_URL, "Cannot access provided image URL")
            task.problem = problem
        elif to_fetch:
            task.checks_pending = 1
            self._jobs.append(lambda: self._fetch_references(task, tuple(to_fetch)))

    def _note_input(self, task: Task) -> None:
        self.stats.creates += 1
        task.digest = input_digest(task.request.input)
        if task.digest in self.inputs:
            self.stats.duplicate_creates += 1
        else:
            self.inputs.add(task.digest)

    def task_for(self, api_key: str | None, task_id: str) -> Task:
        task = self.store.tasks.get(task_id)
        if task is None or (api_key is not None and task.api_key != api_key):
            raise ApiFailure(404, NOT_FOUND)
        return task

    def status(self, api_key: str, task_id: str) -> dict[str, Any]:
        task = self.task_for(api_key, task_id)
        return task.status_data(self.clock(), self.config.results_per_task)

    def result_available(self, task: Task, index: int) -> bool:
        now = self.clock()
        return (
            0 <= index < self.config.results_per_task
            and task.state(now) == "success"
            and now < task.complete_time + self.config.result_ttl
        )

    # -- stats ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        self.store.settle(self.clock())
        s = self.stats
        return {
            "requests_by_endpoint": dict(s.requests),
            "responses_by_code": {str(k): v for k, v in sorted(s.responses.items())},
            "rate_limited": s.rate_limited,
            "peak_per_window": s.peak_per_window,
            "rate_window": self.config.rate_window,
            "server_errors": s.server_errors,
            "drops": s.drops,
            "lost_after": s.lost_after,
            "gateway_errors": s.gateway_errors,
            "slowed": s.slowed,
            "truncated": s.truncated,
            "creates": s.creates,
            "distinct_inputs": len(self.inputs),
            "duplicate_creates": s.duplicate_creates,
            "max_concurrent_seen": self.store.max_unfinished,
            "unfinished": self.store.total_unfinished,
            "tasks_by_state": {state: self.store.counts[state] for state in STATES},
            "callbacks_sent": s.callbacks_sent,
            "callbacks_failed": s.callbacks_failed,
            "callbacks_skipped": s.callbacks_skipped,
            "credits_left": self.credits.balance,
            "credits_spent": self.credits.spent,
            "faults": self.faults.snapshot(),
            "now": self.clock(),
        }

    def debug_view(self, task: Task) -> dict[str, Any]:
        now = self.clock()
        return {
            "taskId": task.task_id,
            "state": task.state(now),
            "status": task.status_data(now, self.config.results_per_task),
            "request": task.request.raw,
            "created": task.created,
            "started": task.started,
            "due": task.due,
            "completed": task.completed,
            "fail": list(task.fail) if task.fail else None,
            "problem": task.problem,
            "checks_pending": task.checks_pending,
        }

    # -- background -------------------------------------------------------------------------

    def _on_finish(self, task: Task) -> None:
        if self.state is not None:
            self.state.note_changed(task)
        url = task.request.callback_url
        if url is None:
            return
        if task.complete_time <= self._quiet_until or not references.is_loopback(
            httpx.URL(url).host
        ):  # finished while the simulator was stopped: its callback is lost, as upstream
            self.stats.callbacks_skipped += 1
            return
        payload = {
            "code": 200,
            "message": "success",
            "data": task.status_data(task.complete_time, self.config.results_per_task),
        }
        self._jobs.append(lambda: self._send_callback(url, payload))
        self._poke()

    async def _send_callback(self, url: str, payload: dict[str, Any]) -> None:
        assert self.client is not None
        delivered = await callbacks.deliver(
            self.client,
            url,
            payload,
            attempts=self.config.callback_attempts,
            first_backoff=self.config.callback_backoff,
        )
        if delivered:
            self.stats.callbacks_sent += 1
        else:
            self.stats.callbacks_failed += 1

    async def _fetch_references(self, task: Task, urls: tuple[str, ...]) -> None:
        assert self.client is not None
        problem = None
        for url in urls:
            problem = await references.fetch_problem(self.client, url)
            if problem:
                break
        self.store.check_done(task, problem, self.clock())
        if self.state is not None:
            self.state.note_changed(task)

    def settle(self) -> None:
        """Run due side effects now (used after advancing a manual clock)."""
        self.store.settle(self.clock())

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _poke_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._poke)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Simulator]:
        """Run the background loop (and own the HTTP client) for the duration of the block."""
        if self._loop is not None:
            raise RuntimeError("this simulator is already running")
        self._loop = asyncio.get_running_loop()
        unsubscribe = (
            self.clock.subscribe(self._poke_threadsafe)
            if isinstance(self.clock, ManualClock)
            else None
        )
        try:
            async with (
                httpx.AsyncClient(trust_env=False, follow_redirects=False) as client,
                anyio.create_task_group() as tg,
            ):
                self.client = client
                tg.start_soon(self._background, tg)
                if self.state is not None:
                    tg.start_soon(self._autosave, self.state)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self.save()
            if unsubscribe:
                unsubscribe()
            self.client = None
            self._wake = None
            self._loop = None

    def save(self) -> None:
        """Write what changed since the last save (nothing without a state file)."""
        if self.state is not None:
            self.store.settle(self.clock())
            self.state.write(self.state.take(memory.meta(self)))

    async def _autosave(self, state: StateFile) -> None:
        seen = -1
        while True:
            await anyio.sleep(SAVE_INTERVAL)
            requests = sum(self.stats.requests.values())
            if state.dirty or requests != seen:
                seen = requests
                self.store.settle(self.clock())
                await anyio.to_thread.run_sync(state.write, state.take(memory.meta(self)))

    async def _background(self, tg: TaskGroup) -> None:
        limiter = anyio.CapacityLimiter(MAX_JOBS)
        manual = isinstance(self.clock, ManualClock)

        async def run(job: Job) -> None:
            async with limiter:
                await job()

        while True:
            self._wake = asyncio.Event()
            now = self.clock()
            self.store.settle(now)
            while self._jobs:
                tg.start_soon(run, self._jobs.popleft())
            due = self.store.next_due()
            if manual:
                self._wake_at = due if due is not None else math.inf
                timeout = math.inf
            else:
                wait = REAL_CLOCK_MAX_SLEEP if due is None else due - now
                timeout = min(REAL_CLOCK_MAX_SLEEP, max(0.0, wait))
                self._wake_at = now + timeout
            with anyio.move_on_after(timeout):
                await self._wake.wait()
