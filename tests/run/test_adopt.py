"""When a lock entry is taken over the state DB's row (flux_pipeline/run/adopt.py
``behind``, docs/lockfile.md "Adoption")."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flux_pipeline.run.adopt import behind
from flux_pipeline.states import TaskRecord, TaskState

S = TaskState
BASE = TaskRecord(
    key="a" * 64,
    readable_id="shot@n=1#1",
    step="shot",
    parent_key=None,
    parent_output_index=None,
    state=S.PLANNED,
    task_id=None,
    request_json="{}",
    output="shot/n-1-1",
    output_format="png",
    result_urls=(),
    fail_code=None,
    fail_msg=None,
    attempts=1,
    api_create_time=None,
    api_complete_time=None,
    cost_time=None,
    first_submitted_at=None,
    submitted_at=None,
    finished_at=None,
    downloaded_at=None,
    updated_at=0.0,
)


@pytest.mark.parametrize(
    ("db", "lock", "adopted"),
    [
        (None, (S.SUBMITTING, 1), True),  # no row: the lock, ambiguous stays ambiguous
        ((S.PLANNED, 1), (S.SUBMITTED, 1), True),  # the DB never heard of the taskId
        ((S.SUBMITTING, 1), (S.DOWNLOADED, 1), True),  # an older DB
        ((S.FAILED, 1), (S.DOWNLOADED, 1), True),  # another machine has the image
        ((S.PLANNED, 1), (S.SUBMITTING, 1), False),  # since the lock: it never left
        ((S.SUBMITTED, 1), (S.SUBMITTING, 1), False),  # since the lock: its taskId came
        ((S.SUBMITTING, 2), (S.FAILED, 1), False),  # a retry made since the lock
        ((S.DOWNLOADED, 1), (S.EXPIRED, 1), False),  # the files are here
        ((S.DOWNLOADED, 1), (S.DOWNLOADED, 1), False),  # the same: the DB's memo stays
        ((S.DOWNLOADED, 1), (S.SUBMITTED, 2), True),  # regenerated elsewhere since
    ],
)
def test_a_lock_entry_is_adopted_only_where_the_db_is_behind(
    db: tuple[TaskState, int] | None, lock: tuple[TaskState, int], adopted: bool
) -> None:
    row = None if db is None else replace(BASE, state=db[0], attempts=db[1])
    known = replace(BASE, state=lock[0], attempts=lock[1])
    assert behind(row, known) is adopted
