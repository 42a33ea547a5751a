"""The API values table (flux_pipeline/api_values.json, manifest/apivalues.py): one table for
validate, the JSON schema and the simulator. A value outside it is a located warning (the API
may accept more than it documents) and ``--strict`` makes it an error, exit 2, for validate,
plan and run; certain fields (mode, provider, output_format) stay errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_pipeline.manifest.apivalues import API_VALUES, TABLE_PATH, input_warnings, values_of
from flux_pipeline.manifest.schema import manifest_schema
from flux_pipeline.simulator import config as sim_config
from flux_pipeline.simulator.validation import InvalidRequest, parse_create

from .helpers import cli_limited, errors_of, plan_of, write

RATIO = """
version: 1
name: ratios
defaults:
  input: {{aspect_ratio: "{ratio}"}}
steps:
  - id: s
    repeat: 2
    prompt: "a teapot {{{{ repeat_index }}}}"
"""

WARNING = (
    "m.yaml:4:25: warning: defaults.input.aspect_ratio: '4:5' is not a value the API "
    "documents or is known to accept (one of '21:9', '16:9', '4:3', '3:2', '1:1', '2:3', "
    "'3:4', '9:16', '9:21'); the API may accept it; --strict makes this an error"
)
STRICT = (
    "m.yaml:4:25: defaults.input.aspect_ratio: '4:5' is not a value the API documents or is "
    "known to accept (one of '21:9', '16:9', '4:3', '3:2', '1:1', '2:3', '3:4', '9:16', "
    "'9:21') (an error with --strict)"
)


def test_validate_warns_located_and_strict_refuses(tmp_path: Path) -> None:
    write(tmp_path, RATIO.format(ratio="4:5"))
    done = cli_limited(tmp_path, "validate", "m.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "m.yaml: ok (2 tasks in 1 step, 1 warning)\n"
    assert done.stderr.splitlines() == [WARNING]
    strict = cli_limited(tmp_path, "validate", "--strict", "m.yaml")
    assert strict.returncode == 2
    assert strict.stdout == ""
    assert strict.stderr.splitlines()[0] == STRICT


def test_plan_warns_and_strict_refuses(tmp_path: Path) -> None:
    write(tmp_path, RATIO.format(ratio="4:5"))
    done = cli_limited(tmp_path, "plan", "--json", "m.yaml")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"new": 2}  # stdout stays JSON
    assert done.stderr.splitlines() == [WARNING]
    strict = cli_limited(tmp_path, "plan", "--strict", "m.yaml")
    assert strict.returncode == 2
    assert strict.stderr.splitlines() == [STRICT, "flux-pipeline: 1 error(s) in manifest"]


def test_run_shows_the_warning_and_strict_sends_nothing(tmp_path: Path) -> None:
    write(tmp_path, RATIO.format(ratio="4:5"))
    strict = cli_limited(tmp_path, "run", "--simulate", "--strict", "m.yaml", timeout=120)
    assert strict.returncode == 2, strict.stderr[-2000:]
    assert STRICT in strict.stderr.splitlines()
    assert not (tmp_path / "out").exists()
    # without --strict the run goes ahead: the simulator refuses the ratio, as before
    done = cli_limited(
        tmp_path, "run", "--simulate", "--sim-task-seconds", "0.1", "m.yaml", timeout=120
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert WARNING in done.stderr.splitlines()
    report = json.loads((tmp_path / "out" / "ratios" / "report.json").read_text())
    assert {task["failCode"] for task in report["tasks"]} == {"INVALID_REQUEST"}


def test_a_known_ratio_runs_clean_under_strict(tmp_path: Path) -> None:
    write(tmp_path, RATIO.format(ratio="3:4"))
    done = cli_limited(
        tmp_path,
        "run",
        "--simulate",
        "--strict",
        "--sim-task-seconds",
        "0.1",
        "m.yaml",
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "warning" not in done.stderr


def test_a_templated_value_is_checked_per_task(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        version: 1
        name: ratios
        steps:
          - id: s
            matrix:
              ratio: ["16:9", "4:5", "5:4"]
            input: {aspect_ratio: "{{ ratio }}", safetyTolerance: "{{ 2 }}"}
            prompt: "a teapot {{ ratio }}"
        """,
    )
    warnings = [str(w) for w in plan.warnings]
    hint = "; the API may accept it; --strict makes this an error"
    known = "is not a value the API documents or is known to accept"
    ratios = "(one of '21:9', '16:9', '4:3', '3:2', '1:1', '2:3', '3:4', '9:16', '9:21')"
    assert warnings == [  # each value once, naming the first task that renders it
        f"m.yaml:7:27: warning: steps[0].input.aspect_ratio: renders '4:5' {known} {ratios} "
        f"(first in task s@ratio=4:5#1){hint}",
        f"m.yaml:7:27: warning: steps[0].input.aspect_ratio: renders '5:4' {known} {ratios} "
        f"(first in task s@ratio=5:4#1){hint}",
        f"m.yaml:7:59: warning: steps[0].input.safetyTolerance: renders '2' {known} "
        f"(an integer from 0 to 6) (first in task s@ratio=16:9#1){hint}",
    ]


@pytest.mark.parametrize(
    ("value", "warned"),
    [(0, False), (2, False), (6, False), (7, True), (-1, True), ("2", True), (True, True)],
)
def test_safety_tolerance_range(value: object, warned: bool) -> None:
    assert bool(input_warnings({"safetyTolerance": value})) is warned


def test_safety_tolerance_outside_the_range_is_a_located_warning(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        version: 1
        name: t
        steps:
          - id: s
            input: {safetyTolerance: 9}
            prompt: p
        """,
    )
    assert [str(w) for w in plan.warnings] == [
        "m.yaml:5:30: warning: steps[0].input.safetyTolerance: 9 is not a value the API "
        "documents or is known to accept (an integer from 0 to 6); the API may accept it; "
        "--strict makes this an error"
    ]
    assert plan.tasks[0].request["input"]["safetyTolerance"] == 9  # still passed through


def test_certain_fields_stay_errors(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: t
        defaults: {provider: cheap, input: {mode: ultra, output_format: gif}}
        steps:
          - {id: s, prompt: p}
        """,
    )
    assert errors == [
        "m.yaml:3:22: defaults.provider: expected one of 'auto', 'value' or 'official', "
        "found a string ('cheap')",
        "m.yaml:3:43: defaults.input.mode: expected one of 'pro' or 'max', "
        "found a string ('ultra')",
        "m.yaml:3:65: defaults.input.output_format: expected one of 'jpeg', 'png' or 'webp', "
        "found a string ('gif')",
    ]


def test_one_table_for_the_schema_and_the_simulator() -> None:
    assert values_of("aspect_ratio") == sim_config.ASPECT_RATIOS
    assert values_of("mode") == sim_config.MODES
    assert values_of("provider") == sim_config.PROVIDERS
    assert values_of("output_format") == sim_config.OUTPUT_FORMATS
    assert values_of("request_type") == sim_config.REQUEST_TYPES
    assert sim_config.API_VALUES_PATH.resolve() == TABLE_PATH.resolve()
    defs = manifest_schema()["$defs"]
    props = defs["InputFields"]["properties"]
    assert props["aspect_ratio"]["examples"] == list(values_of("aspect_ratio"))
    assert props["mode"]["anyOf"][0]["enum"] == list(values_of("mode"))
    assert props["output_format"]["anyOf"][0]["enum"] == list(values_of("output_format"))
    assert defs["Defaults"]["properties"]["provider"]["enum"] == list(values_of("provider"))
    assert "0 (strictest) to 6" in props["safetyTolerance"]["description"]
    assert API_VALUES["safetyTolerance"].minimum == 0


@pytest.mark.parametrize("ratio", values_of("aspect_ratio"))
def test_the_simulator_accepts_every_ratio_of_the_table(ratio: str) -> None:
    body = {"input": {"prompt": "p", "aspect_ratio": ratio}}
    assert parse_create(body).aspect_ratio == ratio


def test_the_simulator_refuses_a_ratio_outside_the_table() -> None:
    with pytest.raises(InvalidRequest, match=r"input\.aspect_ratio: expected one of"):
        parse_create({"input": {"prompt": "p", "aspect_ratio": "4:5"}})
