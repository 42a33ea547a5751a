"""Resume rules (docs/resume.md): given what the state DB knows of a task, what happens to it now.

Pure: no I/O. ``plan`` shows the decision, ``run`` acts on it; both call ``decide``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from flux_pipeline.states import TaskState

RESULT_URL_LIFETIME = 15 * 24 * 3600  # seconds a result URL lives after its task finished
PARENT_URL_MAX_AGE = 14 * 24 * 3600  # a parent older than this: its images go inline


def urls_expired(finished_at: float | None, now: float) -> bool:
    """Have a finished task's result URLs expired (by the time it finished)?"""
    return finished_at is not None and now - finished_at >= RESULT_URL_LIFETIME


def urls_aging(finished_at: float | None, now: float) -> bool:
    """Did a finished task finish so long ago (``PARENT_URL_MAX_AGE``) that its result URLs may
    be gone before a child that edits its image is created? Such a parent's images go inline."""
    return finished_at is not None and now - finished_at > PARENT_URL_MAX_AGE


class Reason(StrEnum):
    """Why a task would (or would not) run, as ``plan`` shows it."""

    NEW = "new"
    DONE = "done"
    IN_FLIGHT = "in flight"
    AMBIGUOUS = "ambiguous"
    FAILED = "failed"
    EXPIRED = "expired"
    OUTPUT_MISSING = "done but output missing"
    WAITING_FOR_PARENT = "waiting for parent"
    BLOCKED = "blocked by parent"  # its parent is held (failed, ambiguous, expired)


class Action(StrEnum):
    SKIP = "skip"  # nothing to do
    SUBMIT = "submit"  # send a create request (pays)
    POLL = "poll"  # has a taskId: poll it, never resubmit
    DOWNLOAD = "download"  # result URLs known: fetch them again
    WAIT = "wait"  # chained task whose parent output is not on disk yet
    HOLD = "hold"  # ambiguous or failed, and policy says leave it


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    retry_failed: bool = False
    resubmit_ambiguous: bool = False
    regenerate_expired: bool = False  # re-create expired tasks (pays again), not failed ones


@dataclass(frozen=True, slots=True)
class Decision:
    reason: Reason
    action: Action

    @property
    def pays(self) -> bool:
        return self.action is Action.SUBMIT


def decide(
    state: TaskState | None,
    *,
    outputs_intact: bool = True,
    parent_ready: bool = True,
    parent_held: bool = False,
    policy: Policy = Policy(),
    urls_expired: bool = False,
) -> Decision:
    """The resume rule for one task.

    ``state`` is None when the DB has no row. ``outputs_intact`` matters only for downloaded
    tasks; ``parent_ready`` only for chained tasks that have not been submitted yet;
    ``urls_expired`` (its result URLs are past their lifetime) only for a task whose files
    would have to be downloaded: it is expired, not downloaded. ``parent_held``: the parent
    (or an ancestor) is left as it is by the policy (``Action.HOLD``), so a chained task not
    sent yet cannot run: blocked, and a run does not create it.
    """
    regenerate = policy.retry_failed or policy.regenerate_expired
    if urls_expired and (
        state is TaskState.SUCCEEDED or (state is TaskState.DOWNLOADED and not outputs_intact)
    ):
        return Decision(Reason.EXPIRED, Action.SUBMIT if regenerate else Action.HOLD)
    if state is None or state is TaskState.PLANNED:
        if parent_held:
            return Decision(Reason.BLOCKED, Action.HOLD)
        if not parent_ready:
            return Decision(Reason.WAITING_FOR_PARENT, Action.WAIT)
        return Decision(Reason.NEW, Action.SUBMIT)
    if state is TaskState.DOWNLOADED:
        if outputs_intact:
            return Decision(Reason.DONE, Action.SKIP)
        return Decision(Reason.OUTPUT_MISSING, Action.DOWNLOAD)
    if state is TaskState.SUCCEEDED:
        return Decision(Reason.IN_FLIGHT, Action.DOWNLOAD)
    if state is TaskState.SUBMITTED:
        return Decision(Reason.IN_FLIGHT, Action.POLL)
    if state is TaskState.SUBMITTING:
        action = Action.SUBMIT if policy.resubmit_ambiguous else Action.HOLD
        return Decision(Reason.AMBIGUOUS, action)
    if state is TaskState.FAILED:
        return Decision(Reason.FAILED, Action.SUBMIT if policy.retry_failed else Action.HOLD)
    return Decision(Reason.EXPIRED, Action.SUBMIT if regenerate else Action.HOLD)
