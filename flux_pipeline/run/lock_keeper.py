"""Keeping the lock file current during ``run`` (docs/lockfile.md): written at every stop of
the run (``runner._finish``: end, signal, deadline, error) and at most every 30 s while it
runs, so a cancelled CI job leaves a current one. The format is ``report/lockfile.py``'s."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import anyio

from flux_pipeline.errors import UsageError
from flux_pipeline.plan.expand import Plan
from flux_pipeline.report.lockfile import (
    Lock,
    LockEntry,
    each_lock_entry,
    entry_of,
    load_lock,
    lock_path_for,
    sent,
)
from flux_pipeline.report.locktext import (
    entry_block,
    lock_stream,
    text_sha256,
    write_lock_stream,
)
from flux_pipeline.run.lock_memo import RECORD_SQL, behind
from flux_pipeline.run.store import Store
from flux_pipeline.states import TaskRecord

LOCK_INTERVAL = 30.0  # seconds between two writes of the lock during a run


class LockKeeper:
    """Writes ``plan``'s lock at ``path``; ``old`` is the lock read at the start (its entries
    the state DB lacks are kept: every key ever sent stays).

    The text is kept as one block per task (``lockfile.entry_block``): the first write makes
    every block; a later one remakes only the blocks of the tasks written since (the store's
    ``take_touched``), so the write at a stop of a 100,000-task run costs a join and a file
    write, not 100,000 entries made again (docs/performance.md)."""

    def __init__(
        self,
        path: Path,
        plan: Plan,
        old: Lock | None,
        *,
        echo: Callable[[str], None] = print,
        interval: float = LOCK_INTERVAL,
        unread: bool = False,
        out_dir: Path | None = None,
    ) -> None:
        self.path = path
        self.plan = plan
        self.old = old
        # ``unread``: the file is the text the state DB covers (run/lock_memo.py), not read
        # yet: read (its paths confined to ``out_dir``) only if a write needs its entries
        self._unread = unread
        self._out_dir = out_dir
        # keys whose block is the old lock's and ahead of the DB's row (or there is none)
        self._uncovered: set[str] = set()
        self.covered: str | None = None  # SHA-256 of the text the last write left, if covered
        self.interval = interval
        self._echo = echo
        self._scope: anyio.CancelScope | None = None  # of ``every``
        self._stopped = False
        self._failed = False
        self._written = False
        self._writing = threading.Lock()  # the periodic write and the last one never overlap
        self._blocks: dict[str, str] | None = None  # key -> its block of the lock's text
        self._ids: dict[str, str] = {}  # key -> readable id (a chained task names its parent)
        self._stored: set[str] = set()  # keys with an output in the bucket (lock format 2)
        self._objects: dict[str, str] = {}  # SHA-256 -> object key of outputs published
        self._objects_new = False  # published since the last write: every block is remade

    @property
    def objects(self) -> Mapping[str, str]:
        return self._objects

    def add_objects(self, found: Mapping[str, str]) -> None:
        """Outputs published to the bucket (SHA-256 -> object key, docs/storage.md)."""
        if any(self._objects.get(sha) != key for sha, key in found.items()):
            self._objects.update(found)
            self._objects_new = True

    @classmethod
    def next_to_manifest(cls, plan: Plan, out_dir: Path) -> LockKeeper:
        """The keeper of the lock beside ``plan``'s manifest (``merge``), its old lock read."""
        path = lock_path_for(plan.manifest_path)
        return cls(path, plan, load_lock(path, plan=plan, out_dir=out_dir))

    @property
    def on_disk(self) -> bool:
        """Was a lock read at the start, or written since (a run that changed nothing need
        not rewrite it)?"""
        return (self.old is not None or self._unread or self._written) and self.path.exists()

    def write(
        self, records: Mapping[str, TaskRecord], *, changed: bool = False, memo: bool = False
    ) -> bool:
        """The lock of ``records`` (and the old lock), written if its text changed.
        ``changed``: ``records`` are only the rows written since the last write; ``memo``:
        set ``covered`` when every block was made from a row of the state DB."""
        with self._writing:
            self.covered = None
            if self._unread:
                try:
                    self.old = load_lock(self.path, plan=self.plan, out_dir=self._out_dir)
                except UsageError as exc:  # changed since the run began, and broken
                    self._fail(exc)
                    return False
                self._unread = False
            old = self.old.entries if self.old is not None else {}
            known = self._written and self.path.exists()  # the file holds our last text
            if self._blocks is None or not changed:
                self._objects_new = False
                blocks, self._ids, self._stored = self._every_block(records, old)
                dirty = blocks != self._blocks
                self._blocks = blocks
            else:
                dirty = False
                for key, record in records.items():
                    if not sent(record):
                        continue
                    parent = self._ids.get(record.parent_key) if record.parent_key else None
                    entry = entry_of(self.plan, record, parent, old.get(key), self._objects)
                    block = entry_block(entry)
                    dirty = dirty or self._blocks.get(key) != block
                    self._blocks[key] = block
                    self._uncovered.discard(key)
                    self._ids[key] = entry.readable_id
                    if any(o.stored for o in entry.outputs):
                        self._stored.add(key)
            blocks, stored = self._blocks, bool(self._stored)
            text = partial(lock_stream, self.plan.name, blocks, stored=stored)
            # the text's SHA-256 for the memo, made once: the comparison with the file uses it
            digest = text_sha256(text()) if memo and not self._uncovered else None
            if known and not dirty:
                wrote = False  # the file already says exactly this: not even read
            else:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    wrote = write_lock_stream(self.path, text, compare=not known, sha256=digest)
                except OSError as exc:
                    self._fail(exc)
                    return False
                self._written = True
            self.covered = digest
            return wrote

    def _every_block(
        self, records: Mapping[str, TaskRecord], old: Mapping[str, LockEntry]
    ) -> tuple[dict[str, str], dict[str, str], set[str]]:
        """The blocks of ``lock_entries(plan, records, old lock)``, with each key's readable id
        and the keys with an output in the bucket: each entry dropped once its block is made,
        so a 100,000-task lock never holds its entries and its text at once."""
        blocks: dict[str, str] = {}
        ids: dict[str, str] = {}
        stored: set[str] = set()
        self._uncovered = set()
        for key, entry in each_lock_entry(self.plan, records, old, self._objects):
            row = records.get(key)
            if (row is None or not sent(row)) and behind(row, entry):  # the old lock's
                self._uncovered.add(key)
            blocks[key] = entry_block(entry)
            ids[key] = entry.readable_id
            if any(o.stored for o in entry.outputs):
                stored.add(key)
        return blocks, ids, stored

    def forget(self) -> None:
        """Drop the text kept for the next write (the run's last write is done: the reports
        are written next, without it). A later write makes every block again."""
        with self._writing:
            self._blocks = None
            self._ids = {}
            self._stored = set()

    def _fail(self, exc: OSError | UsageError) -> None:
        if not self._failed:  # said once
            self._echo(f"flux-pipeline: cannot write the lock file {self.path}: {exc}")
        self._failed = True

    async def write_from(
        self, store: Store, records: Mapping[str, TaskRecord] | None = None
    ) -> bool:
        """Write the lock of ``store``'s rows: the first time all of them, then those written
        since. ``records``: every row, read after everything queued was committed (a stop
        reads them after ``end_run``, run/finish.py)."""
        touched = store.take_touched()  # before the flush: a later write is in the next set
        try:
            if records is None:  # the rows read below are then at least as new as ``touched``
                await store.flush_and_wait()
            final = records is not None  # the write at the stop records the memo
            if self._blocks is None or self._objects_new:
                rows = records if records is not None else await store.records()
                wrote = await anyio.to_thread.run_sync(partial(self.write, rows, memo=final))
            else:
                if records is None:
                    rows = await store.records(keys=touched)
                else:
                    rows = {key: records[key] for key in touched if key in records}
                write = partial(self.write, rows, changed=True, memo=final)
                wrote = await anyio.to_thread.run_sync(write)
        except BaseException:  # cancelled at a stop, a read that failed: not written
            store.touch_again(touched)  # so the next write (the one at the stop) has them
            raise
        if self.covered is not None:  # the next run need not read it (run/lock_memo.py)
            store.enqueue(RECORD_SQL, (self.covered, self.plan.name), what="the lock memo")
        return wrote

    async def every(self, store: Store) -> None:
        """Write the lock every ``interval`` seconds until ``stop``."""
        with anyio.CancelScope() as self._scope:
            if self._stopped:
                self._scope.cancel()
            while True:
                await anyio.sleep(self.interval)
                await self.write_from(store)

    def stop(self) -> None:
        self._stopped = True
        if self._scope is not None:
            self._scope.cancel()
