"""A small stand-in for the GitHub Actions runner, enough to run this repository's workflow
jobs and composite action as Actions runs them: each ``run:`` script by ``bash --noprofile
--norc -eo pipefail`` in the workspace, with GITHUB_OUTPUT, GITHUB_PATH, GITHUB_ENV,
GITHUB_STEP_SUMMARY, GITHUB_EVENT_PATH, ... set; ``${{ }}`` expressions of ``env``, ``with``
and ``if`` evaluated against the contexts a test gives; ``continue-on-error``; a composite
action's steps run in place of its ``uses:`` step, its ``outputs`` read after. Other
``uses:`` steps are handed to a callback the test gives (checkout, cache, artifacts).

The expression language is the part the workflow uses: context paths (``steps.run.outputs.
exit-code``), string and number literals, ``== != < > <= >= && || !``, parentheses and the
functions ``always() success() failure() cancelled() fromJSON()``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "generate.yml"
ACTION_DIR = ROOT / ".github" / "actions" / "flux-pipeline"
ACTION_USES = "./.github/actions/flux-pipeline"

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>==|!=|<=|>=|&&|\|\||[!<>(),])"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_*-]+|\[\d+\])*))"
)


class Value:
    """A value with GitHub's loose comparisons (null and '' alike, numbers by value)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def _key(self) -> Any:
        value = self.value
        if value is None or value == "":
            return ""
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, int | float):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            return str(value).lower()

    def __bool__(self) -> bool:
        return self.value not in (None, "", False, 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Value) and self._key() == other._key()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def _number(self) -> float:
        try:
            return float(self.value or 0)
        except (TypeError, ValueError):
            return float("nan")

    def __gt__(self, other: Value) -> bool:
        return self._number() > other._number()

    def __lt__(self, other: Value) -> bool:
        return self._number() < other._number()

    def __ge__(self, other: Value) -> bool:
        return self._number() >= other._number()

    def __le__(self, other: Value) -> bool:
        return self._number() <= other._number()

    __hash__ = None  # type: ignore[assignment]


def _lookup(contexts: Mapping[str, Any], path: str) -> Any:
    parts = re.findall(r"[^.\[\]]+", path)
    value: Any = contexts
    for part in parts:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def evaluate(expression: str, contexts: Mapping[str, Any], status: str = "success") -> Any:
    """The value of a GitHub expression (without ``${{ }}``)."""
    python: list[str] = []
    position = 0
    expression = expression.strip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None or match.end() == position:
            raise ValueError(f"cannot evaluate {expression!r} at {position}")
        position = match.end()
        if match["str"]:
            python.append(f"V({match['str'][1:-1].replace(chr(39) * 2, chr(39))!r})")
        elif match["num"]:
            python.append(f"V({match['num']})")
        elif match["op"]:
            op = match["op"]
            python.append({"&&": " and ", "||": " or ", "!": " not "}.get(op, op))
        else:
            name = match["name"]
            if expression[position : position + 1] == "(":
                if name not in ("always", "success", "failure", "cancelled", "fromJSON"):
                    raise ValueError(f"function {name} is not supported")
                python.append(f"F_{name}")
            elif name in ("true", "false", "null"):
                python.append({"true": "V(True)", "false": "V(False)", "null": "V(None)"}[name])
            else:
                python.append(f"V(L({name!r}))")
    namespace = {
        "V": Value,
        "L": lambda path: _lookup(contexts, path),
        "F_always": lambda: Value(True),
        "F_success": lambda: Value(status == "success"),
        "F_failure": lambda: Value(status == "failure"),
        "F_cancelled": lambda: Value(False),
        "F_fromJSON": lambda text: Value(json.loads(str(text.value))),
    }
    result = eval("".join(python), {"__builtins__": {}}, namespace)  # noqa: S307
    return result.value if isinstance(result, Value) else result


def text_of(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def substitute(template: object, contexts: Mapping[str, Any]) -> str:
    """A string with every ``${{ expr }}`` replaced by its value."""
    return re.sub(
        r"\$\{\{(.*?)\}\}", lambda m: text_of(evaluate(m[1], contexts)), text_of(template)
    )


@dataclass
class StepResult:
    name: str
    outcome: str  # success, failure, skipped
    returncode: int | None
    stdout: str
    outputs: dict[str, str]


@dataclass
class Runner:
    """Runs jobs in ``workspace``; ``contexts`` holds github, inputs, secrets, matrix, needs."""

    workspace: Path
    temp: Path
    contexts: dict[str, Any]
    env: dict[str, str]  # the runner's environment (PATH with the stand-ins first)
    uses: Callable[[str, dict[str, str], Runner], None] = lambda uses, with_, runner: None
    skip: set[str] = field(default_factory=set)  # step names not to run (e.g. an install)
    results: list[StepResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.temp.mkdir(parents=True, exist_ok=True)
        self.summary = self.temp / "step_summary.md"
        self.summary.touch()
        self.path_file = self.temp / "github_path"
        self.path_file.touch()
        self.env_file = self.temp / "github_env"
        self.env_file.touch()

    def _paths(self) -> list[str]:
        lines = self.path_file.read_text().splitlines()
        return [line for line in reversed(lines) if line]

    def _extra_env(self) -> dict[str, str]:
        values = {}
        for line in self.env_file.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep:
                values[name] = value
        return values

    def run_script(self, script: str, env: Mapping[str, str]) -> tuple[int, str, dict[str, str]]:
        output = self.temp / "github_output"
        output.write_text("")
        full = {
            **self.env,
            **self._extra_env(),
            "PATH": os.pathsep.join([*self._paths(), self.env["PATH"]]),
            "GITHUB_OUTPUT": str(output),
            "GITHUB_PATH": str(self.path_file),
            "GITHUB_ENV": str(self.env_file),
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "RUNNER_TEMP": str(self.temp),
            **env,
        }
        process = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=self.workspace,
            env=full,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        outputs = {}
        for line in output.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep:
                outputs[name] = value
        return process.returncode, process.stdout + process.stderr, outputs

    def run_steps(
        self, steps: list[dict[str, Any]], contexts: dict[str, Any], env: Mapping[str, str]
    ) -> str:
        """Run ``steps`` in order; returns the status: success or failure."""
        status = "success"
        step_contexts: dict[str, Any] = {}
        contexts = {**contexts, "steps": step_contexts}
        for step in steps:
            name = substitute(step.get("name") or step.get("uses") or step.get("id"), contexts)
            condition = str(step.get("if", "success()")).strip()
            condition = condition.removeprefix("${{").removesuffix("}}")
            if name in self.skip or not evaluate(condition, contexts, status):
                result = StepResult(name, "skipped", None, "", {})
            else:
                step_env = {
                    **env,
                    **{k: substitute(v, contexts) for k, v in step.get("env", {}).items()},
                }
                result = self._run_step(step, name, contexts, step_env)
            self.results.append(result)
            if "id" in step:
                conclusion = result.outcome
                if result.outcome == "failure" and step.get("continue-on-error"):
                    conclusion = "success"
                step_contexts[step["id"]] = {
                    "outputs": result.outputs,
                    "outcome": result.outcome,
                    "conclusion": conclusion,
                }
            if result.outcome == "failure" and not step.get("continue-on-error"):
                status = "failure"
        return status

    def _run_step(
        self, step: dict[str, Any], name: str, contexts: dict[str, Any], env: dict[str, str]
    ) -> StepResult:
        if "run" in step:
            assert "${{" not in step["run"], name  # values reach scripts through env only
            code, out, outputs = self.run_script(step["run"], env)
            return StepResult(name, "success" if code == 0 else "failure", code, out, outputs)
        uses = step["uses"]
        with_ = {k: substitute(v, contexts) for k, v in step.get("with", {}).items()}
        if uses == ACTION_USES:
            return self.run_action(with_, name, contexts)
        self.uses(uses, with_, self)
        return StepResult(name, "success", 0, "", {})

    def run_action(
        self, with_: Mapping[str, str], name: str, outer: Mapping[str, Any]
    ) -> StepResult:
        action = yaml.safe_load((ACTION_DIR / "action.yml").read_text())
        inputs = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
        inputs |= dict(with_)
        github = {**outer["github"], "action_path": str(ACTION_DIR), "action_repository": ""}
        contexts = {**outer, "inputs": inputs, "github": github, "runner": {"temp": str(self.temp)}}
        first = len(self.results)
        status = self.run_steps(action["runs"]["steps"], contexts, dict(outer.get("env", {})))
        inner = {r.name: r for r in self.results[first:]}
        steps_ctx: dict[str, Any] = {}
        for step in action["runs"]["steps"]:
            if "id" in step:
                result = inner[substitute(step.get("name") or step["id"], contexts)]
                steps_ctx[step["id"]] = {"outputs": result.outputs, "outcome": result.outcome}
        outputs = {
            key: substitute(spec["value"], {**contexts, "steps": steps_ctx})
            for key, spec in action["outputs"].items()
        }
        stdout = "".join(r.stdout for r in self.results[first:])
        last = self.results[-1].returncode if len(self.results) > first else 0
        return StepResult(name, status, last, stdout, outputs)

    def run_job(self, job: dict[str, Any], workflow_env: Mapping[str, Any]) -> str:
        contexts = dict(self.contexts)
        env = {k: substitute(v, contexts) for k, v in workflow_env.items()}
        contexts["env"] = env
        job_env = {k: substitute(v, contexts) for k, v in job.get("env", {}).items()}
        env |= job_env
        contexts["env"] = env
        return self.run_steps(job["steps"], contexts, env)

    def step(self, name: str) -> StepResult:
        (result,) = [r for r in self.results if r.name == name]
        return result


def load_workflow() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return document


def job_outputs(job: dict[str, Any], runner: Runner) -> dict[str, str]:
    """A job's ``outputs`` from its steps' (after ``run_job``)."""
    steps: dict[str, Any] = {}
    for step in job["steps"]:
        if "id" in step:
            result = runner.step(substitute(step.get("name") or step["id"], runner.contexts))
            steps[step["id"]] = {"outputs": result.outputs}
    contexts = {**runner.contexts, "steps": steps}
    return {k: substitute(v, contexts) for k, v in job.get("outputs", {}).items()}
