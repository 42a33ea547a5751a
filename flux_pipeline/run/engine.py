"""The engine: turns a plan into finished tasks, exactly once (docs/engine.md, docs/states.md).

One task group runs a submitter, one poll loop over a heap of due times, downloads and a
progress ticker. ``max_active`` bounds tasks unfinished at the API (a slot is taken before the
create and given back as soon as the API reports the task finished); every API call spends
from one ``TokenBucket``. Chained tasks are queued the moment their parent's outputs are on
disk, ahead of new root tasks. Every transition goes to the ``Store`` before it is acted on
where that matters: ``submitting`` before the create, the taskId right after it.

Stopping: ``request_stop`` (signal, deadline) stops submitting, gives creates already sent a
short grace to come back with their taskId, then cancels; credits running out or
``max_new_tasks`` stop submitting and let tasks in flight finish. An ``AuthError`` ends the run
at once.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup

from flux_pipeline.errors import (
    AmbiguousCreateError,
    AuthError,
    DownloadError,
    FluxPipelineError,
    InsufficientCreditsError,
    InvalidRequestError,
    InvalidResultError,
    RateLimitedError,
    ResultExpiredError,
    RetryableError,
    TaskNotFoundError,
)
from flux_pipeline.layout import inside as safe_join
from flux_pipeline.media import sniff_image
from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.resume import Action, Policy, decide
from flux_pipeline.plan.tasks import TaskSpec, data_uri, resolve_request
from flux_pipeline.run.api import ApiState, RequestType, TaskStatus, build_create_body
from flux_pipeline.run.budget import TokenBucket
from flux_pipeline.run.client import FluxClient
from flux_pipeline.run.downloads import download, file_intact
from flux_pipeline.run.scheduler import DueHeap, PollTiming, TimingConfig
from flux_pipeline.run.store import Store
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

PARENT_URL_MAX_AGE = 14 * 24 * 3600  # result URLs live 15 days; older parents go inline


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    out_dir: Path
    max_active: int = 1000
    request_type: RequestType = "async"
    callback_url: str | None = None
    policy: Policy = field(default_factory=Policy)
    max_new_tasks: int | None = None
    max_downloads: int = 16
    max_status_calls: int = 64
    download_attempts: int = 5
    stop_grace: float = 3.0
    api_down_after: float = 120.0  # no successful API answer for this long: stop (resumable)
    speculate: bool = True  # admit creates against expected, not yet seen, completions
    timing: TimingConfig = field(default_factory=TimingConfig)
    progress_interval: float = 1.0


@dataclass(slots=True)
class Flight:
    """A task the API has accepted and not yet finished."""

    spec: TaskSpec
    task_id: str
    started: float  # monotonic
    polls: int = 0
    errors: int = 0
    checked_age: float = 0.0  # age when the API last said "not finished"


@dataclass(slots=True)
class Pending:
    spec: TaskSpec
    parent_url: str | None = None
    ambiguous_retries: int = 0
    speculative: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    total: int
    done: int
    failed: int
    in_flight: int
    downloading: int
    queued: int
    created: int
    requests: int
    rate_limits: int
    elapsed: float


@dataclass(kw_only=True)
class RunOutcome:
    exit_code: int
    outcomes: Counter[str]
    created: int
    elapsed: float
    requests: int
    rate_limits: int
    stop_reason: str | None
    error: str | None
    ambiguous: list[str]
    stats: dict[str, float] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        *,
        plan: Plan,
        store: Store,
        client: FluxClient,
        downloads: httpx.AsyncClient,
        budget: TokenBucket,
        settings: EngineSettings,
        progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.store = store
        self.client = client
        self.http = downloads
        self.budget = budget
        self.settings = settings
        self._progress = progress
        self._clock = clock
        self.timing = PollTiming(settings.timing)
        self.due = DueHeap(clock)
        self.flights: dict[str, Flight] = {}
        self.by_task_id: dict[str, str] = {}
        self.children_first: deque[Pending] = deque()
        self.roots: deque[Pending] = deque()
        self.records: dict[str, TaskRecord] = {}
        self.outcomes: Counter[str] = Counter()
        self.ambiguous: list[str] = []
        self.creating = 0
        self.downloading = 0
        self.waiting_retry = 0
        self.created = 0
        self.polled_once = 0
        self.status_calls = 0
        self.speculative_429s = 0
        self._margin = 2.0  # standard deviations of safety in speculative admission
        self._room_at, self._room = -1.0, 0  # last speculative estimate, cached briefly
        self._no_speculation_until = 0.0
        self.stop_reason: str | None = None
        self.fatal: FluxPipelineError | None = None
        self._changed = anyio.Event()
        self._finished = anyio.Event()
        self._status_slots = anyio.Semaphore(settings.max_status_calls)
        self._download_slots = anyio.CapacityLimiter(settings.max_downloads)
        self._create_times: deque[float] = deque()
        self._deferred_downloads: list[tuple[TaskSpec, tuple[str, ...]]] = []
        self._started = clock()
        self._last_ok = self._started
        self._tg: TaskGroup | None = None
        self.last_error: str | None = None

    # --- public ----------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        self.records = await self.store.records()
        self._prepare()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                for spec, urls in self._deferred_downloads:
                    tg.start_soon(self._download, spec, urls)
                self._deferred_downloads.clear()
                tg.start_soon(self._submitter)
                tg.start_soon(self._poller)
                if self.settings.request_type == "async":
                    tg.start_soon(self._steer)
                if self._progress is not None:
                    tg.start_soon(self._ticker)
                while True:
                    self._check_finished()
                    if self._finished.is_set():
                        break
                    await self._wait_change()
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            if self._progress is not None:
                self._progress(self.snapshot())
        return self._outcome()

    def request_stop(self, reason: str) -> None:
        """Stop submitting, let creates in progress return their taskId, then stop."""
        if self._finished.is_set():
            return
        first = self.stop_reason is None
        self._stop_submitting(reason)
        if first and self._tg is not None:
            self._tg.start_soon(self._hard_stop)

    def on_callback(self, task_id: str) -> bool:
        """A callback named ``task_id``: confirm it with one status call. False if unknown."""
        key = self.by_task_id.get(task_id)
        if key is None:
            return False
        self.due.schedule(key, self._clock())
        return True

    def snapshot(self) -> Progress:
        done = self.outcomes["done"]
        failed = self.outcomes["failed"] + self.outcomes["expired"]
        return Progress(
            total=len(self.plan.tasks),
            done=done,
            failed=failed,
            in_flight=len(self.flights) + self.creating,
            downloading=self.downloading,
            queued=len(self.roots) + len(self.children_first),
            created=self.created,
            requests=self.budget.acquired,
            rate_limits=self.budget.rate_limits,
            elapsed=self._clock() - self._started,
        )

    # --- resume ----------------------------------------------------------------------------

    def _prepare(self) -> None:
        for spec in self.plan.tasks:
            if spec.parent_key is None:
                self._consider(Pending(spec), initial=True)

    def _consider(self, pending: Pending, *, initial: bool = False) -> None:
        """Apply the resume rule to a task whose parent (if any) is on disk."""
        stack = [pending]
        while stack:
            item = stack.pop()
            spec = item.spec
            record = self.records.pop(spec.key, None)  # decided once: do not keep it
            intact = record is not None and self._outputs_intact(record)
            decision = decide(
                record.state if record else None, outputs_intact=intact, policy=self.settings.policy
            )
            if decision.action is Action.SKIP:
                assert record is not None
                self.outcomes["done"] += 1
                stack.extend(self._children(spec, record.result_urls, record))
            elif decision.action is Action.SUBMIT:
                (self.roots if spec.parent_key is None else self.children_first).append(item)
            elif decision.action is Action.POLL:
                assert record is not None
                assert record.task_id is not None
                self._add_flight(spec, record.task_id, first_delay=0.0)
            elif decision.action is Action.DOWNLOAD:
                assert record is not None
                self._start_download(spec, record.result_urls)
            else:
                assert record is not None
                kind = decision.reason.value
                self.outcomes[kind] += 1
                if record.state is TaskState.SUBMITTING:
                    self.ambiguous.append(spec.readable_id)
        if not initial:
            self._notify()

    def _outputs_intact(self, record: TaskRecord) -> bool:
        if record.state is not TaskState.DOWNLOADED or not record.outputs:
            return False
        out = self.settings.out_dir
        return all(file_intact(out / o.path, o.bytes) for o in record.outputs)

    def _children(
        self, spec: TaskSpec, urls: tuple[str, ...], record: TaskRecord | None
    ) -> Iterator[Pending]:
        stale = (
            record is not None
            and record.finished_at is not None
            and time.time() - record.finished_at > PARENT_URL_MAX_AGE
        )
        for index, url in enumerate(urls):
            parent_url = url
            if stale and record is not None:
                parent_url = self._inline_output(record, index) or url
            for child in self.plan.children(spec, index):
                yield Pending(child, parent_url)

    def _inline_output(self, record: TaskRecord, index: int) -> str | None:
        for out in record.outputs:
            if out.index == index and out.bytes <= 10 * 1024 * 1024:
                content = (self.settings.out_dir / out.path).read_bytes()
                kind = sniff_image(content[:16])
                if kind:
                    return data_uri(content, f"image/{kind}")
        return None

    # --- submitting ------------------------------------------------------------------------

    def _stop_submitting(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._notify()

    def _next_pending(self) -> Pending | None:
        if self.children_first:
            return self.children_first.popleft()
        if self.roots:
            return self.roots.popleft()
        return None

    async def _submitter(self) -> None:
        assert self._tg is not None
        while True:
            if self.stop_reason is not None:
                return
            busy = len(self.flights) + self.creating
            speculative = busy >= self.settings.max_active
            if speculative and busy >= self.settings.max_active + self._speculative_room():
                with anyio.move_on_after(0.02 if self._may_speculate() else None):
                    await self._wait_change()
                continue
            pending = self._next_pending()
            if pending is None:
                await self._wait_change()
                continue
            pending.speculative = speculative
            limit = self.settings.max_new_tasks
            if limit is not None and self.created >= limit:
                self.children_first.appendleft(pending)
                self._stop_submitting(f"--max-new-tasks {limit} reached")
                return
            self.creating += 1
            self.created += 1
            self._tg.start_soon(self._submit, pending)

    def _may_speculate(self) -> bool:
        # only once a full wave has finished: the first completions seen are the fastest
        # tasks, and a CDF learned from them alone would overestimate completions
        return (
            self.settings.speculate
            and self.settings.request_type == "async"
            and len(self.timing.durations) >= min(self.settings.max_active, 512)
            and self._clock() >= self._no_speculation_until
        )

    def _speculative_room(self) -> int:
        """How many tasks beyond ``max_active`` may be created now: the tasks in flight that
        have most likely finished at the API without our having seen it yet (expected count
        minus a safety margin in standard deviations, widened by every 429 such a create meets
        and narrowed slowly by every one that succeeds), at most a tenth of ``max_active``.
        The API frees a slot when a task finishes, not when we poll."""
        if not self._may_speculate():
            return 0
        now = self._clock()
        if now - self._room_at < 0.05:  # O(flights): not more often than this
            return self._room
        expected = variance = 0.0
        cdf = self.timing.durations.cdf
        for flight in self.flights.values():
            seen = cdf(flight.checked_age)
            if seen >= 1.0:
                continue
            p = (cdf(now - flight.started) - seen) / (1.0 - seen)
            expected += p
            variance += p * (1.0 - p)
        room = int(expected - self._margin * variance**0.5)
        self._room_at, self._room = now, max(0, min(room, self.settings.max_active // 10))
        return self._room

    def _notify(self) -> None:
        """Wake everyone waiting for a change of the engine's state."""
        event, self._changed = self._changed, anyio.Event()
        event.set()

    async def _wait_change(self) -> None:
        await self._changed.wait()

    async def _submit(self, pending: Pending) -> None:
        spec = pending.spec
        try:
            await self.store.mark_submitting(spec)
            request = resolve_request(
                spec.request, parent_image_url=pending.parent_url, local_image=self.plan.data_uri
            )
            body = build_create_body(
                request,
                request_type=self.settings.request_type,
                callback_url=self.settings.callback_url,
            )
            self._create_times.append(self._clock())
            task_id = await self.client.create_task(body, speculative=pending.speculative)
        except InsufficientCreditsError as exc:
            self._unsent(pending)
            self._stop_submitting(f"insufficient credits ({exc.message})")
        except AuthError as exc:
            self._unsent(pending)
            self._fail_run(exc)
        except InvalidRequestError as exc:
            self.store.mark_failed(spec.key, "INVALID_REQUEST", exc.message)
            self.outcomes["failed"] += 1
        except AmbiguousCreateError:
            if self.settings.policy.resubmit_ambiguous and pending.ambiguous_retries < 2:
                pending.ambiguous_retries += 1
                self.children_first.append(pending)
            else:
                self.outcomes["ambiguous"] += 1
                self.ambiguous.append(spec.readable_id)
        except RateLimitedError:
            self._unsent(pending)
            if pending.speculative:  # the API was still full: bet less, and pause a moment
                self._no_speculation_until = self._clock() + 0.5
                self._margin = min(4.0, self._margin + 0.3)
                self.speculative_429s += 1
                self.children_first.appendleft(pending)
            else:
                self._requeue_later(pending)
        except RetryableError as exc:
            self._unsent(pending)
            self._requeue_later(pending)
            self._api_trouble(exc)
        else:
            self._last_ok = self._clock()
            if pending.speculative:  # the bet paid: it may be a little bolder
                self._margin = max(1.5, self._margin - 0.005)
            self.store.mark_submitted(spec.key, task_id)
            self._add_flight(spec, task_id, first_delay=None)
        finally:
            self.creating -= 1
            self._notify()

    def _unsent(self, pending: Pending) -> None:
        self.store.mark_unsent(pending.spec.key)
        self.created -= 1

    def _requeue_later(self, pending: Pending) -> None:
        assert self._tg is not None
        self.waiting_retry += 1

        async def later() -> None:
            try:
                await anyio.sleep(min(5.0, self.settings.api_down_after / 4))
                self.children_first.append(pending)
            finally:
                self.waiting_retry -= 1
                self._notify()

        self._tg.start_soon(later)

    # --- polling ---------------------------------------------------------------------------

    def _add_flight(self, spec: TaskSpec, task_id: str, *, first_delay: float | None) -> None:
        flight = Flight(spec, task_id, self._clock())
        self.flights[spec.key] = flight
        self.by_task_id[task_id] = spec.key
        delay = first_delay if first_delay is not None else self._next_delay(flight)
        self.due.schedule(spec.key, self._clock() + delay)

    def _poll_rate(self) -> float:
        now = self._clock()
        while self._create_times and self._create_times[0] < now - 5.0:
            self._create_times.popleft()
        creates = len(self._create_times) / 5.0
        rate = self.budget.effective_rate
        return max(rate * 0.2, rate - creates)

    def _next_delay(self, flight: Flight) -> float:
        return self.timing.next_delay(
            age=self._clock() - flight.started,
            polls=flight.polls,
            waiting=self.polled_once,
            poll_rate=self._poll_rate(),
            callback=self.settings.request_type == "callback",
        )

    async def _poller(self) -> None:
        assert self._tg is not None
        while True:
            key = await self.due.next_due()
            flight = self.flights.get(key)
            if flight is None:
                continue
            await self._status_slots.acquire()
            self._tg.start_soon(self._poll, flight)

    async def _steer(self) -> None:
        """Once a second: keep status calls near the budget creates leave over."""
        last_calls, last_time = self.status_calls, self._clock()
        while True:
            await anyio.sleep(1.0)
            now = self._clock()
            spent = (self.status_calls - last_calls) / max(now - last_time, 1e-6)
            last_calls, last_time = self.status_calls, now
            if self.flights:
                self.timing.steer(spent=spent, budget=0.95 * self._poll_rate())

    async def _poll(self, flight: Flight) -> None:
        self.status_calls += 1
        try:
            status = await self.client.get_status(flight.task_id)
            if self.flights.get(flight.spec.key) is not flight:
                return  # finished meanwhile (a callback and a sweep raced)
        except AuthError as exc:
            self._fail_run(exc)
        except TaskNotFoundError as exc:
            self._finish_flight(flight)
            self.store.mark_failed(flight.spec.key, "TASK_NOT_FOUND", exc.message)
            self.outcomes["failed"] += 1
        except RetryableError as exc:
            flight.errors += 1
            delay = min(60.0, 2.0 * 2 ** min(flight.errors, 5))
            self.due.schedule(flight.spec.key, self._clock() + delay)
            self._api_trouble(exc)
        else:
            self._last_ok = self._clock()
            self._on_status(flight, status)
        finally:
            self._status_slots.release()
            self._notify()

    def _on_status(self, flight: Flight, status: TaskStatus) -> None:
        if flight.polls == 0:
            self.polled_once += 1
        flight.polls += 1
        if not status.state.finished:
            flight.checked_age = self._clock() - flight.started
            self.due.schedule(flight.spec.key, self._clock() + self._next_delay(flight))
            return
        self._finish_flight(flight)
        if status.cost_time is not None:
            self.timing.observe(status.cost_time / 1000.0)
        key = flight.spec.key
        if status.state is ApiState.FAILED:
            self.store.mark_failed(
                key,
                status.fail_code or "UNKNOWN",
                status.fail_msg or "",
                create_time=status.create_time,
                complete_time=status.complete_time,
                cost_time=status.cost_time,
            )
            self.outcomes["failed"] += 1
            return
        self.store.mark_succeeded(
            key,
            status.result_urls,
            create_time=status.create_time,
            complete_time=status.complete_time,
            cost_time=status.cost_time,
        )
        self._start_download(flight.spec, status.result_urls)

    def _finish_flight(self, flight: Flight) -> None:
        self.flights.pop(flight.spec.key, None)
        self.by_task_id.pop(flight.task_id, None)
        self.due.discard(flight.spec.key)
        if flight.polls > 0:
            self.polled_once -= 1

    # --- downloading -----------------------------------------------------------------------

    def _start_download(self, spec: TaskSpec, urls: tuple[str, ...]) -> None:
        self.downloading += 1
        if self._tg is None:  # during _prepare: the task group starts right after
            self._deferred_downloads.append((spec, urls))
            return
        self._tg.start_soon(self._download, spec, urls)

    async def _download(self, spec: TaskSpec, urls: tuple[str, ...]) -> None:
        try:
            outputs = await self._fetch_all(spec, urls)
        except ResultExpiredError as exc:
            self.store.mark_expired(spec.key, str(exc))
            self.outcomes["expired"] += 1
        except InvalidResultError as exc:
            self.store.mark_failed(spec.key, "INVALID_RESULT", str(exc))
            self.outcomes["failed"] += 1
        except DownloadError as exc:
            self.outcomes["incomplete"] += 1
            self._note_error(exc)
        else:
            self.store.mark_downloaded(spec.key, outputs)
            self.outcomes["done"] += 1
            for pending in self._children(spec, urls, None):
                self._consider(pending)
        finally:
            self.downloading -= 1
            self._notify()

    async def _fetch_all(self, spec: TaskSpec, urls: tuple[str, ...]) -> list[OutputRecord]:
        outputs = []
        paths = spec.output_paths(len(urls))
        async with self._download_slots:
            for index, (url, path) in enumerate(zip(urls, paths, strict=True)):
                dest = safe_join(self.settings.out_dir, path)
                for attempt in range(1, self.settings.download_attempts + 1):
                    try:
                        got = await download(self.http, url, dest)
                        break
                    except (ResultExpiredError, InvalidResultError):
                        raise
                    except DownloadError:
                        if attempt == self.settings.download_attempts:
                            raise
                        await anyio.sleep(min(10.0, 0.25 * 2**attempt))
                outputs.append(
                    OutputRecord(
                        index=index, path=path, url=url, bytes=got.bytes, sha256=got.sha256
                    )
                )
        return outputs

    # --- ending ----------------------------------------------------------------------------

    def _note_error(self, exc: BaseException) -> None:
        self.last_error = str(exc)

    def _api_trouble(self, exc: BaseException) -> None:
        """A call failed even after the client's retries. Keep going while the API answers
        something now and then; stop (resumable) once nothing succeeded for a long while."""
        self._note_error(exc)
        down_for = self._clock() - self._last_ok
        if down_for > self.settings.api_down_after:
            self.request_stop(f"the API failed every call for {down_for:.0f}s: {exc}")

    def _fail_run(self, exc: FluxPipelineError) -> None:
        """Nothing more is sent; creates already sent get their answer (a 401 too, most
        likely: then they are recorded as never created, not left ambiguous)."""
        if self.fatal is None:
            self.fatal = exc
        self.request_stop("fatal error")

    async def _hard_stop(self) -> None:
        with anyio.move_on_after(self.settings.stop_grace):
            while self.creating:
                await self._wait_change()
        self._finished.set()
        self._notify()

    def _check_finished(self) -> None:
        busy = self.creating + len(self.flights) + self.downloading + self.waiting_retry
        queued = len(self.roots) + len(self.children_first)
        if busy == 0 and (queued == 0 or self.stop_reason is not None):
            self._finished.set()

    async def _ticker(self) -> None:
        assert self._progress is not None
        while True:
            await anyio.sleep(self.settings.progress_interval)
            self._progress(self.snapshot())

    def _outcome(self) -> RunOutcome:
        outcomes = Counter(self.outcomes)
        outcomes["not started"] = len(self.roots) + len(self.children_first)
        outcomes["in flight"] = len(self.flights) + self.creating + self.downloading
        error = str(self.fatal) if self.fatal else self.last_error
        unfinished = (
            outcomes["not started"]
            + outcomes["in flight"]
            + outcomes["ambiguous"]
            + outcomes["incomplete"]
        )
        if self.fatal is not None:
            code = self.fatal.exit_code
        elif self.stop_reason is not None or unfinished:
            code = 3
        elif outcomes["failed"] or outcomes["expired"]:
            code = 1
        else:
            code = 0
        return RunOutcome(
            exit_code=code,
            outcomes=+outcomes,
            created=self.created,
            elapsed=self._clock() - self._started,
            requests=self.budget.acquired,
            rate_limits=self.budget.rate_limits,
            stop_reason=self.stop_reason,
            error=error,
            ambiguous=sorted(self.ambiguous),
            stats={
                "store_writes": self.store.writes,
                "store_batches": self.store.batches,
                "store_write_seconds": round(self.store.write_seconds, 4),
                "rate_limited": self.budget.rate_limits,
                "speculative_429s": self.speculative_429s,
                "api_requests": self.budget.acquired,
            },
        )


def settings_summary(settings: EngineSettings) -> dict[str, Any]:
    """Run settings for reports: no secrets (the callback URL carries one, so it is omitted)."""
    return {
        "out_dir": str(settings.out_dir),
        "max_active": settings.max_active,
        "request_type": settings.request_type,
        "retry_failed": settings.policy.retry_failed,
        "resubmit_ambiguous": settings.policy.resubmit_ambiguous,
        "max_new_tasks": settings.max_new_tasks,
    }
