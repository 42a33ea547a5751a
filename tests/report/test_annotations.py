"""GitHub workflow commands: escaping, error annotations at the step's manifest line (at most
ten, the rest counted), and the callback secret masked before anything else of the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_pipeline.plan.expand import load_plan
from flux_pipeline.report import github as wc
from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.simulator import SimConfig, SimulatorThread
from flux_pipeline.states import TaskState

from ..run.support import admin_of, chained_manifest, run_inprocess, write_manifest

KEY = "annotations-key"


def task(
    readable_id: str,
    step: str,
    state: str = "failed",
    fail_code: str | None = "CONTENT_VIOLATION",
    fail_msg: str | None = "blocked",
) -> TaskEntry:
    return TaskEntry(
        readable_id=readable_id,
        key="k-" + readable_id,
        step=step,
        state=TaskState(state),
        fail_code=fail_code,
        fail_msg=fail_msg,
    )


def test_escaping_follows_the_runner() -> None:
    assert wc.escape_data("100% done\r\nnext: a,b") == "100%25 done%0D%0Anext: a,b"
    assert wc.escape_property("100% a:b,c\nd") == "100%25 a%3Ab%2Cc%0Ad"
    # % first: an already escaped-looking text is not unescaped by the runner
    assert wc.escape_data("%0A") == "%250A"
    assert wc.command("notice", "hi") == "::notice::hi"
    line = wc.command("error", "m:1,2", {"file": "a,b.yaml", "line": 3, "col": None})
    assert line == "::error file=a%2Cb.yaml,line=3::m:1,2"
    assert wc.add_mask("s%e\ncret") == "::add-mask::s%25e%0Acret"


def test_enabled_only_when_github_actions_is_true() -> None:
    assert wc.enabled({"GITHUB_ACTIONS": "true"})
    assert not wc.enabled({"GITHUB_ACTIONS": "false"})
    assert not wc.enabled({})


MANIFEST = """\
version: 1
name: notes
steps:
  - id: shot
    matrix:
      subject: [a, b]
    prompt: "a {{ subject }}"

  - id: edit
    from: shot
    prompt: "edit it"
"""


def test_failed_tasks_are_annotated_at_their_step_capped_at_ten(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    project.mkdir()
    (project / "pipelines").mkdir()
    path = write_manifest(project / "pipelines", MANIFEST, "notes.yaml")
    plan = load_plan(path)
    tasks = [
        task(f"shot@subject=s{i:02d}#1", "shot", fail_msg=f"line one\nline two: 100%, #{i}")
        for i in range(12)
    ]
    tasks += [
        task("shot@subject=x#1/edit#1", "edit", state="expired", fail_code=None, fail_msg=None),
        task("shot@subject=ok#1", "shot", state="downloaded", fail_code=None, fail_msg=None),
    ]
    lines = wc.failure_annotations(plan, reversed(tasks), env={"GITHUB_WORKSPACE": str(project)})
    assert len(lines) == 11
    errors, notice = lines[:10], lines[10]
    shot_at = "file=pipelines/notes.yaml,line=4,col=5"
    assert errors[0] == (
        f"::error {shot_at},title=flux-pipeline%3A task of step shot failed "
        "(CONTENT_VIOLATION)::shot@subject=s00#1: CONTENT_VIOLATION: "
        "line one%0Aline two: 100%25, #0"
    )
    assert all(line.startswith(f"::error {shot_at},") for line in errors)
    # sorted by readable id: the first ten shots; s10, s11 and the expired edit are counted
    assert [line.rsplit("#", 1)[1] for line in errors] == [str(i) for i in range(10)]
    assert notice == (
        "::notice title=flux-pipeline%3A 13 task(s) failed::"
        "3 more failed task(s) not annotated (at most 10): see report.md"
    )
    expired = wc.failure_annotations(plan, tasks[12:], env={"GITHUB_WORKSPACE": str(project)})
    assert expired == [
        "::error file=pipelines/notes.yaml,line=9,col=5,title=flux-pipeline%3A task of step "
        "edit failed (EXPIRED)::shot@subject=x#1/edit#1: EXPIRED: no message"
    ]
    assert wc.failure_annotations(plan, tasks[13:]) == []


def test_manifest_outside_the_workspace_keeps_its_absolute_path(tmp_path: Path) -> None:
    path = write_manifest(tmp_path, MANIFEST)
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert wc.workspace_path(path, {"GITHUB_WORKSPACE": str(other)}) == path.resolve().as_posix()
    assert wc.workspace_path(path, {"GITHUB_WORKSPACE": str(tmp_path)}) == "manifest.yaml"


@pytest.mark.anyio
async def test_run_masks_its_callback_secret_first_and_annotates_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A callback-mode run in GitHub Actions: the first line it writes is ``::add-mask::`` of
    the receiver's secret (the secret is in the callback URL the API was given), and the
    blocked tasks end as ``::error`` annotations at their step's line."""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    manifest = write_manifest(
        tmp_path, chained_manifest("masked", ["fox", "skull"], ["ink"], chained=False)
    )
    config = SimConfig(api_keys=(KEY,), task_seconds=0.2, block_words=("skull",))
    echoed: list[str] = []
    with SimulatorThread(config) as sim:
        result = await run_inprocess(
            manifest,
            tmp_path / "out",
            base_url=sim.base_url,
            api_key=KEY,
            lines=echoed,
            request_type="callback",
        )
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        task_id = next(t["taskId"] for t in report["tasks"] if t["state"] == "downloaded")
        seen_by_api = json.dumps(await admin_of(sim).atask(task_id))
    assert result.outcome.exit_code == 1, result.outcome
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("::add-mask::")
    secret = out[0].removeprefix("::add-mask::")
    assert len(secret) >= 20
    assert f"/callbacks/{secret}" in seen_by_api
    assert all(secret not in line for line in out[1:] + echoed)
    step_line = load_plan(manifest).step_location("shot")
    failed = next(t for t in report["tasks"] if t["state"] == "failed")
    assert out[1:] == [
        f"::error file=manifest.yaml,line={step_line[0]},col={step_line[1]},"
        "title=flux-pipeline%3A task of step shot failed (CONTENT_VIOLATION)::"
        "shot@subject=skull,style=ink#1: CONTENT_VIOLATION: " + failed["failMsg"]
    ]


@pytest.mark.anyio
async def test_no_workflow_commands_outside_github_actions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    manifest = write_manifest(
        tmp_path, chained_manifest("quiet", ["skull"], ["ink"], chained=False)
    )
    config = SimConfig(api_keys=(KEY,), task_seconds=0.2, block_words=("skull",))
    with SimulatorThread(config) as sim:
        result = await run_inprocess(
            manifest, tmp_path / "out", base_url=sim.base_url, api_key=KEY, request_type="callback"
        )
    assert result.outcome.exit_code == 1
    assert "::" not in capsys.readouterr().out
