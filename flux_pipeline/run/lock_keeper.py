"""Keeping the lock file current during ``run`` (docs/lockfile.md): written at every stop of
the run (``runner._finish``: end, signal, deadline, error) and at most every 30 s while it
runs, so a cancelled CI job leaves a current one. The format is ``report/lockfile.py``'s."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio

from flux_pipeline.plan.expand import Plan
from flux_pipeline.report.lockfile import Lock, load_lock, lock_entries, lock_path_for, write_lock
from flux_pipeline.run.store import Store
from flux_pipeline.states import TaskRecord

LOCK_INTERVAL = 30.0  # seconds between two writes of the lock during a run


class LockKeeper:
    """Writes ``plan``'s lock at ``path``; ``old`` is the lock read at the start (its entries
    the state DB lacks are kept: every key ever sent stays)."""

    def __init__(
        self,
        path: Path,
        plan: Plan,
        old: Lock | None,
        *,
        echo: Callable[[str], None] = print,
        interval: float = LOCK_INTERVAL,
    ) -> None:
        self.path = path
        self.plan = plan
        self.old = old
        self.interval = interval
        self._echo = echo
        self._scope = anyio.CancelScope()
        self._failed = False
        self._writing = threading.Lock()  # the periodic write and the last one never overlap
        self.objects: dict[str, str] = {}  # SHA-256 -> object key of outputs published

    @classmethod
    def next_to_manifest(cls, plan: Plan, out_dir: Path) -> LockKeeper:
        """The keeper of the lock beside ``plan``'s manifest (``merge``), its old lock read."""
        path = lock_path_for(plan.manifest_path)
        return cls(path, plan, load_lock(path, plan=plan, out_dir=out_dir))

    @property
    def on_disk(self) -> bool:
        """Was a lock read at the start (a run that changed nothing need not rewrite it)?"""
        return self.old is not None and self.path.exists()

    def write(self, records: Mapping[str, TaskRecord]) -> bool:
        """The lock of ``records`` (and the old lock), written if its text changed."""
        with self._writing:
            entries = lock_entries(self.plan, records, self.old, self.objects)
            self.old = Lock(path=self.path, manifest=self.plan.name, entries=entries)
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                return write_lock(self.path, self.plan.name, entries)
            except OSError as exc:
                self._fail(exc)
                return False

    def _fail(self, exc: OSError) -> None:
        if not self._failed:  # said once
            self._echo(f"flux-pipeline: cannot write the lock file {self.path}: {exc}")
        self._failed = True

    async def write_from(self, store: Store) -> bool:
        records = await store.records()
        return await anyio.to_thread.run_sync(self.write, records)

    async def every(self, store: Store) -> None:
        """Write the lock every ``interval`` seconds until ``stop``."""
        with self._scope:
            while True:
                await anyio.sleep(self.interval)
                await self.write_from(store)

    def stop(self) -> None:
        self._scope.cancel()
