"""Polling: one loop over a heap of due times for every task in flight (docs/engine.md).

``PollTiming`` places each task's next status call where a completion is likely and is
steered once a second so status calls spend the request budget creates leave over. In
callback mode a callback only moves its task's status call to now. A finished task gives its
slot back at once; a successful one is handed to ``on_succeeded`` for downloading.

One task's bad answer concerns that task only (docs/engine.md): a status call refused (a 4xx
other than 401/404, a redirect) or an answer that cannot be handled at all (any exception:
too deep to parse, a bug) is tried again with backoff ``STATUS_ATTEMPTS`` times, then the task
is *held* for this run: its state stays ``submitted`` with its taskId, it counts as in flight
and a rerun polls it again. So is a task whose status calls keep failing (5xx, network) while
the run goes on: after ``MAX_STATUS_ERRORS`` (about eight minutes of backoff). Only a 401
ends the run. An answer that is clearly wrong about a task (a taskId already given to another
task, more than ``MAX_RESULT_URLS`` results) fails that task with a code saying so; its taskId
stays recorded.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from flux_pipeline.errors import (
    ApiError,
    AuthError,
    FluxPipelineError,
    ProtocolError,
    RetryableError,
    TaskNotFoundError,
)
from flux_pipeline.outcome import Bucket
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.api import ApiState, TaskStatus
from flux_pipeline.run.api_client import ApiClient
from flux_pipeline.run.budget import TokenBucket
from flux_pipeline.run.ledger import Control, Flight, Ledger, describe
from flux_pipeline.run.scheduler import DueHeap, PollTiming
from flux_pipeline.run.state_store import StateStore

STEER_EVERY = 1.0  # seconds between two steering looks at the status call rate
STEER_SHARE = 0.95  # of the poll budget status calls aim at
MIN_POLL_SHARE = 0.2  # of the request rate status calls always get, whatever creates take
ERROR_BACKOFF_BASE = 2.0  # a status call that failed after the client's retries: 2 s x 2^n
ERROR_BACKOFF_CAP = 60.0
STATUS_ATTEMPTS = 4  # unusable status answers of one task in a row before it is held
MAX_STATUS_ERRORS = 12  # status calls of one task failing after the client's retries: held
MAX_RESULT_URLS = 100  # a success with more result URLs fails its task (TOO_MANY_RESULTS)
MAX_COST_MS = 7 * 24 * 3600 * 1000  # a costTime beyond a week is not learned from


class TaskTrouble(FluxPipelineError):
    """What the run is told about one task held or failed by its own answer."""


class Poller:
    def __init__(
        self,
        *,
        ledger: Ledger,
        store: StateStore,
        client: ApiClient,
        budget: TokenBucket,
        timing: PollTiming,
        callback_mode: bool,
        max_status_calls: int,
        creates_per_second: Callable[[], float],
        control: Control,
        on_succeeded: Callable[[TaskSpec, tuple[str, ...]], None],
        clock: Callable[[], float],
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._client = client
        self._budget = budget
        self.timing = timing
        self._callback_mode = callback_mode
        self._creates_per_second = creates_per_second
        self._control = control
        self._on_succeeded = on_succeeded
        self._clock = clock
        self.due = DueHeap(clock)
        self._slots = anyio.Semaphore(max_status_calls)
        self.polled_once = 0  # flights polled at least once (they share the poll budget)
        self.status_calls = 0
        self._task_ids: dict[str, str] = {}  # every taskId polled in this run -> its task

    # --- flights ---------------------------------------------------------------------------

    def add_flight(self, spec: TaskSpec, task_id: str, *, first_delay: float | None) -> None:
        other = self._task_ids.setdefault(task_id, spec.key)
        if other != spec.key:  # two tasks of this run, one taskId: the first keeps it
            message = f"taskId {task_id} was already given to another task of this run"
            self._store.mark_failed(spec.key, "DUPLICATE_TASK_ID", message)
            self._ledger.settle(Bucket.FAILED, spec)
            self._tell(spec, task_id, message)
            return
        flight = Flight(spec, task_id, self._clock())
        self._ledger.flights[spec.key] = flight
        self._ledger.by_task_id[task_id] = spec.key
        delay = first_delay if first_delay is not None else self._next_delay(flight)
        self.due.schedule(spec.key, self._clock() + delay)

    def track(self, spec: TaskSpec, task_id: str) -> None:
        """A task just created: first status call when the learned timing says."""
        self.add_flight(spec, task_id, first_delay=None)

    def on_callback(self, task_id: str) -> bool:
        """A callback named ``task_id``: confirm it with one status call. False if unknown."""
        key = self._ledger.by_task_id.get(task_id)
        if key is None:
            return False
        self.due.schedule(key, self._clock())
        return True

    def _finish_flight(self, flight: Flight) -> None:
        self._ledger.flights.pop(flight.spec.key, None)
        self._ledger.by_task_id.pop(flight.task_id, None)
        self.due.discard(flight.spec.key)
        if flight.polls > 0:
            self.polled_once -= 1

    # --- timing ----------------------------------------------------------------------------

    def poll_rate(self) -> float:
        """Status calls a second the budget leaves over once creates are served."""
        rate = self._budget.effective_rate
        return max(rate * MIN_POLL_SHARE, rate - self._creates_per_second())

    def _next_delay(self, flight: Flight) -> float:
        return self.timing.next_delay(
            age=self._clock() - flight.started,
            polls=flight.polls,
            waiting=self.polled_once,
            poll_rate=self.poll_rate(),
            callback=self._callback_mode,
        )

    async def steer(self) -> None:
        """Once a second: keep status calls near the budget creates leave over."""
        last_calls, last_time = self.status_calls, self._clock()
        while True:
            await anyio.sleep(STEER_EVERY)
            now = self._clock()
            spent = (self.status_calls - last_calls) / max(now - last_time, 1e-6)
            last_calls, last_time = self.status_calls, now
            if self._ledger.flights:
                self.timing.steer(spent=spent, budget=STEER_SHARE * self.poll_rate())

    # --- status calls ----------------------------------------------------------------------

    async def run(self, tg: TaskGroup) -> None:
        flights = self._ledger.flights
        while True:
            key = await self.due.next_due()
            flight = flights.get(key)
            if flight is None:
                continue
            await self._slots.acquire()
            tg.start_soon(self._poll, flight)

    async def _poll(self, flight: Flight) -> None:
        self.status_calls += 1
        try:
            await self._poll_once(flight)
        finally:
            self._slots.release()
            self._ledger.notify()

    def _current(self, flight: Flight) -> bool:
        """False once the flight finished meanwhile (a callback and a sweep raced)."""
        return self._ledger.flights.get(flight.spec.key) is flight

    async def _poll_once(self, flight: Flight) -> None:
        try:
            status = await self._client.get_status(flight.task_id)
        except AuthError as exc:
            self._control.fail_run(exc)
        except TaskNotFoundError as exc:
            if self._current(flight):
                self._finish_flight(flight)
                self._store.mark_failed(flight.spec.key, "TASK_NOT_FOUND", exc.message)
                self._ledger.settle(Bucket.FAILED, flight.spec)
        except ProtocolError as exc:  # this task's answer is unreadable (the API is up)
            if self._current(flight):
                self._unusable(flight, describe(exc), unexpected=False)
        except RetryableError as exc:  # the API is in trouble, maybe not only this task
            flight.errors += 1
            if flight.errors >= MAX_STATUS_ERRORS and self._current(flight):
                self._hold(flight, f"{describe(exc)} ({flight.errors} failed status calls)")
                self._control.api_trouble(exc)
                return
            delay = min(ERROR_BACKOFF_CAP, ERROR_BACKOFF_BASE * 2 ** min(flight.errors, 5))
            self.due.schedule(flight.spec.key, self._clock() + delay)
            self._control.api_trouble(exc)
        except ApiError as exc:  # refused for this task only (a 4xx, a redirect, ...)
            if self._current(flight):
                self._unusable(flight, describe(exc), unexpected=False)
        except Exception as exc:  # an answer we could not handle at all: this task only
            if self._current(flight):
                self._unusable(flight, describe(exc), unexpected=True)
        else:
            if not self._current(flight):
                return
            self._control.api_ok()
            flight.refusals = 0
            try:
                self._on_status(flight, status)
            except Exception as exc:  # a bug: contained to this task, and counted
                self._ledger.unexpected += 1
                if self._current(flight):
                    self._hold(flight, f"unexpected {describe(exc)}")
                else:
                    self._tell(flight.spec, flight.task_id, f"unexpected {describe(exc)}")

    def _unusable(self, flight: Flight, reason: str, *, unexpected: bool) -> None:
        """A status answer unusable for this task: try again later, a few times, then hold."""
        flight.refusals += 1
        if unexpected:
            reason = f"unexpected {reason}"
        if flight.refusals < STATUS_ATTEMPTS:
            delay = min(ERROR_BACKOFF_CAP, ERROR_BACKOFF_BASE * 2 ** min(flight.refusals, 5))
            self.due.schedule(flight.spec.key, self._clock() + delay)
            self._tell(flight.spec, flight.task_id, f"{reason} (status call tried again)")
            return
        if unexpected:
            self._ledger.unexpected += 1
        self._hold(flight, f"{reason} ({STATUS_ATTEMPTS} status calls)")

    def _hold(self, flight: Flight, reason: str) -> None:
        """Keep the task ``submitted`` with its taskId: in flight, a rerun polls it again."""
        self._finish_flight(flight)
        self._ledger.hold(flight.spec, reason)
        self._tell(flight.spec, flight.task_id, f"held for this run: {reason}")

    def _tell(self, spec: TaskSpec, task_id: str, text: str) -> None:
        self._control.note_error(TaskTrouble(f"{spec.readable_id} (taskId {task_id}): {text}"))

    def _on_status(self, flight: Flight, status: TaskStatus) -> None:
        if flight.polls == 0:
            self.polled_once += 1
        flight.polls += 1
        if not status.state.finished:
            flight.checked_age = self._clock() - flight.started
            self.due.schedule(flight.spec.key, self._clock() + self._next_delay(flight))
            return
        # everything that may fail comes before the flight is finished: an exception leaves
        # the flight current, and ``_poll_once`` holds it
        key, urls = flight.spec.key, tuple(status.result_urls)
        cost = status.cost_time
        if isinstance(cost, int) and 0 <= cost <= MAX_COST_MS:
            self.timing.observe(cost / 1000.0)
        times = {
            "create_time": status.create_time,
            "complete_time": status.complete_time,
            "cost_time": status.cost_time,
        }
        if status.state is ApiState.FAILED:
            code = status.fail_code or "UNKNOWN"
            self._store.mark_failed(key, code, status.fail_msg or "", **times)
            self._finish_flight(flight)
            self._ledger.settle(Bucket.FAILED, flight.spec)
            return
        if len(urls) > MAX_RESULT_URLS:
            message = f"the API answered {len(urls)} result URLs (at most {MAX_RESULT_URLS})"
            self._store.mark_failed(key, "TOO_MANY_RESULTS", message, **times)
            self._finish_flight(flight)
            self._ledger.settle(Bucket.FAILED, flight.spec)
            self._tell(flight.spec, flight.task_id, message)
            return
        self._store.mark_succeeded(key, urls, **times)
        self._finish_flight(flight)
        self._on_succeeded(flight.spec, urls)
