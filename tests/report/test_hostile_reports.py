"""report.json files given to ``diff`` and ``merge`` are untrusted: whatever they hold, the
command exits 2 with one line naming the file (and the task), never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.report.entry import OutputEntry, TaskEntry
from flux_pipeline.states import TaskState

from ..run.support import clean_env, write_manifest

MANIFEST = """\
version: 1
name: hostile
steps:
  - id: gen
    prompt: "a picture"
"""
RID = "gen#1"


def valid_task() -> dict[str, Any]:
    entry = TaskEntry(
        readable_id=RID,
        key="a" * 64,
        step="gen",
        cell=(("n", "1"),),
        request={"provider": "auto", "input": {"prompt": "a picture"}},
        state=TaskState.DOWNLOADED,
        task_id="t1",
        attempts=1,
        output="gen/1",
        outputs=(OutputEntry(path="gen/1.png", url="https://x/1", bytes=3, sha256="ab"),),
    )
    return entry.to_json()


def document(**task_changes: Any) -> str:
    task = valid_task() | task_changes
    return json.dumps({"format_version": 1, "tasks": [task]})


def without(name: str) -> str:
    task = valid_task()
    del task[name]
    return json.dumps({"format_version": 1, "tasks": [task]})


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


# (case, the file's content, what the one line says)
CASES: list[tuple[str, str | bytes, str]] = [
    ("empty", "", "not a JSON report"),
    ("not-json", "{tasks: nope", "not a JSON report"),
    ("not-utf8", b'{"format_version": 1, "tasks": ["\xff\xfe"]}', "not UTF-8"),
    ("a-list", "[1, 2]", "not a JSON object"),
    ("no-version", '{"tasks": []}', "no format_version"),
    ("newer-version", '{"format_version": 7, "tasks": []}', "format_version 7"),
    ("no-tasks", '{"format_version": 1}', "no list of tasks"),
    ("tasks-object", '{"format_version": 1, "tasks": {"a": 1}}', "no list of tasks"),
    ("number-line", '{"format_version": 1, "tasks": [3]}', "task #1 is a number, not an object"),
    ("null-line", '{"format_version": 1, "tasks": [null]}', "task #1 is null, not an object"),
    ("missing-state", without("state"), f"task '{RID}': 'state' is missing"),
    ("missing-key", without("key"), "'key' is missing"),
    ("missing-outputs", without("outputs"), "'outputs' is missing"),
    ("missing-timestamps", without("timestamps"), "'timestamps' is missing"),
    ("unknown-state", document(state="done"), "'state' 'done' is none of planned"),
    ("state-number", document(state=3), "'state' must be a string, not a number"),
    ("rid-number", document(readable_id=5), "task #1: 'readable_id' must be a string"),
    ("attempts-text", document(attempts="1"), "'attempts' must be a whole number, not a string"),
    ("attempts-bool", document(attempts=True), "not a boolean"),
    ("attempts-negative", document(attempts=-1), "'attempts' is out of range"),
    ("bytes-huge", document(outputs=[valid_task()["outputs"][0] | {"bytes": 10**30}]), "range"),
    (
        "attempts-inf",
        document().replace('"attempts": 1', '"attempts": 1e400'),
        "'attempts' must be a whole number, not inf",
    ),
    ("cost-fraction", document(costTime=1.5), "'costTime' must be a whole number, not 1.5"),
    ("digits", document().replace('"attempts": 1', '"attempts": ' + "9" * 5000), "JSON report"),
    ("nan", document().replace('"attempts": 1', '"attempts": NaN'), "NaN is not a JSON number"),
    (
        "stamp-text",
        document(timestamps={**valid_task()["timestamps"], "finished": "x"}),
        "finished",
    ),
    ("stamps-list", document(timestamps=[]), "'timestamps' is a list, not an object"),
    ("outputs-object", document(outputs={}), "'outputs' must be a list"),
    ("output-text", document(outputs=["gen/1.png"]), "output #1 is a string, not an object"),
    ("output-path", document(outputs=[{"path": 1}]), "output #1: 'path' must be a string"),
    ("cell-shape", document(cell=[["n"]]), "'cell' must be a list of [axis, value] pairs"),
    ("cell-object", document(cell={"n": "1"}), "'cell' must be a list"),
    ("deep-request", document(request=nested(100)), "'request' is nested more than 64 deep"),
    ("deeper-json", '{"format_version": 1, "tasks": ' + "[" * 200_000, "not a JSON report"),
    ("parent-index", document(parent_output_index="0"), "'parent_output_index' must be a whole"),
    (
        "twice",
        json.dumps({"format_version": 1, "tasks": [valid_task(), valid_task()]}),
        f"task '{RID}' is in the report twice",
    ),
    ("odd-id", document(readable_id="a\nb" * 100, state=None), "task 'a\\nba\\nb"),
]


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def one_line_error(code: int, err: str, path: Path, says: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(path) in lines[0]
    assert says in lines[0], lines[0]


@pytest.fixture
def good_report(tmp_path: Path) -> Path:
    return write(tmp_path / "good.json", document())


CommandOf = Callable[[Path, Path, Path], list[str]]


def diff_argv(bad: Path, good: Path, _: Path) -> list[str]:
    return ["diff", str(good), str(bad)]


def merge_argv(bad: Path, _: Path, tmp_path: Path) -> list[str]:
    manifest = write_manifest(tmp_path, MANIFEST)
    return ["merge", str(manifest), "--from", str(bad), "--out", str(tmp_path / "merged")]


@pytest.mark.parametrize(("content", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("argv_of", [diff_argv, merge_argv], ids=["diff", "merge"])
def test_a_hostile_report_is_one_line_and_exit_2(
    tmp_path: Path,
    good_report: Path,
    capsys: pytest.CaptureFixture[str],
    argv_of: CommandOf,
    content: str | bytes,
    says: str,
) -> None:
    bad = write(tmp_path / "bad.json", content)
    capsys.readouterr()
    code = run_cli(argv_of(bad, good_report, tmp_path))
    one_line_error(code, capsys.readouterr().err, bad, says)


def test_the_valid_report_of_these_cases_is_read(
    tmp_path: Path, good_report: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cases above differ from a report both commands take in what they name only."""
    assert run_cli(["diff", str(good_report), str(good_report), "--exit-code"]) == 0
    capsys.readouterr()
    assert run_cli(merge_argv(good_report, good_report, tmp_path)) == 3  # gen#1 not started
    err = capsys.readouterr().err
    assert "merged 0 state DB(s) and 1 report(s)" in err
    assert "1 report entr(ies) not in the manifest, ignored" in err  # its key is not the plan's


@pytest.mark.parametrize("command", ["diff", "merge"])
def test_python_m_flux_pipeline_prints_no_traceback(
    tmp_path: Path, good_report: Path, command: str
) -> None:
    argv_of = diff_argv if command == "diff" else merge_argv
    chosen = {"a-list", "missing-state", "attempts-inf", "deeper-json"}
    for name, content, says in (case for case in CASES if case[0] in chosen):
        bad = write(tmp_path / f"{name}.json", content)
        done = subprocess.run(
            [sys.executable, "-m", "flux_pipeline", *argv_of(bad, good_report, tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
            check=False,
        )
        one_line_error(done.returncode, done.stderr, bad, says)
        assert done.stdout == ""
