"""Merge rules: the more advanced row wins (then the newest), exit codes, and bad sources."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.outcome import exit_code_for
from flux_pipeline.plan.expand import load_plan
from flux_pipeline.report.entry import TaskEntry, Timestamps
from flux_pipeline.run.merge import buckets_of, combine, records_from_report
from flux_pipeline.run.store import Store, import_records, read_records
from flux_pipeline.states import TaskRecord, TaskState

MANIFEST = """\
version: 1
name: rules
steps:
  - id: gen
    matrix:
      n: [a, b]
    prompt: "picture {{ n }}"
"""


def record(key: str, state: TaskState, updated: float, task_id: str | None = "t") -> TaskRecord:
    return TaskRecord(
        key=key,
        readable_id=f"gen#{key}",
        step="gen",
        parent_key=None,
        parent_output_index=None,
        state=state,
        task_id=task_id,
        request_json="{}",
        output=f"gen/{key}",
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
        updated_at=updated,
    )


@pytest.mark.parametrize(
    ("old", "new", "winner"),
    [
        (TaskState.FAILED, TaskState.DOWNLOADED, "new"),  # a retried failure that succeeded
        (TaskState.DOWNLOADED, TaskState.SUBMITTED, "old"),  # never back from downloaded
        (TaskState.SUCCEEDED, TaskState.SUBMITTING, "old"),
        (TaskState.FAILED, TaskState.SUBMITTED, "new"),  # same rank: the newer row
        (TaskState.SUBMITTED, TaskState.PLANNED, "old"),
    ],
)
def test_the_more_advanced_row_wins_in_either_order(
    old: TaskState, new: TaskState, winner: str
) -> None:
    a, b = record("k", old, updated=1.0), record("k", new, updated=2.0)
    expected = a if winner == "old" else b
    assert combine([{"k": a}, {"k": b}])["k"] is expected
    assert combine([{"k": b}, {"k": a}])["k"] is expected


def exit_code_of(states: dict[TaskState, int], missing: int) -> int:
    """What merge exits with for tasks in ``states`` and ``missing`` files found nowhere."""
    every = [state for state, n in states.items() for _ in range(n)]
    return exit_code_for(buckets_of(every), stopped=missing > 0)


def test_exit_codes_follow_run() -> None:
    done, failed, expired = TaskState.DOWNLOADED, TaskState.FAILED, TaskState.EXPIRED
    assert exit_code_of({done: 3}, missing=0) == 0
    assert exit_code_of({done: 3, failed: 1}, missing=0) == 1
    assert exit_code_of({done: 3, expired: 1}, missing=0) == 1
    assert exit_code_of({done: 3, TaskState.PLANNED: 1, failed: 1}, missing=0) == 3
    assert exit_code_of({done: 3}, missing=1) == 3
    for unfinished in (TaskState.SUBMITTED, TaskState.SUCCEEDED):
        assert exit_code_of({done: 3, failed: 1, unfinished: 1}, missing=0) == 3
    # ambiguous is held by a rerun (no progress without --resubmit-ambiguous): like failed
    assert exit_code_of({done: 3, TaskState.SUBMITTING: 1}, missing=0) == 1
    assert exit_code_of({done: 3, failed: 1, TaskState.SUBMITTING: 1}, missing=0) == 1


def test_conflicting_rows_in_two_dbs_keep_the_advanced_one(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    plan = load_plan(manifest)
    first, second = plan.tasks
    old_db, new_db = tmp_path / "old" / "a.sqlite3", tmp_path / "new" / "b.sqlite3"
    failed = record(first.key, TaskState.FAILED, 5.0)  # in an earlier merged DB
    retried = record(first.key, TaskState.SUBMITTED, 9.0, task_id="t2")  # --retry-failed
    other = record(second.key, TaskState.SUBMITTED, 1.0, task_id="t3")
    import_records(old_db, [failed, other])
    import_records(new_db, [retried])
    out = tmp_path / "out"
    code = run_cli(["merge", str(manifest), "--from", str(old_db), "--from", str(new_db),
                    "--out", str(out)])  # fmt: skip
    assert code == 3  # two tasks in flight: unfinished
    merged = anyio.run(read_records, out / ".flux-pipeline" / "state.sqlite3")
    assert merged[first.key].task_id == "t2"
    assert merged[first.key].state is TaskState.SUBMITTED
    assert merged[second.key].task_id == "t3"
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["submitted"] == 2
    assert report["run"]["settings"]["state_dbs"] == 2


def test_report_entries_rebuild_records(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    plan = load_plan(manifest)
    first, second = plan.tasks
    report = tmp_path / "report.json"
    entries = [
        TaskEntry(readable_id=first.readable_id, key=first.key, step="gen",
                  state=TaskState.SUCCEEDED, task_id="t1", timestamps=Timestamps(submitted=3.0)),
        TaskEntry(readable_id=second.readable_id, key=second.key, step="gen"),
        TaskEntry(readable_id="gone#1", key="0" * 64, step="gen", state=TaskState.DOWNLOADED,
                  task_id="t9"),
    ]  # fmt: skip
    tasks = [e.to_json() for e in entries]
    report.write_text(json.dumps({"format_version": 1, "tasks": tasks}))
    records, ignored = records_from_report(plan, report)
    assert ignored == 1  # not in the manifest any more
    assert list(records) == [first.key]  # planned rows are not rows
    # no result URLs in a report: polled again on the next run, never resubmitted
    assert records[first.key].state is TaskState.SUBMITTED
    assert records[first.key].task_id == "t1"
    assert records[first.key].updated_at == 3.0


def test_bad_sources_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = str(tmp_path / "out")
    assert run_cli(["merge", str(manifest), "--from", str(tmp_path / "nope"), "--out", out]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_cli(["merge", str(manifest), "--from", str(tmp_path / "empty"), "--out", out]) == 2
    assert "no state DB" in capsys.readouterr().err

    async def foreign_db() -> None:
        async with await Store.open(tmp_path / "x" / "s.sqlite3") as store:
            await store.begin_run(manifest="other", manifest_sha256="0", settings={}, planned=0)

    anyio.run(foreign_db)
    assert run_cli(["merge", str(manifest), "--from", str(tmp_path / "x"), "--out", out]) == 2
    assert "is of manifest 'other', not 'rules'" in capsys.readouterr().err
