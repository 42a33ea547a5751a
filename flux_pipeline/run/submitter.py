"""Creating tasks: one admission loop, one create call per task (docs/engine.md, docs/states.md).

``submitting`` is durable before the create is sent and the taskId is queued for the store the
moment it is known. A create that provably created nothing (refused for credits or auth, 429,
never sent) goes back to ``planned``; one whose answer was lost is ambiguous: it may have been
billed, so it is never sent again unless the policy says so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

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
)
from flux_pipeline.outcome import Bucket
from flux_pipeline.plan.tasks import TaskSpec, resolve_request
from flux_pipeline.run.admission import Admission
from flux_pipeline.run.api import RequestType, build_create_body
from flux_pipeline.run.api_client import ApiClient
from flux_pipeline.run.ledger import Control, Ledger, Pending
from flux_pipeline.run.state_store import StateStore

SPECULATION_RECHECK = 0.02  # seconds between looks at the speculative room while it is full
AMBIGUOUS_RESUBMITS = 2  # with --resubmit-ambiguous: creates of one task whose answer was lost
RETRY_PAUSE_CAP = 5.0  # seconds before a create that met an API error is queued again
CREATE_WINDOW = 5.0  # seconds of create times kept for the poll budget


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


class Submitter:
    def __init__(
        self,
        *,
        ledger: Ledger,
        store: StateStore,
        client: ApiClient,
        admission: Admission,
        local_image: Callable[[str], str],
        settings: CreateSettings,
        control: Control,
        on_created: Callable[[TaskSpec, str], None],
        rate: CreateRate,
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._client = client
        self._admission = admission
        self._local_image = local_image
        self._settings = settings
        self._control = control
        self._on_created = on_created
        self._rate = rate
        self.stopped = False

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
            if limit is not None and ledger.created >= limit:
                ledger.children.appendleft(pending)
                self._control.stop_submitting(f"--max-new-tasks {limit} reached")
                return
            ledger.creating[pending.spec.key] = pending
            ledger.created += 1
            tg.start_soon(self._submit, pending, tg)

    async def _submit(self, pending: Pending, tg: TaskGroup) -> None:
        """One create. Cancelled (the run's hard stop), the task stays counted as creating."""
        spec, ledger = pending.spec, self._ledger
        try:
            await self._store.mark_submitting(spec)
            request = resolve_request(
                spec.request, parent_image_url=pending.parent_url, local_image=self._local_image
            )
            body = build_create_body(
                request,
                request_type=self._settings.request_type,
                callback_url=self._settings.callback_url,
            )
            self._rate.note()
            task_id = await self._client.create_task(body, speculative=pending.speculative)
        except StateError as exc:  # ``submitting`` not stored: nothing was sent
            del ledger.creating[spec.key]
            ledger.created -= 1
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
            del ledger.creating[spec.key]
            ledger.settle(Bucket.FAILED, spec)
        except AmbiguousCreateError:
            del ledger.creating[spec.key]
            again = pending.ambiguous_retries < AMBIGUOUS_RESUBMITS
            if self._settings.resubmit_ambiguous and again:
                pending.ambiguous_retries += 1
                ledger.children.append(pending)
            else:
                ledger.settle(Bucket.AMBIGUOUS, spec)
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
            self._store.mark_submitted(spec.key, task_id)
            del ledger.creating[spec.key]
            self._on_created(spec, task_id)
        ledger.notify()

    def _unsent(self, pending: Pending, *, requeue: bool = False) -> None:
        """Nothing was created: back to ``planned``, and not counted as created. ``requeue``:
        first in the queue again (submitting stops right after, so it stays not started)."""
        self._store.mark_unsent(pending.spec.key)
        del self._ledger.creating[pending.spec.key]
        self._ledger.created -= 1
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
