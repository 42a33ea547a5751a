"""Values as written (docs/manifest.md): plain scalars in ``vars`` and matrices are the text the
user wrote, never YAML 1.1's booleans, floats or octal numbers; the schema's own numbers stay
numbers. The symptoms are reproduced end to end: ``validate``, ``plan --json`` and a
``run --simulate`` whose report holds the prompts the simulator was sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_pipeline.cli import run_cli

from .helpers import cli_limited, errors_of, ids, plan_of, write

MATRIX = """
version: 1
name: vals
steps:
  - id: s
    matrix:
      v: {values}
    prompt: "a {{{{ v }}}} thing"
"""


def _plan_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert run_cli(["plan", "--json", str(path)]) == 0
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


def test_yaml_1_1_lookalikes_render_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, MATRIX.format(values="[no, 1.10, 012]"))
    assert run_cli(["validate", str(path)]) == 0
    assert "ok (3 tasks in 1 step)" in capsys.readouterr().out
    document = _plan_json(path, capsys)
    tasks = document["tasks"]
    assert isinstance(tasks, list)
    assert [t["request"]["input"]["prompt"] for t in tasks] == [
        "a no thing",
        "a 1.10 thing",
        "a 012 thing",
    ]
    assert [t["readable_id"] for t in tasks] == ["s@v=no#1", "s@v=1.10#1", "s@v=012#1"]
    assert [t["output"] for t in tasks] == ["s/v-no-1.jpg", "s/v-1-10-1.jpg", "s/v-012-1.jpg"]


def test_no_yes_on_are_three_values_not_a_duplicate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, MATRIX.format(values="[no, yes, on]"))
    assert run_cli(["validate", str(path)]) == 0
    assert "ok (3 tasks in 1 step)" in capsys.readouterr().out
    document = _plan_json(path, capsys)
    tasks = document["tasks"]
    assert isinstance(tasks, list)
    assert [t["readable_id"] for t in tasks] == ["s@v=no#1", "s@v=yes#1", "s@v=on#1"]


def test_the_simulator_is_sent_the_values_as_written(tmp_path: Path) -> None:
    write(tmp_path, MATRIX.format(values="[no, 1.10, 012, true, null, 1e3]"))
    done = cli_limited(
        tmp_path, "run", "--simulate", "--sim-task-seconds", "0.1", "m.yaml", timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "vals" / "report.json").read_text())
    prompts = sorted(task["request"]["input"]["prompt"] for task in report["tasks"])
    assert prompts == sorted(f"a {v} thing" for v in ["no", "1.10", "012", "true", "null", "1e3"])


def test_vars_nested_values_and_include_exclude_are_as_written(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        version: 1
        name: vals
        vars: {version: 1.10, code: 012, flag: off, sizes: {small: 0o7, list: [yes, 1_000]}}
        steps:
          - id: s
            matrix:
              v: [1.0, 012, on]
              exclude: [{v: 012}]
              include: [{v: on, extra: 2.50}]
            prompt: >-
              {{ vars.version }} {{ vars.code }} {{ vars.flag }} {{ vars.sizes.small }}
              {{ vars.sizes.list | join(',') }} {{ v }} {{ extra | default('-') }}
        """,
    )
    assert ids(plan) == ["s@v=1.0#1", "s@v=on,extra=2.50#1"]
    prompts = [task.request["input"]["prompt"] for task in plan.tasks]
    assert prompts == [
        "1.10 012 off 0o7 yes,1_000 1.0 -",
        "1.10 012 off 0o7 yes,1_000 on 2.50",
    ]


def test_quoted_values_and_numbers_in_a_template_still_work(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        version: 1
        name: vals
        vars: {count: 3, label: "012"}
        steps:
          - id: s
            repeat: 2
            input: {safetyTolerance: 2}
            prompt: "{{ vars.count | int + repeat_index }} {{ vars.label }}"
        """,
    )
    assert [task.request["input"]["prompt"] for task in plan.tasks] == ["4 012", "5 012"]
    assert plan.tasks[0].request["input"]["safetyTolerance"] == 2  # the schema's numbers stay


def test_numbers_the_schema_needs_are_still_checked(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: vals
        steps:
          - id: s
            repeat: "2"
            prompt: p
        """,
    )
    assert errors == ["m.yaml:5:13: steps[0].repeat: expected an integer, found a string ('2')"]
