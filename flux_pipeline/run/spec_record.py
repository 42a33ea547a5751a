"""A state DB row (``TaskRecord``) built from a task's spec: the fields the plan decides (key,
ids, lineage, request, output) come from the ``TaskSpec``, the facts from the caller; a fact
not given is unknown. Used where a row is made without a create: the in-memory store,
``merge`` (from a report) and adoption (from the lock file, run/adopt.py)."""

from __future__ import annotations

from collections.abc import Sequence

from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState


def spec_record(
    spec: TaskSpec,
    state: TaskState,
    *,
    updated_at: float,
    task_id: str | None = None,
    result_urls: tuple[str, ...] = (),
    fail_code: str | None = None,
    fail_msg: str | None = None,
    attempts: int = 0,
    api_create_time: int | None = None,
    api_complete_time: int | None = None,
    cost_time: int | None = None,
    first_submitted_at: float | None = None,
    submitted_at: float | None = None,
    finished_at: float | None = None,
    downloaded_at: float | None = None,
    outputs: Sequence[OutputRecord] = (),
) -> TaskRecord:
    return TaskRecord(
        key=spec.key,
        readable_id=spec.readable_id,
        step=spec.step,
        parent_key=spec.parent_key,
        parent_output_index=spec.parent_output_index,
        state=state,
        task_id=task_id,
        request_json=spec.request_json,
        output=spec.output,
        output_format=spec.output_format,
        result_urls=result_urls,
        fail_code=fail_code,
        fail_msg=fail_msg,
        attempts=attempts,
        api_create_time=api_create_time,
        api_complete_time=api_complete_time,
        cost_time=cost_time,
        first_submitted_at=first_submitted_at,
        submitted_at=submitted_at,
        finished_at=finished_at,
        downloaded_at=downloaded_at,
        updated_at=updated_at,
        outputs=list(outputs),
        base_key=spec.base_key if spec.generation else None,
        generation=spec.generation,
    )
