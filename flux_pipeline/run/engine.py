"""The engine: turns a plan into finished tasks, exactly once (docs/engine.md, docs/states.md).

One task group runs the ``Submitter`` (admission and creates), the ``Poller`` (a heap of due
times, steered timing), the ``Downloader`` and a progress ticker; they share one ``Ledger``
of where every task is. ``max_active`` bounds tasks unfinished at the API (a slot is taken
before the create and given back as soon as the API reports the task finished), beyond it
only the ``Admission`` model's estimate of completions not yet seen; every API call spends
from one ``TokenBucket``. Chained tasks are queued the moment their parent's outputs are on
disk, ahead of new root tasks. Every transition goes to the store before it is acted on
where that matters: ``submitting`` right before the create is sent (once its request-budget
token and connection are held), the taskId right after it.

Stopping: ``request_stop`` (signal, deadline) stops submitting, gives creates already sent a
short grace to come back with their taskId, then cancels; credits running out or
``max_new_tasks`` stop submitting and let tasks in flight finish. An ``AuthError`` ends the run
at once. At the end every task of the plan is in exactly one outcome bucket
(``flux_pipeline.outcome``), and the exit code follows from the buckets (docs/exit-codes.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
from anyio.abc import TaskGroup

from flux_pipeline.errors import FluxPipelineError
from flux_pipeline.outcome import Bucket, exit_code_for
from flux_pipeline.plan.cost import CostCap
from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.resume import Action, Policy, Reason, decide, urls_aging, urls_expired
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.admission import Admission
from flux_pipeline.run.api import RequestType
from flux_pipeline.run.api_client import ApiClient
from flux_pipeline.run.budget import TokenBucket
from flux_pipeline.run.downloader import Downloader, DownloadSettings, Fetch
from flux_pipeline.run.downloads import download
from flux_pipeline.run.images import ImageSource, InlineImages
from flux_pipeline.run.ledger import Ledger, Pending, run_error
from flux_pipeline.run.on_disk import intact_keys
from flux_pipeline.run.poller import Poller
from flux_pipeline.run.results import Progress as Progress
from flux_pipeline.run.results import RunOutcome as RunOutcome
from flux_pipeline.run.results import settings_summary as settings_summary
from flux_pipeline.run.scheduler import PollTiming, TimingConfig
from flux_pipeline.run.state_store import StateStore
from flux_pipeline.run.submitter import CreateRate, CreateSettings, Submitter
from flux_pipeline.run.tally import final_buckets, run_stats
from flux_pipeline.states import TaskRecord, TaskState


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    out_dir: Path
    max_active: int = 1000
    request_type: RequestType = "async"
    callback_url: str | None = None
    policy: Policy = field(default_factory=Policy)
    max_new_tasks: int | None = None
    max_cost: CostCap | None = None  # run --max-cost (plan/cost.py)
    max_downloads: int = 16
    max_status_calls: int = 64
    download_attempts: int = 5
    stop_grace: float = 3.0
    api_down_after: float = 120.0  # no successful API answer for this long: stop (resumable)
    speculate: bool = True  # admit creates against expected, not yet seen, completions
    timing: TimingConfig = field(default_factory=TimingConfig)
    progress_interval: float = 1.0
    images: ImageSource | None = None  # run/images.py; default: InlineImages


class Engine:
    def __init__(
        self,
        *,
        plan: Plan,
        store: StateStore,
        client: ApiClient,
        downloads: httpx.AsyncClient,
        budget: TokenBucket,
        settings: EngineSettings,
        progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        fetch: Fetch = download,
    ) -> None:
        self.plan = plan
        self.store = store
        self.budget = budget
        self.settings = settings
        self._progress = progress
        self._clock = clock
        self.ledger = ledger = Ledger()
        timing = PollTiming(settings.timing)
        self.admission = Admission(
            max_active=settings.max_active,
            durations=timing.durations,
            enabled=settings.speculate and settings.request_type == "async",
            clock=clock,
            requests=lambda: budget.acquired,
        )
        rate = CreateRate(clock)
        self.downloader = Downloader(
            ledger=ledger,
            store=store,
            http=downloads,
            settings=DownloadSettings(
                out_dir=settings.out_dir,
                max_downloads=settings.max_downloads,
                attempts=settings.download_attempts,
                down_after=settings.api_down_after,
            ),
            control=self,
            on_done=self._open_children,
            fetch=fetch,
        )
        self.poller = Poller(
            ledger=ledger,
            store=store,
            client=client,
            budget=budget,
            timing=timing,
            callback_mode=settings.request_type == "callback",
            max_status_calls=settings.max_status_calls,
            creates_per_second=rate.per_second,
            control=self,
            on_succeeded=self.downloader.start,
            clock=clock,
        )
        self.submitter = Submitter(
            ledger=ledger,
            store=store,
            client=client,
            admission=self.admission,
            images=settings.images or InlineImages(plan),
            settings=CreateSettings(
                max_active=settings.max_active,
                request_type=settings.request_type,
                callback_url=settings.callback_url,
                resubmit_ambiguous=settings.policy.resubmit_ambiguous,
                max_new_tasks=settings.max_new_tasks,
                max_cost=settings.max_cost,
                api_down_after=settings.api_down_after,
                resolve_horizon=lambda: timing.next_delay(
                    age=0.0, polls=0, waiting=0, poll_rate=1.0, callback=True
                ),
            ),
            control=self,
            on_created=self.poller.track,
            rate=rate,
            # its callback came already (it finished): polled now, not at the sweep
            on_resolved=lambda spec, task_id: self.poller.add_flight(
                spec, task_id, first_delay=0.0
            ),
        )
        self.stop_reason: str | None = None
        self.fatal: FluxPipelineError | None = None
        self.last_error: str | None = None
        self._records: dict[str, TaskRecord] = {}  # rows not yet decided on
        self._intact: set[str] = set()
        self._on_demand: set[str] = set()  # chained tasks planned at run time, not in tasks
        self._finished = anyio.Event()
        self._started = clock()
        self._last_ok = self._started
        self._tg: TaskGroup | None = None
        store.watch(self.fail_run)  # a taskId that cannot be stored, a full disk: exit 2

    async def run(self, records: dict[str, TaskRecord] | None = None) -> RunOutcome:
        """``records``: the state DB's rows, when the caller has just read them."""
        self._records = await self.store.records() if records is None else records
        self._intact = await intact_keys(self._records, self.settings.out_dir, self.store)
        await self._consider(Pending(spec) for spec in self.plan.tasks if spec.parent_key is None)
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self.stop_reason is not None:  # stopped before it ran (a signal)
                    tg.start_soon(self._hard_stop)
                self.downloader.attach(tg)
                tg.start_soon(self.submitter.run, tg)
                tg.start_soon(self.poller.run, tg)
                if self.settings.request_type == "async":
                    tg.start_soon(self.poller.steer)
                if self._progress is not None:
                    tg.start_soon(self._ticker)
                while True:
                    self._check_finished()
                    if self._finished.is_set():
                        break
                    await self.ledger.wait_change()
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self.downloader.attach(None)
            if self._progress is not None:
                self._progress(self.snapshot())
        return self._outcome()

    def request_stop(self, reason: str) -> None:
        """Stop submitting, let creates in progress return their taskId, then stop."""
        if self._finished.is_set():
            return
        first = self.stop_reason is None
        self.stop_submitting(reason)
        if first and self._tg is not None:
            self._tg.start_soon(self._hard_stop)

    def on_callback(self, task_id: str, key: str | None = None) -> bool:
        """A callback named ``task_id`` (and the task's ``key``, from its URL): confirm it
        with one status call. A taskId not in flight may be a lost create's: offered to the
        submitter when ``key`` is being created (``run/resolution.py``). False if unknown."""
        if self.poller.on_callback(task_id):
            return True
        return key is not None and self.submitter.resolutions.offer(key, task_id)

    def snapshot(self) -> Progress:
        ledger, settled = self.ledger, self.ledger.settled
        return Progress(
            total=len(self.plan.tasks),
            done=settled[Bucket.DONE],
            failed=settled[Bucket.FAILED] + settled[Bucket.EXPIRED],
            in_flight=ledger.busy,
            downloading=len(ledger.downloading),
            queued=ledger.queued,
            created=ledger.created,
            requests=self.budget.acquired,
            rate_limits=self.budget.rate_limits,
            elapsed=self._clock() - self._started,
        )

    # --- resume ----------------------------------------------------------------------------

    async def _consider(self, pendings: Iterable[Pending]) -> None:
        """Apply the resume rule to tasks whose parent (if any) is on disk, in order, and to
        their chained tasks when they are already done (before the next task). An iterable:
        100,000 roots are never all held at once (that alone costs the collector seconds)."""
        upcoming = iter(pendings)
        stack: list[Pending] = []
        while True:
            item = stack.pop() if stack else next(upcoming, None)
            if item is None:
                return
            spec = item.spec
            record = self._records.pop(spec.key, None)  # decided once: do not keep it
            decision = decide(
                record.state if record else None,
                outputs_intact=spec.key in self._intact,
                policy=self.settings.policy,
                urls_expired=record is not None and urls_expired(record.finished_at, time.time()),
            )
            if decision.action is Action.SUBMIT:
                self.ledger.queue(item)
                continue
            assert record is not None
            if decision.action is Action.SKIP:
                self.ledger.settle(Bucket.DONE, spec)
                if urls_aging(record.finished_at, time.time()):  # rare: reads the parent's images
                    stack.extend(await self._inlined_children(spec, record))
                else:
                    stack.extend(self._children(spec, record.result_urls))
            elif decision.action is Action.POLL:
                assert record.task_id is not None
                self.poller.add_flight(spec, record.task_id, first_delay=0.0)
            elif decision.action is Action.DOWNLOAD:
                self.downloader.start(spec, record.result_urls)
            else:  # held: ambiguous, failed or expired, and the policy leaves it
                if decision.reason is Reason.EXPIRED and record.state is not TaskState.EXPIRED:
                    self.store.mark_expired(spec.key, "result URLs expired before download")
                self.ledger.settle(Bucket(decision.reason.value), spec, record.result_urls)

    async def _open_children(self, spec: TaskSpec, urls: tuple[str, ...]) -> None:
        """``spec``'s outputs are on disk: its chained tasks may start."""
        await self._consider(self._children(spec, urls))
        self.ledger.notify()

    def _children(self, spec: TaskSpec, urls: tuple[str, ...]) -> list[Pending]:
        return [
            Pending(child, url)
            for index, url in enumerate(urls)
            for child in self._chained(spec, index)
        ]

    async def _inlined_children(self, spec: TaskSpec, record: TaskRecord) -> list[Pending]:
        """The chained tasks of a parent whose result URLs may have expired (``images``)."""
        found = []
        for index, url in enumerate(record.result_urls):
            inline = await self.submitter.images.parent(self.settings.out_dir, record, index)
            found += [Pending(child, inline or url) for child in self._chained(spec, index)]
        return found

    def _chained(self, parent: TaskSpec, index: int) -> list[TaskSpec]:
        """The one call into the plan's chaining: the tasks editing output ``index`` of
        ``parent``. Those not in ``plan.tasks`` are remembered, for the total of the plan."""
        children = self.plan.children(parent, index)
        if (unplanned := self.plan.planner.unplanned.get((parent.key, index))) is not None:
            self.last_error = str(unplanned)  # counted failed (TEMPLATE_ERROR), run goes on
        if children and (index > 0 or parent.key in self._on_demand):
            self._on_demand.update(child.key for child in children)
        return children

    # --- what the collaborators may ask (``ledger.Control``) -------------------------------

    def api_ok(self) -> None:
        self._last_ok = self._clock()

    def note_error(self, exc: BaseException) -> None:
        self.last_error = str(exc)

    def api_trouble(self, exc: BaseException) -> None:
        """A call failed even after the client's retries. Keep going while the API answers
        something now and then; stop (resumable) once nothing succeeded for a long while."""
        self.note_error(exc)
        down_for = self._clock() - self._last_ok
        if down_for > self.settings.api_down_after:
            self.request_stop(f"the API failed every call for {down_for:.0f}s: {exc}")

    def stop_submitting(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.submitter.stopped = True
        self.ledger.notify()

    def fail_run(self, exc: FluxPipelineError) -> None:
        """Nothing more is sent; creates already sent get their answer (a 401 too, most
        likely: then they are recorded as never created, not left ambiguous)."""
        if self.fatal is None:
            self.fatal = exc
        self.request_stop("fatal error")

    # --- ending ----------------------------------------------------------------------------

    async def _hard_stop(self) -> None:
        """Creates already sent get ``stop_grace`` to come back with their taskId; those still
        waiting for a token or a connection send nothing more (``Submitter``)."""
        sent, creating = self.submitter.sent, self.ledger.creating
        with anyio.move_on_after(self.settings.stop_grace):
            while sent & creating.keys():
                await self.ledger.wait_change()
        self._finished.set()
        self.ledger.notify()

    def _check_finished(self) -> None:
        ledger = self.ledger
        busy = ledger.busy + len(ledger.downloading) + len(ledger.waiting)
        if busy == 0 and (ledger.queued == 0 or self.stop_reason is not None):
            self._finished.set()

    async def _ticker(self) -> None:
        assert self._progress is not None
        while True:
            await anyio.sleep(self.settings.progress_interval)
            self._progress(self.snapshot())

    def _cut_creates(self) -> None:
        """Creates cut by the stop: ambiguous if their ``submitting`` row was written (they
        may have been sent), else never sent: queued again (not started)."""
        ledger, sent = self.ledger, self.submitter.sent
        for key, pending in list(ledger.creating.items()):
            del ledger.creating[key]
            if key in sent:
                ledger.settle(Bucket.AMBIGUOUS, pending.spec)
            else:
                ledger.queue(pending)
        sent.clear()

    def _outcome(self) -> RunOutcome:
        self._cut_creates()
        planner = self.plan.planner
        buckets = final_buckets(
            self.ledger, self._chained, self._records, lambda: planner.unplanned_count
        )
        buckets.check(len(self.plan.tasks) + len(self._on_demand) + planner.unplanned_count)
        # exit 3 only when a rerun makes progress: the buckets say so, or writes the store
        # failed (a rerun redoes them) (docs/exit-codes.md)
        if self.fatal is not None:
            code = int(self.fatal.exit_code)
        else:
            code = int(exit_code_for(buckets, stopped=bool(self.store.failures)))
        return RunOutcome(
            exit_code=code,
            buckets=buckets,
            created=self.ledger.created,
            elapsed=self._clock() - self._started,
            requests=self.budget.acquired,
            rate_limits=self.budget.rate_limits,
            stop_reason=self.stop_reason,
            error=run_error(self.ledger, self.fatal, self.last_error, self.store.failures),
            ambiguous=sorted(self.ledger.ambiguous),
            created_modes=dict(sorted(self.ledger.created_modes.items())),
            stats=run_stats(self.ledger, self.store, self.budget, self.admission)
            | {"resolved_by_callback": self.submitter.resolved},
        )
