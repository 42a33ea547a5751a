"""The state DB's one writer: group commit, a failing statement contained to its task.

Writes are queued and committed in batches, one transaction and one worker-thread call a
batch (``Store`` queues them, ``Writer.run`` commits them). What makes it hard to stop:

- every value is made storable before it reaches SQL (``storable``): an integer outside
  SQLite's 64 bits becomes NULL, a string that is not valid UTF-8 (a lone surrogate from a
  JSON answer) has the offending characters replaced;
- a batch that fails is rolled back and tried again statement by statement; a statement that
  still fails is recorded as one line naming its task (``failures``) and the writer goes on.
  Later writes of that task in the run are skipped (not applied out of order), so the task
  stays in its last recorded state, one a rerun handles (docs/resume.md);
- the taskId write (``submitted``) and the ``submitting`` write are *critical*: one that
  cannot be stored, or a full disk, is reported to ``on_fatal`` (the engine stops submitting
  and the run ends with exit 2 once everything else is flushed; docs/exit-codes.md);
- critical writes jump ahead of the rest (a batch holds at most ``MAX_BATCH`` statements,
  the critical ones first among writes of other tasks), so a taskId is never held behind a
  long queue of unrelated work.

Only cancellation ends the writer (``open_store`` closing it); it never stops on an error.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from flux_pipeline.errors import StateError
from flux_pipeline.run.store_schema import rollback

MAX_BATCH = 2000  # statements in one transaction (critical writes come first)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_FAILURES_KEPT = 100  # failure lines kept for the run's report; all are counted


def storable(value: Any) -> Any:
    """``value`` as SQLite can store it: out-of-range integers are NULL (unknown), strings
    are valid UTF-8."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _locked(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


def storable_params(params: tuple[Any, ...]) -> tuple[Any, ...]:
    """``params`` with every value ``storable``; the common case (every value fine) is one
    quick look at each value."""
    for value in params:
        kind = type(value)
        if (kind is int and not INT64_MIN <= value <= INT64_MAX) or (
            kind is str and not value.isascii()
        ):
            return tuple(storable(p) for p in params)
    return params


def disk_full(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)


@dataclass(slots=True)
class Write:
    sql: str
    params: tuple[Any, ...]
    key: str | None = None  # the task it belongs to (None: the run table)
    what: str = "a write"  # for a failure line: "taskId t1", "state succeeded", ...
    critical: bool = False
    done: anyio.Event | None = None
    error: str | None = None  # why it was not stored


def take_batch(queue: list[Write], limit: int = MAX_BATCH) -> tuple[list[Write], list[Write]]:
    """(the next batch, what stays queued). Up to ``limit`` writes in order, plus every
    critical write further back that no write of its own task precedes in what stays."""
    if len(queue) <= limit:
        return queue, []
    batch, rest = queue[:limit], []
    held_keys: set[str | None] = set()
    for write in queue[limit:]:
        if write.critical and write.key not in held_keys:
            batch.append(write)
        else:
            rest.append(write)
            held_keys.add(write.key)
    return batch, rest


class Writer:
    """Commits queued ``Write``s; ``Store`` owns the queue's public face."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self.limiter = anyio.CapacityLimiter(1)
        self.queue: list[Write] = []
        self.committing: list[Write] = []
        self.wake = anyio.Event()
        self.committed = anyio.Event()  # set (and renewed) after every batch
        self.closing = False
        self.failures: list[str] = []  # one line per write not stored (first ones)
        self.failed = 0
        self.fatal: StateError | None = None
        self.on_fatal: Callable[[StateError], None] | None = None
        self.touched: set[str] = set()  # keys written since ``Store.take_touched``
        self.batches = 0
        self.writes = 0
        self.write_seconds = 0.0
        self._broken: set[str] = set()  # tasks with a write not stored: later ones skipped

    def add(self, write: Write) -> Write:
        write.params = storable_params(write.params)
        if write.key is not None:
            self.touched.add(write.key)
        self.queue.append(write)
        self.wake.set()
        return write

    async def run(self) -> None:
        """Commit batches until cancelled or closed with nothing left."""
        while True:
            if not self.queue:
                if self.closing:
                    return
                await self.wake.wait()
                self.wake = anyio.Event()
                continue
            await self.commit_next()

    async def commit_next(self) -> None:
        batch, self.queue = take_batch(self.queue)
        self.committing = batch
        with anyio.CancelScope(shield=True):
            try:
                failed = await anyio.to_thread.run_sync(
                    self._commit_sync, batch, limiter=self.limiter
                )
                self._settle(batch, failed)
            finally:
                self.committing = []
                for write in batch:
                    if write.done is not None:
                        write.done.set()
                event, self.committed = self.committed, anyio.Event()
                event.set()

    async def wait_for(self, writes: list[Write], *, running: Callable[[], bool]) -> None:
        """Until every one of ``writes`` is committed: batch by batch while the writer task is
        ``running``, else committed here. ``writes`` are held, so their ids stay theirs."""
        while writes:
            if running():
                await self.committed.wait()
            else:
                await self.drain()
            left = {id(write) for write in (*self.committing, *self.queue)}
            writes = [write for write in writes if id(write) in left]

    async def drain(self) -> None:
        """Commit everything queued, here (used when no writer task runs)."""
        while self.queue:
            await self.commit_next()

    # --- in the worker thread ----------------------------------------------------------

    def _commit_sync(self, batch: list[Write]) -> list[tuple[Write, BaseException]]:
        """One transaction for the batch; on failure, one per statement. Returns the writes
        not stored, with their error."""
        started = time.perf_counter()
        try:
            live = [w for w in batch if not self._skipped(w)]
            try:
                self._transaction(live)
                return [(w, _SKIPPED) for w in batch if w.error is not None]
            except Exception:  # any failure: try each statement alone
                rollback(self.db)
            failed: list[tuple[Write, BaseException]] = []
            locked: BaseException | None = None  # a lock held past busy_timeout: no more tries
            for write in batch:
                if write.error is not None or self._skipped(write):
                    failed.append((write, _SKIPPED))
                    continue
                if locked is not None:
                    failed.append((write, locked))
                    continue
                try:
                    self._transaction([write])
                    if write.critical and write.key is not None:
                        self._broken.discard(write.key)  # a fresh attempt of that task
                except Exception as exc:  # recorded: the writer goes on
                    rollback(self.db)
                    failed.append((write, exc))
                    if write.key is not None:
                        self._broken.add(write.key)
                    if _locked(exc):
                        locked = exc
            return failed
        finally:
            self.write_seconds += time.perf_counter() - started  # SQLite's own time

    def _skipped(self, write: Write) -> bool:
        if write.key in self._broken and not write.critical:
            write.error = "not stored: an earlier write of this task could not be stored"
            return True
        return False

    def _transaction(self, writes: Sequence[Write]) -> None:
        """Consecutive writes of the same statement go in one executemany."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        i = 0
        while i < len(writes):
            j = i
            while j < len(writes) and writes[j].sql is writes[i].sql:
                j += 1
            db.executemany(writes[i].sql, [w.params for w in writes[i:j]])
            i = j
        db.execute("COMMIT")

    # --- back in the event loop ----------------------------------------------------------

    def _settle(self, batch: list[Write], failed: list[tuple[Write, BaseException]]) -> None:
        self.batches += 1
        self.writes += len(batch) - len(failed)
        for write, exc in failed:
            if exc is not _SKIPPED:
                write.error = f"{type(exc).__name__}: {exc}"
            self.failed += 1
            line = f"{self.path}: could not store {write.what} of task {write.key}: {write.error}"
            if len(self.failures) < MAX_FAILURES_KEPT:
                self.failures.append(line)
            if disk_full(exc):
                self._stop(
                    f"{self.path}: the disk is full ({exc}): submitting stopped, nothing "
                    "more is created; free some space and run the same command again"
                )
            elif write.critical:
                self._stop(line)

    def _stop(self, message: str) -> None:
        if self.fatal is not None:
            return
        self.fatal = StateError(message)
        if self.on_fatal is not None:
            self.on_fatal(self.fatal)


class _Skipped(Exception):
    pass


_SKIPPED = _Skipped("skipped")
