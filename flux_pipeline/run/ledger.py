"""The engine's shared state: where every task of the run is right now (docs/engine.md).

A task considered by the engine is at every moment in exactly one place: queued (``children``
first, then ``roots``), creating, waiting to be queued again after an API error, in flight at
the API, downloading, or settled in a final bucket. Moves between places never await in
between, so the places add up to the tasks considered at any moment, also after the run's
task group is cancelled. The submitter, the poller and the downloader share one ``Ledger``
and wake each other through ``notify``.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from flux_pipeline.errors import FluxPipelineError
from flux_pipeline.outcome import Bucket
from flux_pipeline.plan.tasks import TaskSpec

REASON_CHARS = 300  # a recorded reason is one line of at most this many characters


def describe(exc: BaseException) -> str:
    """One line about ``exc``: its type and the first line of its message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line[:REASON_CHARS]


@dataclass(slots=True)
class Flight:
    """A task the API has accepted and not yet finished."""

    spec: TaskSpec
    task_id: str
    started: float  # monotonic
    polls: int = 0
    errors: int = 0
    refusals: int = 0  # status answers unusable for this task, in a row
    checked_age: float = 0.0  # age when the API last said "not finished"


@dataclass(slots=True)
class Pending:
    spec: TaskSpec
    parent_url: str | None = None
    ambiguous_retries: int = 0
    speculative: bool = False


@dataclass(frozen=True, slots=True)
class Closed:
    """A task that will not open its chained tasks in this run, and its known result URLs
    (the report plans chained tasks for every one of them)."""

    spec: TaskSpec
    urls: tuple[str, ...]
    blocks: (
        bool  # failed, expired or ambiguous: its chained tasks are blocked, not merely not started
    )


class Control(Protocol):
    """What the collaborators may ask of the run as a whole."""

    def api_ok(self) -> None: ...

    def api_trouble(self, exc: BaseException) -> None: ...

    def note_error(self, exc: BaseException) -> None: ...

    def stop_submitting(self, reason: str) -> None: ...

    def request_stop(self, reason: str) -> None: ...

    def fail_run(self, exc: FluxPipelineError) -> None: ...


@dataclass(eq=False)
class Ledger:
    children: deque[Pending] = field(default_factory=deque)  # queued ahead of new roots
    roots: deque[Pending] = field(default_factory=deque)
    creating: dict[str, Pending] = field(default_factory=dict)
    waiting: dict[str, Pending] = field(default_factory=dict)  # re-queued after a pause
    flights: dict[str, Flight] = field(default_factory=dict)
    by_task_id: dict[str, str] = field(default_factory=dict)
    downloading: dict[str, tuple[TaskSpec, tuple[str, ...]]] = field(default_factory=dict)
    settled: Counter[Bucket] = field(default_factory=Counter)
    closed: list[Closed] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    # tasks kept as they are for this run, with why (readable id -> reason): a rerun retries
    held: dict[str, str] = field(default_factory=dict)
    unexpected: int = 0  # tasks held or failed by an exception nobody expected (a bug)
    created: int = 0
    created_modes: Counter[str] = field(default_factory=Counter)  # created (billed), by mode
    spent: float = 0.0  # the price of the tasks created (run --max-cost, plan/cost.py)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    # --- waking ----------------------------------------------------------------------------

    def notify(self) -> None:
        """Wake everyone waiting for a change of the run's state."""
        event, self._changed = self._changed, anyio.Event()
        event.set()

    async def wait_change(self) -> None:
        await self._changed.wait()

    # --- queues ----------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self.roots) + len(self.children)

    @property
    def busy(self) -> int:
        """Tasks taking a slot at the API: in flight, or being created."""
        return len(self.flights) + len(self.creating)

    def next_pending(self) -> Pending | None:
        if self.children:
            return self.children.popleft()
        if self.roots:
            return self.roots.popleft()
        return None

    def queue(self, pending: Pending) -> None:
        (self.roots if pending.spec.parent_key is None else self.children).append(pending)

    # --- final buckets ---------------------------------------------------------------------

    def settle(self, bucket: Bucket, spec: TaskSpec, urls: tuple[str, ...] = ()) -> None:
        """Count ``spec`` in ``bucket`` for good; its chained tasks stay behind unless done."""
        self.settled[bucket] += 1
        if bucket is Bucket.AMBIGUOUS:
            self.ambiguous.append(spec.readable_id)
        if bucket is not Bucket.DONE:
            # no images and a rerun does not retry it: its chained tasks are blocked
            blocks = bucket in (Bucket.FAILED, Bucket.EXPIRED, Bucket.AMBIGUOUS)
            self.closed.append(Closed(spec, urls, blocks))

    def hold(self, spec: TaskSpec, reason: str, urls: tuple[str, ...] = ()) -> None:
        """Leave ``spec`` in its recorded state for this run (``submitted`` or ``succeeded``:
        in flight, a rerun takes it up again), with ``reason`` kept for the run's ending."""
        self.held[spec.readable_id] = reason
        self.settle(Bucket.IN_FLIGHT, spec, urls)

    def still_open(self) -> list[Closed]:
        """The tasks left unfinished at the end: their chained tasks were not started."""
        left = [p.spec for p in (*self.children, *self.roots, *self.creating.values())]
        left += [p.spec for p in self.waiting.values()]
        left += [f.spec for f in self.flights.values()]
        found = [Closed(spec, (), False) for spec in left]
        found += [Closed(spec, urls, False) for spec, urls in self.downloading.values()]
        return found


def run_error(
    ledger: Ledger, fatal: BaseException | None, last_error: str | None, failures: list[str]
) -> str | None:
    """The run's error: the fatal one, else the last one with how many tasks were held or
    met an unexpected error and how many writes the state DB could not store."""
    if fatal is not None:
        return str(fatal)
    parts = []
    if ledger.unexpected:
        parts.append(f"{ledger.unexpected} task(s) met an unexpected error (please report it)")
    if ledger.held:
        parts.append(f"{len(ledger.held)} task(s) held for this run (a rerun retries them)")
    if failures:
        parts.append(f"{len(failures)} write(s) not stored (a rerun redoes them): {failures[0]}")
    if not parts:
        return last_error
    return "; ".join(parts) + (f"; last: {last_error}" if last_error else "")
