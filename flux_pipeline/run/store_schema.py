"""The state DB's schema: tables, named migrations, the row <-> ``TaskRecord`` mapping and
the SQL of every transition of docs/states.md."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from flux_pipeline.errors import StateError
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.lock_memo import SCHEMA as LOCK_MEMO_SCHEMA
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


def _m002_output_mtime(db: sqlite3.Connection) -> None:
    """The verification memo of an output (docs/resume.md, "When is a task done?"): the
    ``st_mtime_ns`` its file had when we wrote it or last hashed it and found it right. NULL
    (every row of an older DB) means "not memoised": the file is hashed once."""
    db.execute("ALTER TABLE outputs ADD COLUMN mtime_ns INTEGER")


def _m003_generations(db: sqlite3.Connection) -> None:
    """Deliberate regenerations (flux_pipeline/plan/generations.py): a row of generation N > 0
    names the generation 0 key of its task; every older row is generation 0."""
    db.execute("ALTER TABLE tasks ADD COLUMN base_key TEXT")
    db.execute("ALTER TABLE tasks ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")


def _m004_lock_memo(db: sqlite3.Connection) -> None:
    """The lock memo (flux_pipeline/run/lock_memo.py): the lock text this DB covers, and the
    triggers that drop it when a task row is deleted or set back."""
    for statement in LOCK_MEMO_SCHEMA:
        db.execute(statement)


MIGRATIONS: list[tuple[str, Migration]] = [
    ("m001_initial", _m001_initial),
    ("m002_output_mtime", _m002_output_mtime),
    ("m003_generations", _m003_generations),
    ("m004_lock_memo", _m004_lock_memo),
]


# How long a statement waits for a lock another process holds on the state DB: opening it
# (and the run's own rows) gives up soon, so a DB in use elsewhere is refused in seconds; the
# writer of a running run waits longer, so a lock held a few seconds mid-run (a backup, an
# inspection in the sqlite3 shell) only delays the run (docs/exit-codes.md).
OPEN_LOCK_WAIT_MS = 5_000
WRITER_LOCK_WAIT_MS = 30_000


def sqlite_problem(exc: sqlite3.Error) -> str:
    """``exc`` for a person: a lock held past the wait names what to do."""
    if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return (
            f"{exc}: another process holds the state DB (waited "
            f"{OPEN_LOCK_WAIT_MS / 1000:g}s); stop it and run the same command again"
        )
    return str(exc)


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
            rollback(db)
            raise
        applied.append(name)
    return applied


def rollback(db: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open. SQLite rolls back by itself on some errors
    (a full disk): a second ROLLBACK would raise "cannot rollback - no transaction is active"
    and hide the real error."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the error being handled is what matters
            db.execute("ROLLBACK")


def prepare(path: Path) -> None:
    """Create or upgrade the DB file (WAL mode, migrations). Synchronous; run in a thread."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(f"{path}: cannot open the state DB: {exc}") from exc
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA busy_timeout={OPEN_LOCK_WAIT_MS}")
        migrate(db)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: not a usable state DB: {sqlite_problem(exc)}") from exc
    finally:
        db.close()


# The columns of a task row, named as TaskRecord's fields (every field but ``outputs``), in
# the order every SELECT of this module reads them.
TASK_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRecord) if f.name != "outputs")
TASK_COLUMNS = ", ".join(TASK_FIELDS)


def record_from_row(row: Sequence[Any]) -> TaskRecord:
    """A task row (columns ``TASK_COLUMNS``) as a ``TaskRecord``, by name; ``StateError``
    naming the task for a row no flux-pipeline wrote (an unknown state, garbled URLs)."""
    values = dict(zip(TASK_FIELDS, row, strict=True))
    try:
        values["state"] = TaskState(values["state"])
        urls = values["result_urls"]
        values["result_urls"] = tuple(json.loads(urls)) if urls else ()
        if not all(isinstance(url, str) for url in values["result_urls"]):
            raise ValueError("result_urls is not a list of URLs")
    except (ValueError, TypeError) as exc:
        raise StateError(
            f"the state DB has a bad row for task {values.get('key')!r}: {exc}; fix or delete "
            "that row (a deleted row is planned again)"
        ) from None
    return TaskRecord(**values)


def output_row(key: str, out: OutputRecord) -> tuple[Any, ...]:
    """The parameters of ``SQL_OUTPUT`` for one output of task ``key``."""
    return (key, out.index, out.path, out.url, out.bytes, out.sha256, out.mtime_ns)


def output_from_row(row: Sequence[Any]) -> OutputRecord:
    """An ``OutputRecord`` from a row of ``SQL_OUTPUTS`` (its first column is the task key)."""
    return OutputRecord(
        index=row[1], path=row[2], url=row[3], bytes=row[4], sha256=row[5], mtime_ns=row[6]
    )


# --- the transitions -----------------------------------------------------------------------

SQL_SUBMITTING = """
INSERT INTO tasks (key, readable_id, step, parent_key, parent_output_index, state, request_json,
                   output, output_format, attempts, first_submitted_at, updated_at, base_key,
                   generation)
VALUES (?, ?, ?, ?, ?, 'submitting', ?, ?, ?, 1, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET
    state = 'submitting', task_id = NULL, result_urls = NULL, fail_code = NULL, fail_msg = NULL,
    readable_id = excluded.readable_id, step = excluded.step, output = excluded.output,
    attempts = attempts + 1, updated_at = excluded.updated_at
"""


def submitting_row(spec: TaskSpec, now: float) -> tuple[Any, ...]:
    """The parameters of ``SQL_SUBMITTING`` for ``spec``, sent at ``now``."""
    lineage = (spec.parent_key, spec.parent_output_index)
    request = (spec.request_json, spec.output, spec.output_format)
    regeneration = (spec.base_key if spec.generation else None, spec.generation)
    return (spec.key, spec.readable_id, spec.step, *lineage, *request, now, now, *regeneration)


SQL_SUBMITTED = (
    "UPDATE tasks SET state = 'submitted', task_id = ?, submitted_at = ?, updated_at = ?"
    " WHERE key = ?"
)
SQL_UNSENT = (
    "UPDATE tasks SET state = 'planned', attempts = attempts - 1, updated_at = ? WHERE key = ?"
)
SQL_SUCCEEDED = """
UPDATE tasks SET state = 'succeeded', result_urls = ?, api_create_time = ?,
    api_complete_time = ?, cost_time = ?, finished_at = ?, updated_at = ? WHERE key = ?
"""
SQL_FAILED = """
UPDATE tasks SET state = 'failed', fail_code = ?, fail_msg = ?, api_create_time = ?,
    api_complete_time = ?, cost_time = ?, finished_at = ?, updated_at = ? WHERE key = ?
"""
SQL_EXPIRED = (
    "UPDATE tasks SET state = 'expired', fail_code = 'RESULT_EXPIRED', fail_msg = ?,"
    " updated_at = ? WHERE key = ?"
)
SQL_OUTPUT = (
    "INSERT OR REPLACE INTO outputs (key, idx, path, url, bytes, sha256, mtime_ns)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
OUTPUT_COLUMNS = "key, idx, path, url, bytes, sha256, mtime_ns"
OUTPUT_ORDER = "ORDER BY key, idx"
SQL_OUTPUTS = f"SELECT {OUTPUT_COLUMNS} FROM outputs ORDER BY key, idx"  # noqa: S608
SQL_OUTPUT_MEMO = "UPDATE outputs SET mtime_ns = ? WHERE key = ? AND idx = ?"
SQL_DOWNLOADED = (
    "UPDATE tasks SET state = 'downloaded', downloaded_at = ?, updated_at = ? WHERE key = ?"
)

SQL_GENERATIONS = "SELECT base_key, generation FROM tasks WHERE generation > 0"
SQL_FINGERPRINT = "SELECT key, idx, path, url, bytes, sha256 FROM outputs ORDER BY key, idx"
CHUNK = 500  # keys per ``IN (...)``: under SQLite's limit of bound parameters


def reads(
    keys: Collection[str] | None, columns: str, table: str, order: str = ""
) -> list[tuple[str, tuple[str, ...]]]:
    """The ``SELECT``s (and their parameters) of ``columns`` of ``table``'s rows (``order``:
    an ``ORDER BY`` clause): every row (``keys`` None), or those of ``keys`` in chunks."""
    if keys is None:
        return [(f"SELECT {columns} FROM {table} {order}", ())]  # noqa: S608 (constants)
    ordered = sorted(keys)
    found = []
    for start in range(0, len(ordered), CHUNK):
        chunk = tuple(ordered[start : start + CHUNK])
        marks = ", ".join("?" for _ in chunk)
        found.append((f"SELECT {columns} FROM {table} WHERE key IN ({marks}) {order}", chunk))  # noqa: S608
    return found


SQL_LAST_RUN = (
    "SELECT id, manifest, manifest_sha256, settings_json, planned, started_at,"
    " finished_at, exit_code, stop_reason, last_error FROM runs ORDER BY id DESC LIMIT 1"
)
RUN_FIELDS: tuple[str, ...] = ("id", "manifest", "manifest_sha256", "settings", "planned")
RUN_FIELDS += ("started_at", "finished_at", "exit_code", "stop_reason", "last_error")
