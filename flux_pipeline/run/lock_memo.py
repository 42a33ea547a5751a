"""The lock memo (docs/lockfile.md, "A rerun does not read the lock"): the SHA-256 of a lock
file's text that holds nothing the state DB lacks, so a run that finds that very text next
to its manifest need not read the lock at all.

A lock text is *covered* by a state DB when every entry has a row there that is not behind it
(``behind``, the rule of adoption): adopting from it would take nothing, whatever the
manifest plans. Two writers record it, both in the state DB the text is covered by:

- adoption (``adopt.adopt_into``), once the lock's rows are imported and every entry of the
  lock it read has its row;
- the lock keeper (``run/lock_keeper.py``), at the write at a run's stop, when every block of
  the text it wrote (or found on disk) was made from a row of this DB.

Nothing a run does makes a covered text uncovered: rows are only added or moved on. What
could, drops the memo in the same transaction: a task row deleted or set back (an earlier
stage, fewer attempts: the triggers below, whoever writes the DB), and every import of rows
(``store_import.import_records``: ``merge`` and adoption, which records it again). A DB
copied from elsewhere carries the memo of the text it covers, so another lock text is read.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from flux_pipeline.states import STAGE, TaskRecord

if TYPE_CHECKING:  # only the types: store_schema imports this module
    from flux_pipeline.report.lockfile import Lock, LockEntry

RECORD_SQL = "INSERT OR REPLACE INTO lock_memo (id, sha256, manifest) VALUES (1, ?, ?)"
FORGET_SQL = "DELETE FROM lock_memo"


def _stage(row: str) -> str:
    cases = " ".join(f"WHEN '{state.value}' THEN {stage}" for state, stage in STAGE.items())
    return f"(CASE {row}.state {cases} END)"


SCHEMA = (
    "CREATE TABLE lock_memo (id INTEGER PRIMARY KEY CHECK (id = 1), sha256 TEXT NOT NULL,"
    " manifest TEXT NOT NULL)",
    f"CREATE TRIGGER lock_memo_row_deleted AFTER DELETE ON tasks BEGIN {FORGET_SQL}; END",
    "CREATE TRIGGER lock_memo_row_set_back AFTER UPDATE OF state, attempts ON tasks"
    " WHEN NEW.attempts < OLD.attempts OR (NEW.attempts = OLD.attempts AND"
    f" {_stage('NEW')} < {_stage('OLD')}) BEGIN {FORGET_SQL}; END",
)


@dataclass(frozen=True, slots=True)
class LockMemo:
    sha256: str  # of the lock file's bytes
    manifest: str  # the manifest name the lock names


def read_memo(state_path: Path) -> LockMemo | None:
    """The memo of the state DB at ``state_path``, read-only; None when there is none, no
    DB, or a DB that cannot be read (the lock is then read as always)."""
    if not state_path.is_file():
        return None
    with contextlib.suppress(sqlite3.Error, OSError, ValueError):
        db = sqlite3.connect(f"{state_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT sha256, manifest FROM lock_memo WHERE id = 1").fetchone()
        finally:
            db.close()
        if row is not None and all(isinstance(value, str) for value in row):
            return LockMemo(sha256=row[0], manifest=row[1])
    return None


def behind(row: TaskRecord | None, known: TaskRecord | LockEntry) -> bool:
    """Is the DB's ``row`` (None: no row) behind ``known`` (from the lock or a report)?"""
    if row is None:
        return True
    if row.attempts != known.attempts:
        return row.attempts < known.attempts
    return STAGE[row.state] < STAGE[known.state]


def covers(db: Mapping[str, TaskRecord], lock: Lock) -> bool:
    """Does the state DB ``db`` cover ``lock``: a row not behind each of its entries, so
    adopting from it would take nothing, whatever the manifest plans?"""
    return all(not behind(db.get(key), entry) for key, entry in lock.entries.items())
