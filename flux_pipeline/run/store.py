"""The state DB: every task transition of docs/states.md, in SQLite (WAL), through one writer.

A task has a row from its first ``submitting`` on; a task without a row is ``planned``.
Writes are queued and committed by a single writer task in batches (group commit, one worker
thread call and one transaction a batch; reads go through aiosqlite): a caller
that must not act before its write is durable (``submitting`` before the create is sent)
awaits ``Store.write(...)``; others use ``Store.enqueue(...)``. WAL with
``synchronous=NORMAL`` loses nothing on a process crash (only on power loss).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
from anyio.abc import TaskGroup

from flux_pipeline import redact
from flux_pipeline.errors import StateError
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.store_import import import_records as import_records
from flux_pipeline.run.store_schema import (
    MIGRATIONS as MIGRATIONS,
)
from flux_pipeline.run.store_schema import (
    OPEN_LOCK_WAIT_MS,
    OUTPUT_COLUMNS,
    OUTPUT_ORDER,
    RUN_FIELDS,
    SQL_DOWNLOADED,
    SQL_EXPIRED,
    SQL_FAILED,
    SQL_FINGERPRINT,
    SQL_GENERATIONS,
    SQL_LAST_RUN,
    SQL_OUTPUT,
    SQL_OUTPUT_MEMO,
    SQL_SUBMITTED,
    SQL_SUBMITTING,
    SQL_SUCCEEDED,
    SQL_UNSENT,
    TASK_COLUMNS,
    WRITER_LOCK_WAIT_MS,
    output_from_row,
    output_row,
    reads,
    record_from_row,
    sqlite_problem,
    submitting_row,
)
from flux_pipeline.run.store_schema import (
    migrate as migrate,
)
from flux_pipeline.run.store_schema import (
    prepare as prepare,
)
from flux_pipeline.run.store_writer import Write, Writer
from flux_pipeline.states import OutputRecord, TaskRecord


class Store:
    """The state DB of one run. Open with ``Store.open(path)`` as an async context manager;
    ``start(task_group)`` launches the writer (``store_writer.Writer``), ``aclose`` flushes
    it. A write that cannot be stored never stops the writer (see ``store_writer``)."""

    def __init__(self, db: aiosqlite.Connection, writer: sqlite3.Connection, path: Path) -> None:
        self._db = db  # reads, and the few writes of the run table
        self._w = Writer(writer, path)  # transitions: one batch = one call into a thread
        self.path = path
        self._writer_done = anyio.Event()
        self._writer_started = False
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> Store:
        await anyio.to_thread.run_sync(prepare, path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open the state DB: {exc}") from exc
        try:
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute(f"PRAGMA busy_timeout={OPEN_LOCK_WAIT_MS}")
            writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            writer.execute("PRAGMA synchronous=NORMAL")
            writer.execute(f"PRAGMA busy_timeout={WRITER_LOCK_WAIT_MS}")
        except sqlite3.Error as exc:
            with anyio.CancelScope(shield=True):
                await db.close()  # its worker thread would keep the process alive
            raise StateError(f"{path}: cannot open the state DB: {exc}") from exc
        return cls(db, writer, path)

    # --- the writer ------------------------------------------------------------------------

    @property
    def batches(self) -> int:
        return self._w.batches

    @property
    def writes(self) -> int:
        return self._w.writes

    @property
    def write_seconds(self) -> float:
        return self._w.write_seconds

    @property
    def failures(self) -> list[str]:
        """One line per write that could not be stored (the first ``MAX_FAILURES_KEPT``)."""
        return self._w.failures

    @property
    def fatal(self) -> StateError | None:
        """Set once a taskId (or ``submitting``) could not be stored, or the disk is full."""
        return self._w.fatal

    def watch(self, on_fatal: Callable[[StateError], None]) -> None:
        """Call ``on_fatal`` (once) when the run must stop submitting (see ``fatal``)."""
        self._w.on_fatal = on_fatal
        if self._w.fatal is not None:
            on_fatal(self._w.fatal)

    def start(self, tg: TaskGroup) -> None:
        self._writer_started = True
        tg.start_soon(self._writer)

    async def _writer(self) -> None:
        try:
            await self._w.run()
        finally:
            self._writer_done.set()

    def enqueue(
        self,
        sql: str,
        params: tuple[Any, ...],
        *,
        key: str | None = None,
        what: str = "a write",
        critical: bool = False,
    ) -> Write:
        """Queue a write; never raises (a write not stored is recorded by the writer). Every
        string in it is redacted first (``redact``: nothing secret is stored)."""
        params = redact.scrub_params(params)
        return self._w.add(Write(sql, params, key=key, what=what, critical=critical))

    async def write(self, sql: str, params: tuple[Any, ...], **kw: Any) -> None:
        """Queue a write and wait until it is committed; ``StateError`` if it was not."""
        write = self.enqueue(sql, params, **kw)
        write.done = anyio.Event()
        if not self._writer_started or self._w.closing:
            await self.flush()
        else:
            with anyio.CancelScope(shield=True):
                await write.done.wait()
        if write.error is not None:
            raise StateError(
                f"{self.path}: could not store {write.what} of task {write.key}: {write.error}"
            )

    async def flush(self) -> None:
        """Commit everything queued now (used when no writer task runs)."""
        with anyio.CancelScope(shield=True):
            await self._w.drain()

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            self._w.closing = True
            self._w.wake.set()
            if self._writer_started:
                await self._writer_done.wait()
            await self.flush()
            await self._db.close()
            self._w.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- transitions -----------------------------------------------------------------------

    async def mark_submitting(self, spec: TaskSpec) -> None:
        """Durable before the create is sent (docs/states.md). Refused (``StateError``) once
        the store is ``fatal``: nothing more is created whose taskId may not be stored."""
        if self._w.fatal is not None:
            raise StateError(str(self._w.fatal))
        now = time.time()
        await self.write(
            SQL_SUBMITTING,
            submitting_row(spec, now),
            key=spec.key,
            what="state submitting",
            critical=True,
        )

    def mark_submitted(self, key: str, task_id: str) -> None:
        """Queued the moment the taskId is known, ahead of other work (critical). Not
        awaited: polling need not wait for the commit, and every stop (signal, error, end)
        flushes the queue in a shielded scope."""
        now = time.time()
        what = f"taskId {task_id}"
        self.enqueue(SQL_SUBMITTED, (task_id, now, now, key), key=key, what=what, critical=True)

    def mark_unsent(self, key: str) -> None:
        """The create provably created nothing (refused, 429, never left): back to planned."""
        self.enqueue(SQL_UNSENT, (time.time(), key), key=key, what="state planned (unsent)")

    def mark_succeeded(
        self,
        key: str,
        urls: Sequence[str],
        *,
        create_time: int | None,
        complete_time: int | None,
        cost_time: int | None,
    ) -> None:
        now = time.time()
        self.enqueue(
            SQL_SUCCEEDED,
            (json.dumps(list(urls)), create_time, complete_time, cost_time, now, now, key),
            key=key,
            what="state succeeded",
        )

    def mark_failed(
        self,
        key: str,
        code: str,
        message: str,
        *,
        create_time: int | None = None,
        complete_time: int | None = None,
        cost_time: int | None = None,
    ) -> None:
        now = time.time()
        self.enqueue(
            SQL_FAILED,
            (code, message, create_time, complete_time, cost_time, now, now, key),
            key=key,
            what=f"state failed ({code})",
        )

    def mark_expired(self, key: str, message: str) -> None:
        self.enqueue(SQL_EXPIRED, (message, time.time(), key), key=key, what="state expired")

    def mark_downloaded(self, key: str, outputs: Iterable[OutputRecord]) -> None:
        for out in outputs:
            self.enqueue(SQL_OUTPUT, output_row(key, out), key=key, what=f"output {out.index}")
        now = time.time()
        self.enqueue(SQL_DOWNLOADED, (now, now, key), key=key, what="state downloaded")

    def refresh_memos(self, memos: Iterable[tuple[str, int, int]]) -> None:
        """Memos of outputs hashed and found right, ``(key, index, mtime_ns)`` (run/verify.py):
        queued together, the writer commits them in one ``executemany``."""
        for key, index, mtime_ns in memos:
            self.enqueue(SQL_OUTPUT_MEMO, (mtime_ns, key, index), key=key, what="memo")

    # --- runs ------------------------------------------------------------------------------

    async def begin_run(
        self, *, manifest: str, manifest_sha256: str, settings: dict[str, Any], planned: int
    ) -> int:
        settings_json = json.dumps(settings, sort_keys=True)
        try:
            cursor = await self._db.execute(
                "INSERT INTO runs (manifest, manifest_sha256, settings_json, planned, started_at)"
                " VALUES (?, ?, ?, ?, ?)",
                redact.scrub_params(
                    (manifest, manifest_sha256, settings_json, planned, time.time())
                ),
            )
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot start the run: {sqlite_problem(exc)}") from exc
        run_id = cursor.lastrowid
        assert run_id is not None
        return run_id

    async def end_run(
        self, run_id: int, *, exit_code: int, stop_reason: str | None, last_error: str | None
    ) -> None:
        await self.flush_and_wait()
        try:
            await self._db.execute(
                "UPDATE runs SET finished_at = ?, exit_code = ?, stop_reason = ?, last_error = ?"
                " WHERE id = ?",
                redact.scrub_params((time.time(), exit_code, stop_reason, last_error, run_id)),
            )
        except sqlite3.Error as exc:  # e.g. the disk is full: the tasks matter, not this row
            self._w.failures.append(f"{self.path}: could not store the run's ending: {exc}")

    async def flush_and_wait(self) -> None:
        """Wait until everything queued so far is committed, including the batch the writer
        may be committing right now (critical writes may have jumped ahead: wait for all).
        Writes queued after the call are not waited for: while a run goes on, the queue is
        hardly ever empty, and a wait for an empty queue could last until the run ends."""
        w = self._w
        with anyio.CancelScope(shield=True):
            running = lambda: self._writer_started and not self._writer_done.is_set()  # noqa: E731
            await w.wait_for([*w.committing, *w.queue], running=running)

    # --- reads -----------------------------------------------------------------------------

    async def records(
        self, *, with_outputs: bool = True, keys: Collection[str] | None = None
    ) -> dict[str, TaskRecord]:
        """Every task row by key (``keys``: only those, read in chunks)."""
        records: dict[str, TaskRecord] = {}
        for query, params in reads(keys, TASK_COLUMNS, "tasks"):
            async with self._db.execute(query, params) as cursor:
                for row in await cursor.fetchall():
                    record = record_from_row(row)
                    records[record.key] = record
        outputs = reads(keys, OUTPUT_COLUMNS, "outputs", OUTPUT_ORDER) if with_outputs else []
        for query, params in outputs:
            async with self._db.execute(query, params) as cursor:
                for row in await cursor.fetchall():
                    if row[0] in records:
                        records[row[0]].outputs.append(output_from_row(row))
        return records

    def take_touched(self) -> set[str]:
        """The keys written since the last call (the lock file's incremental write)."""
        touched, self._w.touched = self._w.touched, set()
        return touched

    def touch_again(self, keys: set[str]) -> None:
        """Keys taken by ``take_touched`` whose write did not happen: the next call has them."""
        self._w.touched |= keys

    async def generations(self) -> list[tuple[str | None, int]]:
        """``(base key, generation)`` of every regenerated task's row (plan/generations.py)."""
        async with self._db.execute(SQL_GENERATIONS) as cursor:
            return [(row[0], row[1]) for row in await cursor.fetchall()]

    async def fingerprint(self) -> str:
        """SHA-256 over every task row and output row: equal fingerprints, equal reports."""
        await self.flush_and_wait()
        return await anyio.to_thread.run_sync(self._fingerprint_sync, limiter=self._w.limiter)

    def _fingerprint_sync(self) -> str:
        digest = hashlib.sha256()
        for query in (f"SELECT {TASK_COLUMNS} FROM tasks ORDER BY key", SQL_FINGERPRINT):  # noqa: S608
            for row in self._w.db.execute(query):
                digest.update(repr(row).encode())
        return digest.hexdigest()

    async def last_run(self) -> dict[str, Any] | None:
        async with self._db.execute(SQL_LAST_RUN) as cursor:
            if (row := await cursor.fetchone()) is None:
                return None
        run = dict(zip(RUN_FIELDS, row, strict=True))
        run["settings"] = json.loads(run["settings"])
        return run


@contextlib.asynccontextmanager
async def open_store(path: Path) -> AsyncIterator[Store]:
    """A store with its writer running for the duration of the block; flushed and closed on
    the way out (also when the block is cancelled)."""
    store = await Store.open(path)
    try:
        async with anyio.create_task_group() as tg:
            store.start(tg)
            try:
                yield store
            finally:
                await store.aclose()
    finally:
        if not store.closed:
            await store.aclose()


async def read_records(path: Path) -> dict[str, TaskRecord]:
    """Read a state DB without a run (``plan``, ``status``, ``report``); {} if absent."""
    if not path.exists():
        return {}
    store = await Store.open(path)
    try:
        return await store.records()
    finally:
        await store.aclose()
