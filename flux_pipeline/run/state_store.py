"""What the engine uses of the state DB (docs/states.md): ``Store`` (SQLite) in a run,
``MemoryStore`` in engine tests.

``mark_submitting`` is awaited: it is durable before the create is sent. Every other
transition is queued and returns at once; whoever ends the run flushes the queue. A write
that cannot be stored never raises at the caller (it is recorded in ``failures``) except
``mark_submitting`` (``StateError``: the create must not be sent); ``watch`` names who to
tell once the run must stop submitting (a taskId not stored, a full disk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from flux_pipeline.errors import StateError
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.states import OutputRecord, TaskRecord


class StateStore(Protocol):
    @property
    def writes(self) -> int: ...

    @property
    def batches(self) -> int: ...

    @property
    def write_seconds(self) -> float: ...

    @property
    def failures(self) -> list[str]: ...

    def watch(self, on_fatal: Callable[[StateError], None]) -> None: ...

    async def records(self, *, with_outputs: bool = True) -> dict[str, TaskRecord]: ...

    async def mark_submitting(self, spec: TaskSpec) -> None: ...

    def mark_submitted(self, key: str, task_id: str) -> None: ...

    def mark_unsent(self, key: str) -> None: ...

    def mark_succeeded(
        self,
        key: str,
        urls: Sequence[str],
        *,
        create_time: int | None,
        complete_time: int | None,
        cost_time: int | None,
    ) -> None: ...

    def mark_failed(
        self,
        key: str,
        code: str,
        message: str,
        *,
        create_time: int | None = None,
        complete_time: int | None = None,
        cost_time: int | None = None,
    ) -> None: ...

    def mark_expired(self, key: str, message: str) -> None: ...

    def mark_downloaded(self, key: str, outputs: Iterable[OutputRecord]) -> None: ...
