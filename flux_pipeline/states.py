"""A task's recorded state: the state enum, what each state means, and the records read back.

This is the one home of the rules about states: their texts for people, which states are
failed and which unfinished, and the failure code shown for a failed task. The transitions
are drawn in ``docs/states.md``; the resume rule (what a rerun does in each state) is
``flux_pipeline/plan/resume.py``; the buckets a run's outcome is counted in are
``flux_pipeline/outcome.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class TaskState(StrEnum):
    """A task's persisted state. ``planned`` is also what a task without a DB row is."""

    PLANNED = "planned"
    SUBMITTING = "submitting"  # written before the create is sent
    SUBMITTED = "submitted"  # taskId known
    SUCCEEDED = "succeeded"  # result URLs known, not all on disk yet
    DOWNLOADED = "downloaded"  # every output on disk, hashes recorded
    FAILED = "failed"  # terminal: failCode/failMsg
    EXPIRED = "expired"  # result URLs gone before we downloaded them

    @property
    def text(self) -> str:
        """What the state means, for a person (gallery cards, junit messages, status)."""
        return STATE_TEXT[self]

    @property
    def failed(self) -> bool:
        return self in FAILED_STATES

    @property
    def unfinished(self) -> bool:
        return self in UNFINISHED_STATES


STATE_TEXT: dict[TaskState, str] = {
    TaskState.PLANNED: "not started yet",
    TaskState.SUBMITTING: "ambiguous: create sent, answer lost",
    TaskState.SUBMITTED: "in flight at the API",
    TaskState.SUCCEEDED: "finished at the API, not downloaded yet",
    TaskState.DOWNLOADED: "done",
    TaskState.FAILED: "failed",
    TaskState.EXPIRED: "expired before download",
}
FAILED_STATES = frozenset({TaskState.FAILED, TaskState.EXPIRED})
UNFINISHED_STATES = frozenset(
    {TaskState.PLANNED, TaskState.SUBMITTING, TaskState.SUBMITTED, TaskState.SUCCEEDED}
)
# How far a task got within one attempt, for adoption (flux_pipeline/run/adopt.py): a planned
# row that has attempts is a create that provably never left (``Store.mark_unsent``), so it
# comes after that attempt's ``submitting``
STAGE: dict[TaskState, int] = {
    TaskState.SUBMITTING: 0,
    TaskState.PLANNED: 1,
    TaskState.SUBMITTED: 2,
    TaskState.SUCCEEDED: 3,
    TaskState.FAILED: 4,
    TaskState.EXPIRED: 4,
    TaskState.DOWNLOADED: 5,
}
EXPIRED_CODE = "EXPIRED"
FALLBACK_FAILURE_CODE = "FAILED"  # a failed task whose answer named no failCode


def failure_code(state: TaskState | str, fail_code: str | None) -> str:
    """The code a failed or expired task is filed under in reports."""
    if fail_code:
        return fail_code
    return EXPIRED_CODE if state == TaskState.EXPIRED else FALLBACK_FAILURE_CODE


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputRecord:
    index: int
    path: str  # relative to OUT
    url: str
    bytes: int
    sha256: str
    # the file's st_mtime_ns when we wrote it or last hashed it and found it right; None:
    # not memoised (docs/resume.md, "When is a task done?"; flux_pipeline/run/verify.py)
    mtime_ns: int | None = None


@dataclass(slots=True, kw_only=True)
class TaskRecord:
    """A task's row in the state DB, as read back."""

    key: str
    readable_id: str
    step: str
    parent_key: str | None
    parent_output_index: int | None
    state: TaskState
    task_id: str | None
    request_json: str
    output: str
    output_format: str
    result_urls: tuple[str, ...]
    fail_code: str | None
    fail_msg: str | None
    attempts: int
    api_create_time: int | None
    api_complete_time: int | None
    cost_time: int | None
    first_submitted_at: float | None
    submitted_at: float | None
    finished_at: float | None
    downloaded_at: float | None
    updated_at: float
    outputs: list[OutputRecord] = field(default_factory=list)
    # a deliberate regeneration (flux_pipeline/plan/generations.py): its generation 0 key and
    # its number; None and 0 for a task never regenerated
    base_key: str | None = None
    generation: int = 0
