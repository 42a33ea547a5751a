"""Writing a whole state DB at once: how ``merge`` writes the combined state (the run's
``Store`` is the only other writer)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flux_pipeline import redact
from flux_pipeline.errors import StateError
from flux_pipeline.run.lock_memo import FORGET_SQL
from flux_pipeline.run.store_schema import TASK_FIELDS, prepare, rollback
from flux_pipeline.states import TaskRecord


def _column(record: TaskRecord, name: str) -> Any:
    value = getattr(record, name)
    if name == "result_urls":
        value = json.dumps(list(value)) if value else None
    elif name == "state":
        return value.value
    # nothing secret is stored (docs/secrets.md): a source may come from an older version
    return redact.scrub(value) if isinstance(value, str) else value


def import_records(path: Path, records: Iterable[TaskRecord]) -> int:
    """Insert or replace ``records`` (and their outputs) in the state DB at ``path``, in one
    transaction: how ``merge`` writes the combined state (the store is the only writer)."""
    prepare(path)
    records = list(records)
    # rows made as SQLite takes them: 100,000 adopted rows are never all held as tuples too
    rows = (tuple(_column(r, name) for name in TASK_FIELDS) for r in records)
    placeholders = ", ".join("?" for _ in TASK_FIELDS)
    insert = f"INSERT OR REPLACE INTO tasks ({', '.join(TASK_FIELDS)}) VALUES ({placeholders})"  # noqa: S608
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(insert, rows)
            keys = ((_column(r, "key"),) for r in records)
            db.executemany("DELETE FROM outputs WHERE key = ?", keys)
            db.executemany(
                "INSERT INTO outputs (key, idx, path, url, bytes, sha256)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (r.key, o.index, o.path, redact.scrub(o.url), o.bytes, o.sha256)
                    for r in records
                    for o in r.outputs
                ),
            )
            db.execute(FORGET_SQL)  # rows may be set back: the lock is read next time
            db.execute("COMMIT")
        except BaseException:
            rollback(db)
            raise
    except sqlite3.Error as exc:
        raise StateError(f"{path}: import failed: {exc}") from exc
    finally:
        db.close()
    return len(records)
