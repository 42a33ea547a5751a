"""The state DB's schema: tables, named migrations, the row <-> ``TaskRecord`` mapping and
the SQL of every transition of docs/states.md."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flux_pipeline.errors import StateError
from flux_pipeline.states import TaskRecord, TaskState

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
        db.execute("PRAGMA busy_timeout=5000")
        migrate(db)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: not a usable state DB: {exc}") from exc
    finally:
        db.close()


TASK_COLUMNS = (
    "key, readable_id, step, parent_key, parent_output_index, state, task_id, request_json,"
    " output, output_format, result_urls, fail_code, fail_msg, attempts, api_create_time,"
    " api_complete_time, cost_time, first_submitted_at, submitted_at, finished_at,"
    " downloaded_at, updated_at"
)


def record_from_row(row: Sequence[Any]) -> TaskRecord:
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

SQL_SUBMITTING = """
INSERT INTO tasks (key, readable_id, step, parent_key, parent_output_index, state, request_json,
                   output, output_format, attempts, first_submitted_at, updated_at)
VALUES (?, ?, ?, ?, ?, 'submitting', ?, ?, ?, 1, ?, ?)
ON CONFLICT(key) DO UPDATE SET
    state = 'submitting', task_id = NULL, result_urls = NULL, fail_code = NULL, fail_msg = NULL,
    readable_id = excluded.readable_id, step = excluded.step, output = excluded.output,
    attempts = attempts + 1, updated_at = excluded.updated_at
"""
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
    "INSERT OR REPLACE INTO outputs (key, idx, path, url, bytes, sha256) VALUES (?, ?, ?, ?, ?, ?)"
)
SQL_DOWNLOADED = (
    "UPDATE tasks SET state = 'downloaded', downloaded_at = ?, updated_at = ? WHERE key = ?"
)

SQL_LAST_RUN = (
    "SELECT id, manifest, manifest_sha256, settings_json, planned, started_at,"
    " finished_at, exit_code, stop_reason, last_error FROM runs ORDER BY id DESC LIMIT 1"
)
RUN_FIELDS: tuple[str, ...] = ("id", "manifest", "manifest_sha256", "settings", "planned")
RUN_FIELDS += ("started_at", "finished_at", "exit_code", "stop_reason", "last_error")
