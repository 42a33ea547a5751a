"""The workflow and the composite action keep the rules that make a run resumable in
GitHub Actions (the schema check in .ci/run cannot see these), and the action's shell steps
do what they say when run by bash with a stand-in ``flux-pipeline``."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from flux_pipeline.cli.options import parse_duration

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "generate.yml"
ACTION = ROOT / ".github" / "actions" / "flux-pipeline" / "action.yml"
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


def test_generation_jobs_resume_after_cancel_timeout_or_failure() -> None:
    workflow = load(WORKFLOW)
    assert "pipelines/demo.yaml" in workflow["concurrency"]["group"].replace("'", "")
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
                assert "github.run_id" in step["with"]["key"]  # a new key every run
            if uses.startswith("actions/upload-artifact"):
                assert step["if"] == "always()", name
        running = [
            s
            for s in steps
            if "flux-pipeline run" in s.get("run", "") or s.get("uses") == ACTION_USES
        ]
        if not running:
            continue
        runners += 1
        (step,) = running
        command = step.get("run") or step["with"]["args"]
        if "run" in step:
            assert step["run"].lstrip().startswith("exec flux-pipeline run"), name
            assert "APIXO_API_KEY" in step["env"]  # from the environment, not the command line
        deadline = parse_duration(re.search(r"--deadline (\S+)", command)[1])  # type: ignore[index]
        assert deadline < step["timeout-minutes"] * 60 < job["timeout-minutes"] * 60, name
        assert any(s.get("uses", "").startswith("actions/cache/restore") for s in steps)
        assert any(s.get("uses", "").startswith("actions/cache/save") for s in steps)
    assert runners == 2  # the single job and the shard jobs


ACTION_USES = "./.github/actions/flux-pipeline"


def test_sharded_variant_is_wired_to_the_cli() -> None:
    jobs = load(WORKFLOW)["jobs"]
    plan_step = steps_of(jobs["shard-plan"])[-1]
    assert "--format gha-matrix" in plan_step["run"]
    assert jobs["shard"]["strategy"]["matrix"] == "${{ fromJSON(needs.shard-plan.outputs.matrix) }}"
    (action,) = [s for s in steps_of(jobs["shard"]) if s.get("uses") == ACTION_USES]
    assert action["with"]["shard"] == "${{ matrix.shard }}"
    merge = " ".join(s.get("run", "") for s in steps_of(jobs["merge"]))
    assert "flux-pipeline merge" in merge
    assert "always()" in jobs["merge"]["if"]


def run_step(script: str, tmp_path: Path, **env: str) -> tuple[str, str]:
    """Run an action step's script as the runner does, with a stand-in ``flux-pipeline``
    that prints its pid, its arguments and whether it sees the key."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    stand_in = bindir / "flux-pipeline"
    stand_in.write_text(
        '#!/usr/bin/env bash\necho "pid $$"\nprintf "arg %s\\n" "$@"\n'
        'echo "key ${APIXO_API_KEY:+seen}"\nexit 3\n'
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
        stdout=subprocess.PIPE,
        text=True,
    )
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == (3 if "exec flux-pipeline" in script else 0)
    if "exec flux-pipeline" in script:  # exec: the tool is the step's own process
        assert f"pid {process.pid}" in stdout
    return stdout, output.read_text()


def test_action_runs_the_tool_in_place_of_the_shell(tmp_path: Path) -> None:
    steps = load(ACTION)["runs"]["steps"]
    (run,) = [s for s in steps if "exec flux-pipeline" in s.get("run", "")]
    assert run["env"]["APIXO_API_KEY"] == "${{ inputs.api-key }}"
    assert "${{" not in run["run"]  # inputs reach the script only through the environment
    env = {
        "APIXO_API_KEY": "secret-key",
        "FP_MANIFEST": "pipelines/a b.yaml",
        "FP_SHARD": "2/3",
        "FP_OUT": "out",
        "FP_STATE": "",
        "FP_ARGS": "--deadline 50m  --rpm 9000",
    }
    stdout, _ = run_step(run["run"], tmp_path, **env)
    args = [line[4:] for line in stdout.splitlines() if line.startswith("arg ")]
    assert args == [
        "run", "pipelines/a b.yaml", "--out", "out", "--shard", "2/3",
        "--deadline", "50m", "--rpm", "9000",
    ]  # fmt: skip
    assert "key seen" in stdout
    assert "secret-key" not in stdout
    stdout, _ = run_step(run["run"], tmp_path, **(env | {"FP_SHARD": "", "FP_ARGS": ""}))
    assert [line for line in stdout.splitlines() if line.startswith("arg ")] == [
        "arg run", "arg pipelines/a b.yaml", "arg --out", "arg out",
    ]  # fmt: skip


@pytest.mark.parametrize("exit_code", [0, 3, None])
def test_action_outputs_come_from_the_report(tmp_path: Path, exit_code: int | None) -> None:
    steps = load(ACTION)["runs"]["steps"]
    (counts,) = [s for s in steps if s.get("id") == "counts"]
    assert counts["if"] == "always()"
    out = tmp_path / "out"
    out.mkdir()
    report = {
        "run": {"exit_code": exit_code},
        "counts": {"downloaded": 5, "failed": 1, "expired": 1, "planned": 2, "submitted": 1},
        "tasks": [],
    }
    (out / "report.json").write_text(json.dumps(report))
    _, outputs = run_step(counts["run"], tmp_path, FP_OUT=str(out))
    assert outputs.splitlines() == [
        f"report={out}/report.json",
        f"exit-code={'' if exit_code is None else exit_code}",
        "total=10",
        "downloaded=5",
        "failed=2",
        "unfinished=3",
    ]
    declared = set(load(ACTION)["outputs"])
    assert {line.split("=")[0] for line in outputs.splitlines()} == declared
