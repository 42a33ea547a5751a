"""What the engine asks of the API: ``FluxClient`` in a run, an in-memory fake in tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from flux_pipeline.run.api import TaskStatus


class ApiClient(Protocol):
    async def create_task(
        self,
        body: Mapping[str, Any],
        *,
        speculative: bool = False,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        """The new task's taskId; raises the errors of ``flux_pipeline.errors``.
        ``before_send`` is awaited right before each attempt is sent (after the request
        budget and the connection slot are held)."""
        ...

    async def get_status(self, task_id: str) -> TaskStatus: ...
