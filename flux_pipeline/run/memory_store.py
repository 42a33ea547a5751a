"""A ``StateStore`` in memory: the transitions of docs/states.md on a dict of ``TaskRecord``.

For engine tests (no SQLite, no threads) and tools that plan without a state DB. Every
transition applies at once, so there is nothing to flush; ``writes`` counts them and each
counts as its own batch. ``refuse`` makes writes fail as the SQLite writer's would (a
predicate on the transition's name and the task key): the write is not applied, a line is
added to ``failures``, and a refused ``submitting`` or taskId is ``fatal``, as in ``Store``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from flux_pipeline.errors import StateError
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.spec_record import spec_record
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState


class MemoryStore:
    def __init__(
        self,
        records: Iterable[TaskRecord] = (),
        *,
        clock: Callable[[], float] = time.time,
        refuse: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.rows: dict[str, TaskRecord] = {r.key: _copy(r) for r in records}
        self.writes = 0
        self.batches = 0
        self.write_seconds = 0.0
        self._clock = clock
        self._refuse = refuse
        self.failures: list[str] = []
        self._broken: set[str] = set()
        self.fatal: StateError | None = None
        self._on_fatal: Callable[[StateError], None] | None = None

    def watch(self, on_fatal: Callable[[StateError], None]) -> None:
        self._on_fatal = on_fatal
        if self.fatal is not None:
            on_fatal(self.fatal)

    def _refused(self, op: str, key: str, *, critical: bool = False) -> bool:
        """True (and recorded) when the test says this write cannot be stored; as in
        ``Store``, later writes of that task are then skipped, except a new ``submitting``."""
        if key in self._broken and not critical:
            self.failures.append(f"memory: could not store {op} of task {key}: skipped")
            return True
        if self._refuse is None or not self._refuse(op, key):
            if critical:
                self._broken.discard(key)
            return False
        line = f"memory: could not store {op} of task {key}: refused"
        self.failures.append(line)
        self._broken.add(key)
        if critical and self.fatal is None:
            self.fatal = StateError(line)
            if self._on_fatal is not None:
                self._on_fatal(self.fatal)
        return True

    async def records(self, *, with_outputs: bool = True) -> dict[str, TaskRecord]:
        copies = {key: _copy(r) for key, r in self.rows.items()}
        if not with_outputs:
            for record in copies.values():
                record.outputs.clear()
        return copies

    def state(self, key: str) -> TaskState:
        """A task's state now (``planned`` without a row)."""
        row = self.rows.get(key)
        return row.state if row else TaskState.PLANNED

    def _update(self, key: str, **changes: Any) -> None:
        row = self.rows[key]
        self.rows[key] = dataclasses.replace(row, updated_at=self._clock(), **changes)
        self.writes += 1
        self.batches += 1

    async def mark_submitting(self, spec: TaskSpec) -> None:
        if self.fatal is not None:
            raise StateError(str(self.fatal))
        if self._refused("submitting", spec.key, critical=True):
            raise StateError(self.failures[-1])
        now = self._clock()
        row = self.rows.get(spec.key)
        if row is None:
            row = spec_record(spec, TaskState.SUBMITTING, updated_at=now, first_submitted_at=now)
            self.rows[spec.key] = row
        self._update(
            spec.key,
            state=TaskState.SUBMITTING,
            readable_id=spec.readable_id,
            step=spec.step,
            output=spec.output,
            task_id=None,
            result_urls=(),
            fail_code=None,
            fail_msg=None,
            attempts=row.attempts + 1,
        )

    def mark_submitted(self, key: str, task_id: str) -> None:
        if self._refused(f"taskId {task_id}", key, critical=True):
            return
        self._update(key, state=TaskState.SUBMITTED, task_id=task_id, submitted_at=self._clock())

    def mark_unsent(self, key: str) -> None:
        if self._refused("unsent", key):
            return
        self._update(key, state=TaskState.PLANNED, attempts=self.rows[key].attempts - 1)

    def mark_succeeded(
        self,
        key: str,
        urls: Sequence[str],
        *,
        create_time: int | None,
        complete_time: int | None,
        cost_time: int | None,
    ) -> None:
        if self._refused("succeeded", key):
            return
        self._update(
            key,
            state=TaskState.SUCCEEDED,
            result_urls=tuple(urls),
            api_create_time=create_time,
            api_complete_time=complete_time,
            cost_time=cost_time,
            finished_at=self._clock(),
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
        if self._refused(f"failed {code}", key):
            return
        self._update(
            key,
            state=TaskState.FAILED,
            fail_code=code,
            fail_msg=message,
            api_create_time=create_time,
            api_complete_time=complete_time,
            cost_time=cost_time,
            finished_at=self._clock(),
        )

    def mark_expired(self, key: str, message: str) -> None:
        if self._refused("expired", key):
            return
        self._update(key, state=TaskState.EXPIRED, fail_code="RESULT_EXPIRED", fail_msg=message)

    def mark_downloaded(self, key: str, outputs: Iterable[OutputRecord]) -> None:
        if self._refused("downloaded", key):
            return
        by_index = {o.index: o for o in self.rows[key].outputs}
        by_index.update((o.index, o) for o in outputs)
        merged = [by_index[i] for i in sorted(by_index)]
        self._update(key, state=TaskState.DOWNLOADED, outputs=merged, downloaded_at=self._clock())

    def refresh_memos(self, memos: Iterable[tuple[str, int, int]]) -> None:
        """Record verification memos (flux_pipeline/run/verify.py): one batch, no task change."""
        memos = list(memos)
        for key, index, mtime_ns in memos:
            row = self.rows[key]
            row.outputs = [
                dataclasses.replace(o, mtime_ns=mtime_ns) if o.index == index else o
                for o in row.outputs
            ]
        self.writes += len(memos)
        self.batches += 1


def _copy(record: TaskRecord) -> TaskRecord:
    return dataclasses.replace(record, outputs=list(record.outputs))
