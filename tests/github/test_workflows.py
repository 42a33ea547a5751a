"""The workflow and the composite action keep the rules that make a run resumable and safe in
GitHub Actions (the schema check in .ci/run cannot see these); tests/github/
test_run_scripts.py runs them. Here: the rules read off the YAML, and the action's run and
outcome steps run by bash with a stand-in ``flux-pipeline``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from flux_pipeline.cli.options import parse_duration
from tests.github.runner import ACTION_DIR, ACTION_USES, ROOT, WORKFLOW

ACTION = ACTION_DIR / "action.yml"
DISTRIBUTION = "flux-kontext-pipeline"  # "flux-pipeline" on the index is another project
PINNED = {
    "actions/checkout": "v4",
    "actions/setup-python": "v5",
    "actions/cache/restore": "v4",
    "actions/cache/save": "v4",
    "actions/upload-artifact": "v4",
    "actions/download-artifact": "v4",
}


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def steps_of(job: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = job["steps"]
    return steps


def all_steps() -> list[tuple[str, dict[str, Any]]]:
    steps = [(name, s) for name, job in load(WORKFLOW)["jobs"].items() for s in steps_of(job)]
    return steps + [("action", s) for s in load(ACTION)["runs"]["steps"]]


def test_generation_jobs_resume_after_cancel_timeout_or_failure() -> None:
    workflow = load(WORKFLOW)
    runners = 0
    for name, job in workflow["jobs"].items():
        steps = steps_of(job)
        for step in steps:
            uses = step.get("uses", "")
            if uses.startswith("actions/"):
                action, _, tag = uses.partition("@")
                assert PINNED[action] == tag, (name, uses)
            if uses.startswith("actions/cache/save"):
                assert step["if"] == "always()", name  # also after a failure or a cancel
                restores = [s for s in steps if s.get("uses", "").startswith("actions/cache/r")]
                for restore in restores:  # saved under the key it was restored with
                    assert step["with"]["key"] == restore["with"]["key"]
                    # one prefix per manifest: the newest DB wins, whichever kind saved it
                    (prefix,) = restore["with"]["restore-keys"].strip().splitlines()
                    assert restore["with"]["key"].startswith(prefix)
                assert "github.run_id" in step["with"]["key"]  # a new key every run
            if uses.startswith("actions/upload-artifact"):
                assert step["if"] == "always()", name
                assert step["with"]["overwrite"] is True, name  # a re-run: no 409
        running = [
            s for s in steps if s.get("uses") == ACTION_USES and "install-only" not in s["with"]
        ]
        if not running:
            continue
        runners += 1
        (step,) = running
        deadline = parse_duration(re.search(r"--deadline (\S+)", step["with"]["args"])[1])  # type: ignore[index]
        assert deadline < step["timeout-minutes"] * 60 < job["timeout-minutes"] * 60, name
        assert step["with"]["api-key"] == "${{ secrets.APIXO_API_KEY }}"
        assert any(s.get("uses", "").startswith("actions/cache/restore") for s in steps)
        assert any(s.get("uses", "").startswith("actions/cache/save") for s in steps)
        # a generation run is never cancelled by the next one
        assert job.get("concurrency", {}).get("cancel-in-progress", False) is False
    assert runners == 2  # the per-manifest job and the shard jobs


def test_least_privilege_and_no_secret_on_a_command_line() -> None:
    workflow = load(WORKFLOW)
    assert workflow["permissions"] == {"contents": "read"}
    granted = {name: job.get("permissions") for name, job in workflow["jobs"].items()}
    assert granted == {
        "plan": {"contents": "read", "pull-requests": "write"},
        "changes": None,
        "generate": {"contents": "write"},
        "shard-plan": None,
        "shard": None,
        "merge": {"contents": "write"},
    }
    for name, step in all_steps():
        script = step.get("run", "")
        assert "${{" not in script, (name, step.get("name"))  # values through env only
        assert "secrets." not in script
        for key, value in step.get("env", {}).items():
            if "secrets." in str(value):
                assert key == "APIXO_API_KEY"
        if step.get("uses", "").startswith("actions/setup-python"):
            assert "cache" not in step.get("with", {})  # a manifests repo has no requirements


def test_pull_requests_plan_against_the_lock_and_push_commits_it_back() -> None:
    workflow = load(WORKFLOW)
    on = workflow[True]  # type: ignore[index]  # YAML 1.1 reads the key `on` as true
    for event in ("pull_request", "push"):
        assert on[event]["paths"] == ["pipelines/**", "!pipelines/**/*.lock.json"]
    plan = " ".join(s.get("run", "") for s in steps_of(workflow["jobs"]["plan"]))
    assert "--format md" in plan
    assert "<!-- flux-pipeline-plan -->" in plan
    assert "pull_request.base.sha" in plan
    jobs = workflow["jobs"]
    (generate_commit,) = [s for s in steps_of(jobs["generate"]) if "git push" in s.get("run", "")]
    (merge_commit,) = [s for s in steps_of(jobs["merge"]) if "git push" in s.get("run", "")]
    assert generate_commit["run"] == merge_commit["run"]  # one script, twice
    script = generate_commit["run"]
    assert "[skip ci]" in script
    assert "github-actions[bot]" in script
    assert 'git add -- "$lock"' in script  # only the lock file
    assert "git rebase" in script


def test_sharded_variant_is_wired_to_the_cli() -> None:
    jobs = load(WORKFLOW)["jobs"]
    plan_step = steps_of(jobs["shard-plan"])[-1]
    assert "--format gha-matrix" in plan_step["run"]
    assert jobs["shard"]["strategy"]["matrix"] == "${{ fromJSON(needs.shard-plan.outputs.matrix) }}"
    (action,) = [s for s in steps_of(jobs["shard"]) if s.get("uses") == ACTION_USES]
    assert action["with"]["shard"] == "${{ matrix.shard }}"
    merge = " ".join(s.get("run", "") for s in steps_of(jobs["merge"]))
    assert "flux-pipeline merge" in merge
    assert "!cancelled()" in jobs["merge"]["if"]  # after failed shards, not after a cancel
    assert "always()" not in jobs["merge"]["if"]


def test_the_distribution_name_is_ours_everywhere() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DISTRIBUTION
    assert project["scripts"] == {"flux-pipeline": "flux_pipeline.__main__:main"}
    texts = [WORKFLOW, ACTION, ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for path in texts:  # no `pip install flux-pipeline` (a URL with /flux-pipeline@ is fine)
        for segment in re.split(r"&&|;|\||\n", path.read_text()):
            if "pip install" in segment:
                assert not re.search(r"[\s\"']flux-pipeline(?![-/@\w])", segment), (path, segment)
    assert f"{DISTRIBUTION} @ git+https://github.com/" in (ROOT / "README.md").read_text()


def run_step(
    script: str, tmp_path: Path, env: dict[str, str], exit_code: int = 3
) -> tuple[str, str]:
    """Run an action step's script as the runner does, with a stand-in ``flux-pipeline``
    that prints its pid, its arguments and whether it sees the key (to stderr: stdout is the
    summary) and prints a summary on stdout."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    stand_in = bindir / "flux-pipeline"
    stand_in.write_text(
        '#!/usr/bin/env bash\necho "pid $$" >&2\nprintf "arg %s\\n" "$@" >&2\n'
        'echo "key ${APIXO_API_KEY:+seen}" >&2\necho \'{"exit_code": 3}\'\n'
        f"exit {exit_code}\n"
    )
    stand_in.chmod(0o755)
    output = tmp_path / "github_output"
    output.touch()
    full_env = {
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(output),
        **env,
    }
    process = subprocess.Popen(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env=full_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == exit_code
    assert f"pid {process.pid}" in stderr  # exec: the tool is the step's own process
    return stderr, output.read_text()


def test_action_runs_the_tool_in_place_of_the_shell(tmp_path: Path) -> None:
    steps = load(ACTION)["runs"]["steps"]
    (run,) = [s for s in steps if "exec flux-pipeline" in s.get("run", "")]
    assert run["env"]["APIXO_API_KEY"] == "${{ inputs.api-key }}"
    assert run["continue-on-error"] is True  # the outcome step decides the step's result
    summary = tmp_path / "summary.json"
    env = {
        "APIXO_API_KEY": "secret-key",
        "FP_MANIFEST": "pipelines/a b.yaml",
        "FP_SHARD": "2/3",
        "FP_OUT": "out",
        "FP_STATE": "",
        "FP_ARGS": "--deadline 50m  --rpm 9000",
        "FP_SUMMARY": str(summary),
    }
    stderr, _ = run_step(run["run"], tmp_path, env)
    args = [line[4:] for line in stderr.splitlines() if line.startswith("arg ")]
    assert args == [
        "run", "pipelines/a b.yaml", "--out", "out", "--json", "--shard", "2/3",
        "--deadline", "50m", "--rpm", "9000",
    ]  # fmt: skip
    assert json.loads(summary.read_text()) == {"exit_code": 3}  # the summary, apart
    assert "key seen" in stderr
    assert "secret-key" not in stderr
    stderr, _ = run_step(run["run"], tmp_path, env | {"FP_SHARD": "", "FP_ARGS": ""}, 0)
    assert [line for line in stderr.splitlines() if line.startswith("arg ")] == [
        "arg run", "arg pipelines/a b.yaml", "arg --out", "arg out", "arg --json",
    ]  # fmt: skip


SUMMARY = {
    "exit_code": 0,
    "verdict": "all done",
    "buckets": {"done": 5, "failed": 1, "expired": 1, "blocked": 1, "not started": 2},
    "total": 10,
    "created": 4,
    "cost": {"tasks": 4, "by_mode": {"pro": 4}, "currency": "USD", "total": 0.16},
    "stop_reason": None,
    "reports": {"json": "out/report.json", "markdown": "out/report.md"},
}


@pytest.mark.parametrize(
    ("exit_code", "resumable_exit", "step_exit"),
    [(0, "0", 0), (1, "0", 1), (2, "0", 2), (3, "0", 0), (3, "3", 3), (None, "0", 1)],
)
def test_action_outcome_outputs_and_exit(
    tmp_path: Path, exit_code: int | None, resumable_exit: str, step_exit: int
) -> None:
    steps = load(ACTION)["runs"]["steps"]
    (outcome,) = [s for s in steps if s.get("id") == "outcome"]
    assert outcome["if"].startswith("always()")
    summary = tmp_path / "summary.json"
    document = SUMMARY | {"exit_code": exit_code, "stop_reason": "deadline of 3000s reached"}
    summary.write_text(json.dumps(document) if exit_code is not None else "")
    output = tmp_path / "github_output"
    step_summary = tmp_path / "step_summary"
    process = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", outcome["run"]],
        env={
            "PATH": os.environ["PATH"],
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(step_summary),
            "FP_SUMMARY": str(summary),
            "FP_RESUMABLE_EXIT": resumable_exit,
            "FP_OUTCOME": str(ACTION_DIR / "outcome.py"),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert process.returncode == step_exit, process.stdout + process.stderr
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert set(outputs) == set(load(ACTION)["outputs"])  # every output declared, and set
    if exit_code is None:
        assert (outputs["exit-code"], outputs["resumable"]) == ("", "false")
        assert "::error title=flux-pipeline::the run ended without its summary" in process.stdout
        return
    assert outputs == {
        "exit-code": str(exit_code),
        "verdict": "all done",
        "total": "10",
        "done": "5",
        "failed": "3",
        "unfinished": "2",
        "created": "4",
        "cost": "0.16 USD",
        "resumable": "true" if exit_code == 3 else "false",
        "report": "out/report.json",
        "report-md": "out/report.md",
    }
    if exit_code == 3:
        notice = "::notice title=flux-pipeline stopped at the deadline, resumable::stopped at"
        assert notice in process.stdout
        assert "Rerun this job, or the next push continues" in step_summary.read_text()
    else:
        assert not step_summary.exists()
    assert ("::error" in process.stdout) == (exit_code in (1, 2))
