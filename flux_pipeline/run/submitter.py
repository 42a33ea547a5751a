"""Creating tasks: one admission loop, one create call per task (docs/engine.md, docs/states.md).

``submitting`` is made durable at the last moment before the create is sent: inside the
client's ``before_send``, once the request budget's token and a connection are held. A task
still waiting for either at a stop was never sent: it stays ``planned``. The taskId is queued
for the store the moment it is known, and only then is the task counted as created (billed).
A create that provably created nothing (refused for credits or auth, 400, 429, never sent)
goes back to ``planned``; one whose answer was lost is ambiguous: it may have been billed, so
it is never sent again unless the policy says so. In callback mode a lost answer first waits
(bounded) for a callback naming the task's key (``run/resolution.py``): confirmed by one
status call, the task carries on with that taskId, paid once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskGroup

from flux_pipeline.errors import (
    AmbiguousCreateError,
    AuthError,
    InsufficientCreditsError,
    InvalidRequestError,
    RateLimitedError,
    RetryableError,
    StateError,
    TerminalApiError,
)
from flux_pipeline.outcome import AMBIGUOUS_RESUBMITS, Bucket
from flux_pipeline.plan.cost import CostCap, mode_of
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.admission import Admission
from flux_pipeline.run.api import RequestType, build_create_body
from flux_pipeline.run.api_client import ApiClient
from flux_pipeline.run.images import ImageSource
from flux_pipeline.run.ledger import Control, Ledger, Pending
from flux_pipeline.run.resolution import RESOLVE_RECHECK, RESOLVE_WAIT_CAP, Resolutions
from flux_pipeline.run.state_store import StateStore

SPECULATION_RECHECK = 0.02  # seconds between looks at the speculative room while it is full
RETRY_PAUSE_CAP = 5.0  # seconds before a create that met an API error is queued again
CREATE_WINDOW = 5.0  # seconds of create times kept for the poll budget


class _Stopped(Exception):
    """Raised in ``before_send`` once submitting has stopped: the create is not sent."""


class CreateRate:
    """Creates sent in the last few seconds: the poller leaves them their share of the
    request budget."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._times: deque[float] = deque()

    def note(self) -> None:
        self._times.append(self._clock())

    def per_second(self) -> float:
        now, times = self._clock(), self._times
        while times and times[0] < now - CREATE_WINDOW:
            times.popleft()
        return len(times) / CREATE_WINDOW


@dataclass(frozen=True, kw_only=True)
class CreateSettings:
    max_active: int
    request_type: RequestType
    callback_url: str | None
    resubmit_ambiguous: bool
    max_new_tasks: int | None
    api_down_after: float
    max_cost: CostCap | None = None
    # callback mode: how long a lost create waits for its callback (the poll sweep horizon)
    resolve_horizon: Callable[[], float] = field(default=lambda: RESOLVE_WAIT_CAP)


class Submitter:
    def __init__(
        self,
        *,
        ledger: Ledger,
        store: StateStore,
        client: ApiClient,
        admission: Admission,
        images: ImageSource,
        settings: CreateSettings,
        control: Control,
        on_created: Callable[[TaskSpec, str], None],
        rate: CreateRate,
        on_resolved: Callable[[TaskSpec, str], None] | None = None,
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._client = client
        self._admission = admission
        self.images = images  # where the request's images come from (run/images.py)
        self._settings = settings
        self._control = control
        self._on_created = on_created
        self._on_resolved = on_resolved or on_created
        self._rate = rate
        self.stopped = False
        self.resolutions = Resolutions()
        self.sent: set[str] = set()  # keys being created whose ``submitting`` row is written
        self.resolved = 0  # lost creates found again through their callback

    async def run(self, tg: TaskGroup) -> None:
        ledger, limit = self._ledger, self._settings.max_new_tasks
        max_active = self._settings.max_active
        while not self.stopped:
            busy = ledger.busy
            speculative = busy >= max_active
            if speculative and busy >= max_active + self._admission.room(ledger.flights.values):
                recheck = SPECULATION_RECHECK if self._admission.may_speculate() else None
                with anyio.move_on_after(recheck):
                    await ledger.wait_change()
                continue
            pending = ledger.next_pending()
            if pending is None:
                await ledger.wait_change()
                continue
            pending.speculative = speculative
            if limit is not None and ledger.created + len(ledger.creating) >= limit:
                ledger.children.appendleft(pending)
                if ledger.created < limit:  # creates in progress may still come back empty
                    await ledger.wait_change()
                    continue
                self._control.stop_submitting(f"--max-new-tasks {limit} reached")
                return
            if (cap := self._settings.max_cost) is not None and self._over(cap, pending):
                ledger.children.appendleft(pending)
                if ledger.creating:  # creates in progress may still come back empty
                    await ledger.wait_change()
                    continue
                self._control.stop_submitting(cap.stop_line(ledger.spent, pending.spec))
                return
            ledger.creating[pending.spec.key] = pending
            tg.start_soon(self._submit, pending, tg)

    def _over(self, cap: CostCap, pending: Pending) -> bool:
        """Would creating ``pending`` (after those being created) exceed ``cap``?"""
        creating = sum(cap.price(p.spec) for p in self._ledger.creating.values())
        return self._ledger.spent + creating + cap.price(pending.spec) > cap.cap + 1e-9

    def _callback_url(self, spec: TaskSpec) -> str | None:
        """Callback mode: the run's receiver URL with the task's key as its last segment."""
        base = self._settings.callback_url
        return f"{base}/{spec.key}" if base and self._callback_mode else base

    @property
    def _callback_mode(self) -> bool:
        return self._settings.request_type == "callback"

    async def _submit(self, pending: Pending, tg: TaskGroup) -> None:
        """One create. Cancelled (the run's hard stop), the task stays in ``creating``: the
        engine counts it ambiguous if its ``submitting`` row was written, else not started."""
        spec, ledger = pending.spec, self._ledger

        async def before_send() -> None:  # once per attempt; the row is written once
            if self.stopped:  # the token came after the stop: send nothing more
                raise _Stopped
            if spec.key not in self.sent:
                self.sent.add(spec.key)  # enqueued from here on: committed even if cancelled
                await self._store.mark_submitting(spec)

        if self._callback_mode:
            self.resolutions.expect(spec.key)
        try:
            request = await self.images.resolve(spec.request, pending.parent_url)
            body = build_create_body(
                request,
                request_type=self._settings.request_type,
                callback_url=self._callback_url(spec),
            )
            self._rate.note()
            task_id = await self._client.create_task(
                body, speculative=pending.speculative, before_send=before_send
            )
        except _Stopped:
            self._unsent(pending, requeue=True)
        except StateError as exc:  # ``submitting`` not stored (raised in before_send): not sent
            self._leave(spec)
            ledger.children.appendleft(pending)
            self._control.fail_run(exc)
        except InsufficientCreditsError as exc:
            self._unsent(pending, requeue=True)
            self._control.stop_submitting(f"insufficient credits ({exc.message})")
        except AuthError as exc:
            self._unsent(pending, requeue=True)
            self._control.fail_run(exc)
        except InvalidRequestError as exc:
            self._store.mark_failed(spec.key, "INVALID_REQUEST", exc.message)
            self._leave(spec)
            ledger.settle(Bucket.FAILED, spec)
        except AmbiguousCreateError:
            found = await self._resolve(spec) if self._callback_mode else None
            if found is not None:
                self.resolved += 1
                self._created(pending, found, finished=True)
            else:
                self._leave(spec)
                self._ambiguous(pending)
        except RateLimitedError:
            self._unsent(pending, requeue=pending.speculative)
            if pending.speculative:  # the API was still full
                self._admission.rate_limited()
            else:
                self._requeue_later(pending, tg)
        except RetryableError as exc:
            self._unsent(pending)
            self._requeue_later(pending, tg)
            self._control.api_trouble(exc)
        else:
            self._control.api_ok()
            if pending.speculative:
                self._admission.succeeded()
            early = self.resolutions.named(spec.key, task_id)  # its callback came first
            self._created(pending, task_id, finished=early)
        finally:
            self.resolutions.forget(spec.key)
        ledger.notify()

    def _leave(self, spec: TaskSpec) -> None:
        """``spec`` is no longer being created."""
        del self._ledger.creating[spec.key]
        self.sent.discard(spec.key)

    def _created(self, pending: Pending, task_id: str, *, finished: bool = False) -> None:
        """The API returned (or a confirmed callback named) ``task_id``: created, billed.
        ``finished``: its callback came already, so it is polled now (``on_resolved``)."""
        spec = pending.spec
        self._store.mark_submitted(spec.key, task_id)
        self._leave(spec)
        self._ledger.created += 1
        self._ledger.created_modes[mode_of(spec)] += 1
        if self._settings.max_cost is not None:
            self._ledger.spent += self._settings.max_cost.price(spec)
        (self._on_resolved if finished else self._on_created)(spec, task_id)

    def _ambiguous(self, pending: Pending) -> None:
        ledger = self._ledger
        again = pending.ambiguous_retries < AMBIGUOUS_RESUBMITS
        if self._settings.resubmit_ambiguous and again:
            pending.ambiguous_retries += 1
            ledger.children.append(pending)
        else:
            ledger.settle(Bucket.AMBIGUOUS, pending.spec)

    async def _resolve(self, spec: TaskSpec) -> str | None:
        """Callback mode, the create's answer lost: wait for a callback naming ``spec``'s key
        and confirm its taskId with one status call. None: no confirmed callback in time."""
        started = anyio.current_time()
        resolutions = self.resolutions
        while True:
            horizon = min(RESOLVE_WAIT_CAP, self._settings.resolve_horizon())
            left = horizon - (anyio.current_time() - started)
            if left <= 0:
                return None
            task_id = await resolutions.next_candidate(spec.key, within=min(left, RESOLVE_RECHECK))
            if task_id is None:
                continue
            try:
                await self._client.get_status(task_id)
            except AuthError as exc:
                self._control.fail_run(exc)
                return None
            except RetryableError as exc:
                self._control.api_trouble(exc)
                await anyio.sleep(RESOLVE_RECHECK)
                resolutions.retry_later(spec.key, task_id)
                continue
            except TerminalApiError:
                continue  # a taskId the API does not know (forged, garbled): nothing changes
            return task_id

    def _unsent(self, pending: Pending, *, requeue: bool = False) -> None:
        """Nothing was created: back to ``planned`` (if its row was written at all).
        ``requeue``: first in the queue again (submitting stops right after, so it stays not
        started)."""
        key = pending.spec.key
        if key in self.sent:
            self._store.mark_unsent(key)
        self._leave(pending.spec)
        if requeue:
            self._ledger.children.appendleft(pending)

    def _requeue_later(self, pending: Pending, tg: TaskGroup) -> None:
        ledger = self._ledger
        ledger.waiting[pending.spec.key] = pending
        pause = min(RETRY_PAUSE_CAP, self._settings.api_down_after / 4)

        async def later() -> None:
            await anyio.sleep(pause)  # cancelled: the task stays counted as waiting
            del ledger.waiting[pending.spec.key]
            ledger.children.append(pending)
            ledger.notify()

        tg.start_soon(later)
