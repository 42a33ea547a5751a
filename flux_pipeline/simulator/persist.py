"""The simulator's memory across restarts: a small SQLite file of task records and counters.

What is kept (docs/simulator.md): every task (id, key, timestamps, outcome, the request with
inline ``data:`` images reduced to a marker), the credits spent, the counters of
``/_sim/stats``, the port served, the accepted keys and the clock. Result images are not kept:
they are drawn again from (taskId, prompt, index) on demand, byte for byte the same.

Writes are incremental (a new task is one row, a finished one an update) and each is one
SQLite transaction, so the file is never half written and a save costs what changed since the
last one. The file is untrusted input: ``StateFile.load`` checks every row and raises
``StateError`` (a one-line reason) for anything it did not write itself.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flux_pipeline.simulator.stats import Stats
from flux_pipeline.simulator.tasks import Task
from flux_pipeline.simulator.validation import InvalidRequest, canonical_json, parse_create

VERSION = 1
SAVE_INTERVAL = 2.0  # seconds between two saves of a running simulator, at most
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE tasks (row INTEGER PRIMARY KEY, task_id TEXT NOT NULL, api_key TEXT NOT"
    " NULL, base_url TEXT NOT NULL, created REAL NOT NULL, started REAL NOT NULL, due REAL NOT"
    " NULL, completed REAL, fail_code TEXT, fail_msg TEXT, problem TEXT, checking INTEGER NOT"
    " NULL, digest BLOB NOT NULL, request TEXT NOT NULL)",
)
_SELECT = (
    "SELECT task_id, api_key, base_url, created, started, due, completed, fail_code, fail_msg,"
    " problem, checking, digest, request, row FROM tasks ORDER BY row"
)
_INSERT = (
    "INSERT OR REPLACE INTO tasks (task_id, api_key, base_url, created, started, due,"
    " completed, fail_code, fail_msg, problem, checking, digest, request, row)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = (
    "UPDATE tasks SET due = ?, completed = ?, fail_code = ?, fail_msg = ?, problem = ?,"
    " checking = ? WHERE row = ?"
)
_INLINE_KEPT = 256  # a data: URI longer than this is kept as a marker (it was judged at create)


class StateError(Exception):
    """The state file is unreadable or not one this simulator wrote: a one-line reason."""


def input_digest(task_input: dict[str, Any]) -> bytes:
    """What ``duplicate creates`` compares: the canonical ``input`` object, hashed."""
    return hashlib.blake2b(canonical_json(task_input).encode(), digest_size=16).digest()


def _reduced(raw: dict[str, Any]) -> dict[str, Any]:
    """The request as kept: long inline images become ``data:,sha256=...`` markers."""
    inp = raw.get("input")
    urls = inp.get("image_urls") if isinstance(inp, dict) else None
    if not isinstance(urls, list) or not any(
        isinstance(u, str) and u[:5].lower() == "data:" and len(u) > _INLINE_KEPT for u in urls
    ):
        return raw
    kept = copy.copy(raw)
    kept["input"] = dict(raw["input"])
    kept["input"]["image_urls"] = [
        f"data:,sha256={hashlib.sha256(u.encode()).hexdigest()}"
        if isinstance(u, str) and u[:5].lower() == "data:" and len(u) > _INLINE_KEPT
        else u
        for u in urls
    ]
    return kept


def _new_row(task: Task) -> tuple[Any, ...]:
    fail_code, fail_msg = task.fail or (None, None)
    request = json.dumps(_reduced(task.request.raw), separators=(",", ":"), ensure_ascii=False)
    return (
        task.task_id,
        task.api_key,
        task.base_url,
        task.created,
        task.started,
        task.due,
        task.completed,
        fail_code,
        fail_msg,
        task.problem,
        1 if task.checks_pending else 0,
        task.digest,
        request,
        task.row,
    )


def _update_row(task: Task) -> tuple[Any, ...]:
    fail_code, fail_msg = task.fail or (None, None)
    checking = 1 if task.checks_pending else 0
    return (task.due, task.completed, fail_code, fail_msg, task.problem, checking, task.row)


@dataclass(kw_only=True)
class Saved:
    """What a state file holds, checked."""

    port: int | None = None
    ports: tuple[int, ...] = ()  # every loopback port this simulator has served on
    api_keys: tuple[str, ...] = ()
    now: float = 0.0  # the simulator's clock at the last save
    spent: float = 0.0
    max_unfinished: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)


def _num(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StateError(f"{what}: expected a finite number, found {value!r:.40}")
    return float(value)


def _opt_num(value: object, what: str) -> float | None:
    return None if value is None else _num(value, what)


def _str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise StateError(f"{what}: expected a string, found {value!r:.40}")
    return value


def _opt_str(value: object, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _task(row: tuple[Any, ...]) -> Task:
    task_id = _str(row[0], "a task's id")
    where = f"task {task_id[:40]!r}"
    created = _num(row[3], f"{where}: created")
    started = _num(row[4], f"{where}: started")
    due = _num(row[5], f"{where}: due")
    if not created <= started <= due:
        raise StateError(f"{where}: times out of order")
    fail_code = _opt_str(row[7], f"{where}: fail_code")
    fail_msg = _opt_str(row[8], f"{where}: fail_msg")
    if (fail_code is None) != (fail_msg is None):
        raise StateError(f"{where}: fail_code and fail_msg go together")
    if not isinstance(row[13], int) or row[13] < 1:
        raise StateError(f"{where}: malformed row number")
    if row[10] not in (0, 1) or not isinstance(row[11], bytes) or len(row[11]) != 16:
        raise StateError(f"{where}: malformed checking flag or digest")
    try:
        request = parse_create(json.loads(_str(row[12], f"{where}: request")))
    except (ValueError, InvalidRequest, RecursionError) as exc:
        raise StateError(f"{where}: request: {type(exc).__name__}: {exc}"[:200]) from None
    return Task(
        task_id=task_id,
        api_key=_str(row[1], f"{where}: api_key"),
        request=request,
        base_url=_str(row[2], f"{where}: base_url"),
        created=created,
        started=started,
        due=due,
        fail=(fail_code, fail_msg) if fail_code and fail_msg else None,
        checks_pending=row[10],
        completed=_opt_num(row[6], f"{where}: completed"),
        problem=_opt_str(row[9], f"{where}: problem"),
        digest=row[11],
        row=row[13],
    )


def _meta(value: str) -> Saved:
    try:
        meta = json.loads(value)
    except (ValueError, RecursionError):
        raise StateError("its meta record is not JSON") from None
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        raise StateError(f"not a version {VERSION} simulator state")
    port, ports, keys = meta.get("port"), meta.get("ports"), meta.get("api_keys")
    if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
        raise StateError(f"port: expected a TCP port, found {port!r:.40}")
    if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
        raise StateError("ports: expected a list of TCP ports")
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise StateError("api_keys: expected a list of strings")
    stats = meta.get("stats")
    if not isinstance(stats, dict):
        raise StateError("stats: expected an object")
    try:
        Stats.from_dict(stats)
    except ValueError as exc:
        raise StateError(str(exc)) from None
    unfinished = meta.get("max_unfinished")
    if not isinstance(unfinished, int) or isinstance(unfinished, bool) or unfinished < 0:
        raise StateError("max_unfinished: expected a count")
    now, spent = _num(meta.get("now"), "now"), _num(meta.get("spent"), "spent")
    return Saved(
        port=port,
        ports=tuple(ports),
        api_keys=tuple(keys),
        now=now,
        spent=max(0.0, spent),
        max_unfinished=unfinished,
        stats=stats,
    )


def _read(db: sqlite3.Connection) -> Saved | None:
    objects = db.execute("SELECT type, name FROM sqlite_master").fetchall()
    if not objects:
        return None  # an empty file: nothing was saved yet
    names = {(kind, name) for kind, name in objects if not str(name).startswith("sqlite_auto")}
    if names != {("table", "meta"), ("table", "tasks")}:
        raise StateError("not a simulator state (unexpected tables, views or triggers)")
    rows = db.execute("SELECT value FROM meta WHERE key = 'state'").fetchall()
    if len(rows) != 1 or not isinstance(rows[0][0], str):
        raise StateError("its meta record is missing")
    saved = _meta(rows[0][0])
    saved.tasks = [_task(row) for row in db.execute(_SELECT)]
    if len({task.task_id for task in saved.tasks}) != len(saved.tasks):
        raise StateError("a taskId is listed twice")
    return saved


class StateFile:
    """One simulator's state file: ``load`` reads it, ``open`` loads it and opens it to
    write. ``take`` collects what changed (``note_new``/``note_changed``) and the counters;
    ``write`` writes that in one transaction."""

    def __init__(self, path: Path, saved: Saved | None = None) -> None:
        self.path = path
        self.saved = saved
        self.problem: str | None = None  # why a malformed file was set aside (``open``)
        self.failure: str | None = None  # the first save that failed, if one did
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._new: dict[str, Task] = {}
        self._rows = max((t.row for t in saved.tasks), default=0) if saved else 0
        self._changed: dict[str, Task] = {}

    def __repr__(self) -> str:
        return f"StateFile({str(self.path)!r})"

    @staticmethod
    def load(path: Path) -> Saved | None:
        """The saved state, None when there is none yet; StateError when malformed."""
        if not path.exists():
            return None
        if not path.is_file():
            raise StateError(f"{path} is not a file")
        try:  # not read-only: a save cut short by a kill leaves a journal to roll back
            db = sqlite3.connect(path, timeout=5)
        except sqlite3.Error as exc:
            raise StateError(f"{path}: {exc}") from None
        try:
            db.execute("PRAGMA trusted_schema = OFF")
            return _read(db)
        except StateError as exc:
            raise StateError(f"{path}: {exc}") from None
        except (sqlite3.Error, UnicodeDecodeError, OverflowError) as exc:
            raise StateError(f"{path}: not a simulator state ({exc})") from None
        finally:
            db.close()

    @classmethod
    def open(cls, path: Path, *, afresh: bool = False) -> StateFile:
        """Load ``path`` (StateError when malformed) and open it for writing. ``afresh``: a
        malformed file is set aside as ``NAME.bad`` and the state starts empty instead."""
        problem = None
        try:
            saved = cls.load(path)
        except StateError as exc:
            if not afresh:
                raise
            problem, saved = str(exc), None
            try:
                os.replace(path, path.with_name(path.name + ".bad"))
            except OSError as err:
                raise StateError(f"{path}: cannot be set aside ({err})") from None
        state = cls(path, saved)
        state.problem = problem
        state._connect()
        return state

    def _connect(self) -> None:
        try:
            db = sqlite3.connect(
                self.path, timeout=5, check_same_thread=False, isolation_level=None
            )
            db.execute("PRAGMA trusted_schema = OFF")
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: cannot be written ({exc})") from None
        self._db = db

    def note_new(self, task: Task) -> None:
        self._rows += 1
        task.row = self._rows
        self._new[task.task_id] = task

    def note_changed(self, task: Task) -> None:
        if task.task_id not in self._new:
            self._changed[task.task_id] = task

    @property
    def dirty(self) -> bool:
        return bool(self._new or self._changed)

    def take(
        self, meta: dict[str, Any]
    ) -> tuple[str, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """What to write now, taken (the caller's thread owns the tasks); ``write`` it next."""
        new = [_new_row(t) for t in self._new.values()]
        changed = [_update_row(t) for t in self._changed.values()]
        self._new.clear()
        self._changed.clear()
        return json.dumps({"version": VERSION, **meta}, separators=(",", ":")), new, changed

    def write(
        self,
        taken: tuple[str, Iterable[tuple[Any, ...]], Iterable[tuple[Any, ...]]],
    ) -> None:
        """One transaction (may run in a worker thread: writes are serialised)."""
        meta, new, changed = taken
        with self._lock:
            db = self._db
            if db is None:
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                try:  # the tables come with the first save: a file is empty or complete
                    for statement in _SCHEMA:
                        db.execute(statement.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
                    db.executemany(_INSERT, new)
                    db.executemany(_UPDATE, changed)
                    db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('state', ?)", (meta,)
                    )
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:  # a full disk, say: the run goes on, the file is stale
                self.failure = self.failure or f"{self.path}: not saved ({exc})"

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
