"""TaskEntry and report.json: entries of every state go to JSON and back unchanged (chained
tasks, matrix cells whose values hold ``,`` and ``=``), through the file writer and reader
too; the head alone is read back for a rerun that changed nothing; every writer files a
failure under the same code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.errors import UsageError
from flux_pipeline.plan.expand import Plan, load_plan
from flux_pipeline.report import gallery, github, junit
from flux_pipeline.report.entry import OutputEntry, TaskEntry, Timestamps
from flux_pipeline.report.files import report_is_current, task_entries
from flux_pipeline.report.gallery_data import gallery_data
from flux_pipeline.report.markdown import report_markdown
from flux_pipeline.report.reportfile import RunInfo, load_report, read_head, report_json_pieces
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

from ..run.support import write_manifest

SUBJECTS = ["a,b=c", "fox", "x=1,y=2", "owl", "=q", ",r", "cat"]  # one per state
MANIFEST = f"""\
version: 1
name: entries
steps:
  - id: shot
    matrix:
      subject: {json.dumps(SUBJECTS)}
      style: ["ink,=oil"]
    prompt: "A {{{{ subject }}}} in {{{{ style }}}}"
  - id: edit
    from: shot
    matrix:
      tone: ["warm,tone=cold"]
    prompt: "edit it"
"""
STATES = list(TaskState)


def full_entry(state: TaskState, **changes: object) -> TaskEntry:
    """An entry with every field set (as far as its state has them)."""
    done = state in (TaskState.DOWNLOADED, TaskState.SUCCEEDED)
    fields: dict[str, object] = {
        "readable_id": f"shot@q=a,b=c#1/edit@t=x=y#{STATES.index(state) + 1}",
        "key": "f" * 64,
        "step": "edit",
        "parent": "shot@q=a,b=c#1",
        "parent_output_index": 1,
        "cell": (("t", "x=y"), ("b", "1,2"), ("a", "")),  # not sorted: the order is kept
        "request": {"provider": "auto", "input": {"prompt": 'p \u2192 "q"', "n": [1, 2.5]}},
        "state": state,
        "task_id": None if state is TaskState.PLANNED else "task-1",
        "fail_code": "CONTENT_VIOLATION" if state.failed else None,
        "fail_msg": "blocked\nline two" if state.failed else None,
        "attempts": 2,
        "timestamps": Timestamps(
            first_submitted=1.5, submitted=2.25, finished=3.0, api_create=1700000000123
        ),
        "cost_time": 1234 if done else None,
        "output": "edit/out",
        "outputs": (
            (OutputEntry(path="edit/out-1.png", url="https://x/1", bytes=10, sha256="ab"),)
            if done
            else ()
        ),
    }
    fields.update(changes)
    return TaskEntry(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("state", STATES, ids=[s.value for s in STATES])
def test_every_state_goes_to_json_and_back(state: TaskState) -> None:
    entry = full_entry(state)
    text = json.dumps(entry.to_json(), sort_keys=True)
    back = TaskEntry.from_json(json.loads(text), source="r.json")
    assert back == entry
    assert json.loads(text)["cell"] == [["t", "x=y"], ["b", "1,2"], ["a", ""]]
    root = full_entry(state, parent=None, parent_output_index=None, cell=(), request=None)
    assert TaskEntry.from_json(json.loads(json.dumps(root.to_json())), source="r.json") == root


def test_a_report_without_cells_still_reads() -> None:
    """Reports written before entries had a cell are still read (``diff`` of old and new)."""
    data = full_entry(TaskState.DOWNLOADED).to_json()
    del data["cell"]
    assert TaskEntry.from_json(data, source="old.json").cell == ()


def records_in_every_state(plan: Plan) -> dict[str, TaskRecord]:
    records = {}
    for i, spec in enumerate(plan.tasks):
        state = STATES[i % len(STATES)]
        if state is TaskState.PLANNED:
            continue
        done = state in (TaskState.DOWNLOADED, TaskState.SUCCEEDED)
        outputs = [OutputRecord(index=0, path=f"{spec.output}.png", url=f"https://r/{i}",
                                bytes=100 + i, sha256=f"{i:064x}")] if done else []  # fmt: skip
        records[spec.key] = TaskRecord(
            key=spec.key,
            readable_id=spec.readable_id,
            step=spec.step,
            parent_key=spec.parent_key,
            parent_output_index=spec.parent_output_index,
            state=state,
            task_id=f"task-{i}",
            request_json=spec.request_json,
            output=spec.output,
            output_format="png",
            result_urls=tuple(o.url for o in outputs),
            fail_code="CODE" if state is TaskState.FAILED else None,
            fail_msg="why, = not" if state.failed else None,
            attempts=1 + i % 2,
            api_create_time=1_700_000_000_000 + i,
            api_complete_time=None,
            cost_time=900 + i if done else None,
            first_submitted_at=10.5 + i,
            submitted_at=11.0 + i,
            finished_at=12.25 + i if done or state.failed else None,
            downloaded_at=13.0 + i if state is TaskState.DOWNLOADED else None,
            updated_at=14.0 + i,
            outputs=outputs,
        )
    return records


def write_report(plan: Plan, entries: list[TaskEntry], path: Path, fingerprint: str) -> None:
    run = RunInfo(settings={"shard": "1/2"}, exit_code=1, state_fingerprint=fingerprint)
    path.write_text("".join(report_json_pieces(plan, entries, run)), encoding="utf-8")


def test_the_report_file_round_trips_chained_tasks_and_cells(tmp_path: Path) -> None:
    plan = load_plan(write_manifest(tmp_path, MANIFEST))
    entries = task_entries(plan, records_in_every_state(plan))
    assert {e.state for e in entries} == set(TaskState)
    path = tmp_path / "report.json"
    write_report(plan, entries, path, "fp-1")
    report = load_report(path)
    assert report.tasks == tuple(entries)
    assert report.head.manifest_sha256 == plan.manifest_sha256
    assert report.head.state_fingerprint == "fp-1"
    by_id = report.by_id()
    for spec in plan.tasks:
        assert by_id[spec.readable_id].cell == spec.cell
    shot = by_id["shot@subject=a,b=c,style=ink,=oil#1"]
    assert shot.cell == (("subject", "a,b=c"), ("style", "ink,=oil"))
    edit = by_id["shot@subject=a,b=c,style=ink,=oil#1/edit@tone=warm,tone=cold#1"]
    assert edit.cell == (("tone", "warm,tone=cold"),)  # its own cell, not its parent's
    assert edit.parent == shot.readable_id
    lines = path.read_text(encoding="utf-8").splitlines()
    task_lines = lines[lines.index('  "tasks": [') + 1 : -2]
    assert len(task_lines) == len(entries)  # one task a line
    assert json.loads(task_lines[0].rstrip(",")) == entries[0].to_json()


def test_the_head_alone_says_whether_the_reports_are_current(tmp_path: Path) -> None:
    plan = load_plan(write_manifest(tmp_path, MANIFEST))
    entries = task_entries(plan, records_in_every_state(plan))
    out = tmp_path / "out"
    out.mkdir()
    write_report(plan, entries, out / "report.json", "fp-1")
    for name in ("report.md", "index.html", "junit.xml", gallery.DATA_PATH):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    assert report_is_current(out, plan.manifest_sha256, "fp-1")
    assert not report_is_current(out, plan.manifest_sha256, "fp-2")
    assert not report_is_current(out, "0" * 64, "fp-1")
    # only the head is read: what follows the tasks line is never looked at
    text = (out / "report.json").read_text(encoding="utf-8")
    head, _, _ = text.partition('  "tasks": [\n')
    (out / "report.json").write_text(head + '  "tasks": [\n  not JSON at all', encoding="utf-8")
    assert read_head(out / "report.json").state_fingerprint == "fp-1"
    assert report_is_current(out, plan.manifest_sha256, "fp-1")
    for other in (
        json.dumps(json.loads(text)),  # one line: not the layout written, so rewritten
        head,  # cut before the tasks
        "",
        "\x00\xff garbage",
    ):
        (out / "report.json").write_text(other, encoding="utf-8")
        assert not report_is_current(out, plan.manifest_sha256, "fp-1"), other[:40]
        with pytest.raises(UsageError):
            read_head(out / "report.json")
    (out / "report.json").write_text(text, encoding="utf-8")
    (out / "junit.xml").unlink()
    assert not report_is_current(out, plan.manifest_sha256, "fp-1")
    (out / "junit.xml").write_text("x")
    assert report_is_current(out, plan.manifest_sha256, "fp-1")
    (out / gallery.DATA_PATH).unlink()  # an index.html without its data shows nothing
    assert not report_is_current(out, plan.manifest_sha256, "fp-1")


def test_one_failure_code_and_state_text_in_every_writer(tmp_path: Path) -> None:
    """A failed task whose answer named no failCode is filed under the same code in
    report.md, junit.xml, the gallery and the annotations (``states.failure_code``), and a
    task in flight is described by the same text (``TaskState.text``)."""
    plan = load_plan(write_manifest(tmp_path, MANIFEST))
    failed = TaskEntry(readable_id="shot#1", key="k1", step="shot", state=TaskState.FAILED)
    flying = TaskEntry(readable_id="shot#2", key="k2", step="shot", state=TaskState.SUBMITTED)
    entries = [failed, flying]
    assert failed.failure_code == "FAILED"
    markdown = report_markdown(plan, entries, RunInfo(settings={}, exit_code=1))
    assert "- **`FAILED`** (1): `shot#1`" in markdown
    assert "**finished with failures** (exit 1)" in markdown
    xml = junit.junit_xml(name="m", entries=entries, step_order=["shot"], elapsed=None)
    assert '<failure type="FAILED" message="FAILED: "' in xml
    assert f'<skipped message="submitted: {TaskState.SUBMITTED.text}"' in xml
    page = gallery.index_html("m", entries)
    assert "failed: 1" in page
    assert '<span class="count failed">FAILED: 1</span>' in page  # failures by code
    data = gallery_data(
        name="m", manifest="m.yaml", entries=entries, step_order=["shot"], out_dir=tmp_path
    )
    rows: Any = data["t"]
    states: Any = data["states"]
    texts: Any = data["stateText"]
    [failed_row, flying_row] = rows
    assert failed_row[9] == "FAILED"  # no failCode in the answer: failure_code's
    assert states[failed_row[3]] == "failed"
    assert texts[flying_row[3]] == TaskState.SUBMITTED.text
    [annotation] = github.failure_annotations(plan, entries)
    assert annotation.endswith("::shot#1: FAILED: no message")
