"""What the engine asks of the API: ``FluxClient`` in a run, an in-memory fake in tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from flux_pipeline.run.api import TaskStatus


class ApiClient(Protocol):
    async def create_task(self, body: Mapping[str, Any], *, speculative: bool = False) -> str:
        """The new task's taskId; raises the errors of ``flux_pipeline.errors``."""
        ...

    async def get_status(self, task_id: str) -> TaskStatus: ...
