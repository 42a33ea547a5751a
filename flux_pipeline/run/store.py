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
import dataclasses
import hashlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
from anyio.abc import TaskGroup

from flux_pipeline.errors import StateError
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

Migration = Callable[[sqlite3.Connection], None]


_M001 = [
    """
    CREATE TABLE tasks (
        key TEXT PRIMARY KEY,
        readable_id TEXT NOT NULL,
        step TEXT NOT NULL,
        parent_key TEXT,
        parent_output_index INTEGER,
        state TEXT NOT NULL,
        task_id TEXT,
        request_json TEXT NOT NULL,
        output TEXT NOT NULL,
        output_format TEXT NOT NULL,
        result_urls TEXT,
        fail_code TEXT,
        fail_msg TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        api_create_time INTEGER,
        api_complete_time INTEGER,
        cost_time INTEGER,
        first_submitted_at REAL,
        submitted_at REAL,
        finished_at REAL,
        downloaded_at REAL,
        updated_at REAL NOT NULL
    )
    """,
    """
    CREATE INDEX tasks_task_id ON tasks(task_id)
    """,
    """
    CREATE INDEX tasks_state ON tasks(state)
    """,
    """
    CREATE TABLE outputs (
        key TEXT NOT NULL REFERENCES tasks(key),
        idx INTEGER NOT NULL,
        path TEXT NOT NULL,
        url TEXT NOT NULL,
        bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
        PRIMARY KEY (key, idx)
    )
    """,
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        manifest TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
        settings_json TEXT NOT NULL,
        planned INTEGER NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        exit_code INTEGER,
        stop_reason TEXT,
        last_error TEXT
    )
    """,
]


def _m001_initial(db: sqlite3.Connection) -> None:
    for statement in _M001:
        db.execute(statement)


MIGRATIONS: list[tuple[str, Migration]] = [("m001_initial", _m001_initial)]


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the named migrations not yet recorded; returns the names applied."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    known = {name for name, _ in MIGRATIONS}
    if unknown := done - known:
        raise StateError(
            f"the state DB was written by a newer flux-pipeline (migrations {sorted(unknown)})"
        )
    applied = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            step(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def prepare(path: Path) -> None:
    """Create or upgrade the DB file (WAL mode, migrations). Synchronous; run in a thread."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"{path}: cannot open the state DB: {exc}") from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=5000")
        migrate(db)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: not a usable state DB: {exc}") from exc
    finally:
        db.close()


_TASK_COLUMNS = (
    "key, readable_id, step, parent_key, parent_output_index, state, task_id, request_json,"
    " output, output_format, result_urls, fail_code, fail_msg, attempts, api_create_time,"
    " api_complete_time, cost_time, first_submitted_at, submitted_at, finished_at,"
    " downloaded_at, updated_at"
)


def _record(row: Sequence[Any]) -> TaskRecord:
    urls = tuple(json.loads(row[10])) if row[10] else ()
    return TaskRecord(
        key=row[0],
        readable_id=row[1],
        step=row[2],
        parent_key=row[3],
        parent_output_index=row[4],
        state=TaskState(row[5]),
        task_id=row[6],
        request_json=row[7],
        output=row[8],
        output_format=row[9],
        result_urls=urls,
        fail_code=row[11],
        fail_msg=row[12],
        attempts=row[13],
        api_create_time=row[14],
        api_complete_time=row[15],
        cost_time=row[16],
        first_submitted_at=row[17],
        submitted_at=row[18],
        finished_at=row[19],
        downloaded_at=row[20],
        updated_at=row[21],
    )


# --- the transitions -----------------------------------------------------------------------

_SQL_SUBMITTING = """
INSERT INTO tasks (key, readable_id, step, parent_key, parent_output_index, state, request_json,
                   output, output_format, attempts, first_submitted_at, updated_at)
VALUES (?, ?, ?, ?, ?, 'submitting', ?, ?, ?, 1, ?, ?)
ON CONFLICT(key) DO UPDATE SET
    state = 'submitting', task_id = NULL, result_urls = NULL, fail_code = NULL, fail_msg = NULL,
    readable_id = excluded.readable_id, step = excluded.step, output = excluded.output,
    attempts = attempts + 1, updated_at = excluded.updated_at
"""
_SQL_SUBMITTED = (
    "UPDATE tasks SET state = 'submitted', task_id = ?, submitted_at = ?, updated_at = ?"
    " WHERE key = ?"
)
_SQL_UNSENT = (
    "UPDATE tasks SET state = 'planned', attempts = attempts - 1, updated_at = ? WHERE key = ?"
)
_SQL_SUCCEEDED = """
UPDATE tasks SET state = 'succeeded', result_urls = ?, api_create_time = ?,
    api_complete_time = ?, cost_time = ?, finished_at = ?, updated_at = ? WHERE key = ?
"""
_SQL_FAILED = """
UPDATE tasks SET state = 'failed', fail_code = ?, fail_msg = ?, api_create_time = ?,
    api_complete_time = ?, cost_time = ?, finished_at = ?, updated_at = ? WHERE key = ?
"""
_SQL_EXPIRED = (
    "UPDATE tasks SET state = 'expired', fail_code = 'RESULT_EXPIRED', fail_msg = ?,"
    " updated_at = ? WHERE key = ?"
)
_SQL_OUTPUT = (
    "INSERT OR REPLACE INTO outputs (key, idx, path, url, bytes, sha256) VALUES (?, ?, ?, ?, ?, ?)"
)
_SQL_DOWNLOADED = (
    "UPDATE tasks SET state = 'downloaded', downloaded_at = ?, updated_at = ? WHERE key = ?"
)


@dataclass(slots=True)
class _Write:
    sql: str
    params: tuple[Any, ...]
    done: anyio.Event | None = None


class Store:
    """The state DB of one run. Open with ``Store.open(path)`` as an async context manager;
    ``start(task_group)`` launches the writer, ``aclose`` flushes it."""

    def __init__(self, db: aiosqlite.Connection, writer: sqlite3.Connection, path: Path) -> None:
        self._db = db  # reads, and the few writes of the run table
        self._wdb = writer  # transitions: one batch = one call into a worker thread
        self._wlimiter = anyio.CapacityLimiter(1)
        self.path = path
        self._queue: list[_Write] = []
        self._wake = anyio.Event()
        self._closing = False
        self._writer_done = anyio.Event()
        self._writer_error: BaseException | None = None
        self.batches = 0
        self.writes = 0
        self.write_seconds = 0.0
        self._writer_started = False
        self._closed = False
        self._committing: list[_Write] = []

    @classmethod
    async def open(cls, path: Path) -> Store:
        await anyio.to_thread.run_sync(prepare, path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA busy_timeout=5000")
            writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            writer.execute("PRAGMA synchronous=NORMAL")
            writer.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open the state DB: {exc}") from exc
        return cls(db, writer, path)

    # --- the writer ------------------------------------------------------------------------

    def start(self, tg: TaskGroup) -> None:
        self._writer_started = True
        tg.start_soon(self._writer)

    async def _writer(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    await self._wake.wait()
                    self._wake = anyio.Event()
                    continue
                batch, self._queue = self._queue, []
                self._committing = batch
                with anyio.CancelScope(shield=True):
                    await self._commit(batch)
                self._committing = []
        except BaseException as exc:
            self._writer_error = exc
            raise
        finally:
            self._writer_done.set()

    def _commit_sync(self, batch: list[_Write]) -> None:
        """One transaction for the whole batch, in a worker thread (one GIL hand-off, not one
        per statement). Consecutive writes of the same statement go in one executemany."""
        db = self._wdb
        started = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        try:
            i = 0
            while i < len(batch):
                j = i
                while j < len(batch) and batch[j].sql is batch[i].sql:
                    j += 1
                db.executemany(batch[i].sql, [w.params for w in batch[i:j]])
                i = j
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            self.write_seconds += time.perf_counter() - started  # SQLite's own time

    async def _commit(self, batch: list[_Write]) -> None:
        try:
            await anyio.to_thread.run_sync(self._commit_sync, batch, limiter=self._wlimiter)
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: write failed: {exc}") from exc
        self.batches += 1
        self.writes += len(batch)
        for write in batch:
            if write.done is not None:
                write.done.set()

    def enqueue(self, sql: str, params: tuple[Any, ...]) -> _Write:
        if self._writer_error is not None:
            raise StateError(f"{self.path}: the state writer stopped: {self._writer_error}")
        write = _Write(sql, params)
        self._queue.append(write)
        self._wake.set()
        return write

    async def write(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue a write and wait until it is committed."""
        write = self.enqueue(sql, params)
        write.done = anyio.Event()
        if not self._writer_started:
            await self.flush()
            return
        with anyio.CancelScope(shield=True):
            await write.done.wait()

    async def flush(self) -> None:
        """Commit everything queued now (used when no writer task runs)."""
        if self._queue:
            batch, self._queue = self._queue, []
            with anyio.CancelScope(shield=True):
                await self._commit(batch)

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            self._closing = True
            self._wake.set()
            if self._writer_started and self._writer_error is None:
                await self._writer_done.wait()
            await self.flush()
            await self._db.close()
            self._wdb.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- transitions -----------------------------------------------------------------------

    async def mark_submitting(self, spec: TaskSpec) -> None:
        """Durable before the create is sent (docs/states.md)."""
        now = time.time()
        await self.write(
            _SQL_SUBMITTING,
            (
                spec.key,
                spec.readable_id,
                spec.step,
                spec.parent_key,
                spec.parent_output_index,
                spec.request_json,
                spec.output,
                spec.output_format,
                now,
                now,
            ),
        )

    def mark_submitted(self, key: str, task_id: str) -> None:
        """Queued the moment the taskId is known. Not awaited: polling need not wait for the
        commit, and every stop (signal, error, end) flushes the queue in a shielded scope."""
        now = time.time()
        self.enqueue(_SQL_SUBMITTED, (task_id, now, now, key))

    def mark_unsent(self, key: str) -> None:
        """The create provably created nothing (refused, 429, never left): back to planned."""
        self.enqueue(_SQL_UNSENT, (time.time(), key))

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
            _SQL_SUCCEEDED,
            (json.dumps(list(urls)), create_time, complete_time, cost_time, now, now, key),
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
            _SQL_FAILED, (code, message, create_time, complete_time, cost_time, now, now, key)
        )

    def mark_expired(self, key: str, message: str) -> None:
        self.enqueue(_SQL_EXPIRED, (message, time.time(), key))

    def mark_downloaded(self, key: str, outputs: Iterable[OutputRecord]) -> None:
        for out in outputs:
            self.enqueue(_SQL_OUTPUT, (key, out.index, out.path, out.url, out.bytes, out.sha256))
        now = time.time()
        self.enqueue(_SQL_DOWNLOADED, (now, now, key))

    # --- runs ------------------------------------------------------------------------------

    async def begin_run(
        self, *, manifest: str, manifest_sha256: str, settings: dict[str, Any], planned: int
    ) -> int:
        cursor = await self._db.execute(
            "INSERT INTO runs (manifest, manifest_sha256, settings_json, planned, started_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (manifest, manifest_sha256, json.dumps(settings, sort_keys=True), planned, time.time()),
        )
        run_id = cursor.lastrowid
        assert run_id is not None
        return run_id

    async def end_run(
        self, run_id: int, *, exit_code: int, stop_reason: str | None, last_error: str | None
    ) -> None:
        await self.flush_and_wait()
        await self._db.execute(
            "UPDATE runs SET finished_at = ?, exit_code = ?, stop_reason = ?, last_error = ?"
            " WHERE id = ?",
            (time.time(), exit_code, stop_reason, last_error, run_id),
        )

    async def flush_and_wait(self) -> None:
        """Wait until everything queued so far is committed, including the batch the writer
        may be committing right now."""
        pending = self._queue or self._committing
        if not pending:
            return
        if self._writer_started and not self._closing and self._writer_error is None:
            last = pending[-1]
            if last.done is None:
                last.done = anyio.Event()
            with anyio.CancelScope(shield=True):
                await last.done.wait()
        else:
            await self.flush()

    # --- reads -----------------------------------------------------------------------------

    async def records(self, *, with_outputs: bool = True) -> dict[str, TaskRecord]:
        """Every task row, by key."""
        records: dict[str, TaskRecord] = {}
        query = f"SELECT {_TASK_COLUMNS} FROM tasks"  # noqa: S608 (constant text)
        async with self._db.execute(query) as cursor:
            for row in await cursor.fetchall():
                record = _record(row)
                records[record.key] = record
        if with_outputs:
            async with self._db.execute(
                "SELECT key, idx, path, url, bytes, sha256 FROM outputs ORDER BY key, idx"
            ) as cursor:
                for key, idx, path, url, size, sha in await cursor.fetchall():
                    if key in records:
                        records[key].outputs.append(
                            OutputRecord(index=idx, path=path, url=url, bytes=size, sha256=sha)
                        )
        return records

    async def fingerprint(self) -> str:
        """SHA-256 over every task row and output row: equal fingerprints, equal reports."""
        await self.flush_and_wait()
        return await anyio.to_thread.run_sync(self._fingerprint_sync, limiter=self._wlimiter)

    def _fingerprint_sync(self) -> str:
        digest = hashlib.sha256()
        for query in (
            f"SELECT {_TASK_COLUMNS} FROM tasks ORDER BY key",  # noqa: S608 (constant text)
            "SELECT key, idx, path, url, bytes, sha256 FROM outputs ORDER BY key, idx",
        ):
            for row in self._wdb.execute(query):
                digest.update(repr(row).encode())
        return digest.hexdigest()

    async def last_run(self) -> dict[str, Any] | None:
        async with self._db.execute(
            "SELECT id, manifest, manifest_sha256, settings_json, planned, started_at,"
            " finished_at, exit_code, stop_reason, last_error FROM runs ORDER BY id DESC LIMIT 1"
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        names = [
            "id",
            "manifest",
            "manifest_sha256",
            "settings",
            "planned",
            "started_at",
            "finished_at",
            "exit_code",
            "stop_reason",
            "last_error",
        ]
        run = dict(zip(names, row, strict=True))
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


_RECORD_COLUMNS = [f.name for f in dataclasses.fields(TaskRecord) if f.name != "outputs"]


def _column(record: TaskRecord, name: str) -> Any:
    value = getattr(record, name)
    if name == "result_urls":
        return json.dumps(list(value)) if value else None
    if name == "state":
        return value.value
    return value


def import_records(path: Path, records: Iterable[TaskRecord]) -> int:
    """Insert or replace ``records`` (and their outputs) in the state DB at ``path``, in one
    transaction: how ``merge`` writes the combined state (the store is the only writer)."""
    prepare(path)
    records = list(records)
    rows = [tuple(_column(r, name) for name in _RECORD_COLUMNS) for r in records]
    placeholders = ", ".join("?" for _ in _RECORD_COLUMNS)
    insert = f"INSERT OR REPLACE INTO tasks ({', '.join(_RECORD_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(insert, rows)
            keys = [(row[0],) for row in rows]
            db.executemany("DELETE FROM outputs WHERE key = ?", keys)
            db.executemany(
                "INSERT INTO outputs (key, idx, path, url, bytes, sha256)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (r.key, o.index, o.path, o.url, o.bytes, o.sha256)
                    for r in records
                    for o in r.outputs
                ],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StateError(f"{path}: import failed: {exc}") from exc
    finally:
        db.close()
    return len(rows)
