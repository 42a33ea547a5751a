"""Polling: one loop over a heap of due times for every task in flight (docs/engine.md).

``PollTiming`` places each task's next status call where a completion is likely and is
steered once a second so status calls spend the request budget creates leave over. In
callback mode a callback only moves its task's status call to now. A finished task gives its
slot back at once; a successful one is handed to ``on_succeeded`` for downloading.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from flux_pipeline.errors import AuthError, RetryableError, TaskNotFoundError
from flux_pipeline.outcome import Bucket
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.api import ApiState, TaskStatus
from flux_pipeline.run.api_client import ApiClient
from flux_pipeline.run.budget import TokenBucket
from flux_pipeline.run.ledger import Control, Flight, Ledger
from flux_pipeline.run.scheduler import DueHeap, PollTiming
from flux_pipeline.run.state_store import StateStore

STEER_EVERY = 1.0  # seconds between two steering looks at the status call rate
STEER_SHARE = 0.95  # of the poll budget status calls aim at
MIN_POLL_SHARE = 0.2  # of the request rate status calls always get, whatever creates take
ERROR_BACKOFF_BASE = 2.0  # a status call that failed after the client's retries: 2 s x 2^n
ERROR_BACKOFF_CAP = 60.0


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

    # --- flights ---------------------------------------------------------------------------

    def add_flight(self, spec: TaskSpec, task_id: str, *, first_delay: float | None) -> None:
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
            status = await self._client.get_status(flight.task_id)
            if self._ledger.flights.get(flight.spec.key) is not flight:
                return  # finished meanwhile (a callback and a sweep raced)
        except AuthError as exc:
            self._control.fail_run(exc)
        except TaskNotFoundError as exc:
            self._finish_flight(flight)
            self._store.mark_failed(flight.spec.key, "TASK_NOT_FOUND", exc.message)
            self._ledger.settle(Bucket.FAILED, flight.spec)
        except RetryableError as exc:
            flight.errors += 1
            delay = min(ERROR_BACKOFF_CAP, ERROR_BACKOFF_BASE * 2 ** min(flight.errors, 5))
            self.due.schedule(flight.spec.key, self._clock() + delay)
            self._control.api_trouble(exc)
        else:
            self._control.api_ok()
            self._on_status(flight, status)
        finally:
            self._slots.release()
            self._ledger.notify()

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
            self._store.mark_failed(
                key,
                status.fail_code or "UNKNOWN",
                status.fail_msg or "",
                create_time=status.create_time,
                complete_time=status.complete_time,
                cost_time=status.cost_time,
            )
            self._ledger.settle(Bucket.FAILED, flight.spec)
            return
        self._store.mark_succeeded(
            key,
            status.result_urls,
            create_time=status.create_time,
            complete_time=status.complete_time,
            cost_time=status.cost_time,
        )
        self._on_succeeded(flight.spec, status.result_urls)
