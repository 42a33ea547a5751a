"""The workflow and the composite action run as GitHub Actions runs them (tests/github/
runner.py): every ``run:`` script by bash in a repository of manifests with a commit history
and a bare repository as ``origin``, the GITHUB_* files and the event payload set, against
the simulator over HTTP (``APIXO_BASE_URL``). ``gh`` is a stand-in on PATH that records its
arguments; ``flux-pipeline`` runs this worktree's code; the action's install step (a virtual
environment and ``pip install``) has its own test with a stand-in ``python3``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.github.runner import (
    ACTION_DIR,
    ROOT,
    Runner,
    evaluate,
    job_outputs,
    load_workflow,
)
from tests.run.support import SimProcess, clean_env, roots_manifest

KEY = "sim-actions-key"
INSTALL = "Install flux-pipeline"
pytestmark = pytest.mark.slow


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    logs = tmp_path_factory.mktemp("sim")
    with SimProcess(logs, "--api-key", KEY, "--task-seconds", "0.1") as process:
        yield process


class Repo:
    """A repository of manifests: ``origin`` (bare) and a clone as the workspace."""

    def __init__(self, tmp: Path, sim: SimProcess) -> None:
        self.tmp = tmp
        self.origin = tmp / "origin.git"
        self.work = tmp / "work"
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.gh_log = tmp / "gh.log"
        self.gh_answer = tmp / "gh.answer"
        self.gh_answer.write_text("")
        tool = self.bin / "flux-pipeline"
        tool.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m flux_pipeline "$@"\n')
        gh = self.bin / "gh"
        gh.write_text(
            '#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> "$GH_LOG"\n'
            'if [ -n "$GH_TOKEN" ]; then echo "token seen" >> "$GH_LOG"; fi\n'
            'for arg in "$@"; do case "$arg" in body=@*) cp "${arg#body=@}" "$GH_LOG.body";; '
            'esac; done\ncat "$GH_ANSWER"\n'
        )
        for path in (tool, gh):
            path.chmod(0o755)
        home = tmp / "home"
        home.mkdir()
        self.env = clean_env(
            PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            PYTHONPATH=str(ROOT),
            HOME=str(home),
            GIT_CONFIG_NOSYSTEM="1",
            APIXO_BASE_URL=sim.base_url,
            GH_LOG=str(self.gh_log),
            GH_ANSWER=str(self.gh_answer),
            CI="true",
            GITHUB_ACTIONS="true",
        )
        subprocess.run(
            ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(self.origin)],
            check=True,
        )
        subprocess.run(["git", "clone", "--quiet", str(self.origin), str(self.work)], check=True)
        git(self.work, "config", "user.name", "Someone")
        git(self.work, "config", "user.email", "someone@example.com")
        git(self.work, "checkout", "--quiet", "-b", "main")

    def write(self, relative: str, text: str) -> None:
        path = self.work / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self, message: str) -> str:
        git(self.work, "add", "-A")
        git(self.work, "commit", "--quiet", "-m", message)
        git(self.work, "push", "--quiet", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")

    def runner(self, name: str, event: dict[str, Any], **contexts: Any) -> Runner:
        event_path = self.tmp / f"{name}.event.json"
        event_path.write_text(json.dumps(event))
        sha = git(self.work, "rev-parse", "HEAD")
        github = {
            "event_name": contexts.pop("event_name"),
            "event": event,
            "repository": "someone/manifests",
            "ref_name": "main",
            "run_id": "4242",
            "run_attempt": "1",
            "sha": sha,
            "token": "ghs_stand-in-token",
        }
        env = self.env | {
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_EVENT_NAME": github["event_name"],
            "GITHUB_SHA": sha,
            "GITHUB_REF_NAME": "main",
            "GITHUB_REPOSITORY": github["repository"],
            "GITHUB_WORKSPACE": str(self.work),
        }
        base = {"github": github, "inputs": {}, "secrets": {"APIXO_API_KEY": KEY}, "needs": {}}
        return Runner(
            workspace=self.work,
            temp=self.tmp / f"{name}.temp",
            contexts=base | contexts,
            env=env,
            skip={INSTALL},
        )


def manifest(name: str, subjects: int) -> str:
    return roots_manifest(name, subjects)


@pytest.fixture
def repo(tmp_path: Path, sim: SimProcess) -> Repo:
    repo = Repo(tmp_path, sim)
    repo.write("pipelines/a.yaml", manifest("a", 2))
    repo.write("pipelines/b.yaml", manifest("b", 2))
    repo.write("README.md", "manifests\n")
    repo.commit("two manifests")
    return repo


def run_job(runner: Runner, name: str) -> str:
    workflow = load_workflow()
    job = workflow["jobs"][name]
    return runner.run_job(job, workflow.get("env", {}))


def test_push_generates_only_the_changed_manifest_and_commits_its_lock(repo: Repo) -> None:
    before = git(repo.work, "rev-parse", "HEAD")
    repo.write("pipelines/b.yaml", manifest("b", 3))
    repo.write("README.md", "manifests, more\n")
    after = repo.commit("b: one more subject")
    event = {"before": before, "after": after, "ref": "refs/heads/main"}
    jobs = load_workflow()["jobs"]

    changes = repo.runner("changes", event, event_name="push")
    assert evaluate(jobs["changes"]["if"], changes.contexts)
    assert run_job(changes, "changes") == "success", changes.results
    outputs = job_outputs(jobs["changes"], changes)
    assert outputs["count"] == "1"
    matrix = json.loads(outputs["matrix"])
    assert matrix == {"include": [{"manifest": "pipelines/b.yaml", "stem": "b"}]}

    # meanwhile another job pushed a commit: the lock commit rebases onto it
    other = repo.tmp / "other"
    subprocess.run(["git", "clone", "--quiet", str(repo.origin), str(other)], check=True)
    (other / "pipelines" / "a.lock.json").write_text("{}\n")
    git(other, "add", "-A")
    git(other, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "a's lock")
    git(other, "push", "--quiet", "origin", "HEAD:main")

    needs = {"changes": {"outputs": outputs, "result": "success"}}
    generate = repo.runner(
        "generate", event, event_name="push", matrix=matrix["include"][0], needs=needs
    )
    assert evaluate(jobs["generate"]["if"], generate.contexts)
    uploads: list[dict[str, str]] = []
    generate.uses = lambda uses, with_, runner: uploads.append({"uses": uses, **with_})
    assert run_job(generate, "generate") == "success", [r.stdout for r in generate.results]
    run = generate.step("Generate")
    assert run.outputs["exit-code"] == "0", run.stdout
    assert (run.outputs["done"], run.outputs["total"], run.outputs["resumable"]) == (
        "3",
        "3",
        "false",
    )
    assert run.outputs["report"].endswith("out/b/report.json")
    assert KEY not in run.stdout
    assert generate.summary.read_text().startswith("# flux-pipeline: b\n\n**all done**")
    upload = [u for u in uploads if u["uses"].startswith("actions/upload-artifact")]
    assert upload[0]["name"] == "images-b"
    assert upload[0]["overwrite"] == "true"
    cache = [u for u in uploads if u["uses"].startswith("actions/cache/")]
    assert {u["key"] for u in cache} == {"flux-state-b-4242-1"}
    assert cache[0]["restore-keys"].strip() == "flux-state-b-"

    # origin: the other commit, then the bot's lock commit on top, touching only the lock
    log = git(repo.origin, "log", "--format=%an|%s", "main").splitlines()
    assert log[0] == "github-actions[bot]|flux-pipeline: lock file of pipelines/b.yaml [skip ci]"
    assert log[1] == "x|a's lock"
    files = git(repo.origin, "show", "--name-only", "--format=", "main").splitlines()
    assert files == ["pipelines/b.lock.json"]
    lock = json.loads(git(repo.origin, "show", "main:pipelines/b.lock.json"))
    assert len(lock["tasks"]) == 3


def test_pull_request_plans_changed_manifests_into_one_comment(repo: Repo) -> None:
    # main's record: a's lock file, committed
    proc = subprocess.run(
        [sys.executable, "-m", "flux_pipeline", "run", "pipelines/a.yaml", "--out", "out/a"],
        cwd=repo.work,
        env=repo.env | {"APIXO_API_KEY": KEY},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(repo.work / "out")
    base = repo.commit("a's lock")
    git(repo.work, "checkout", "--quiet", "-b", "change-a")
    repo.write("pipelines/a.yaml", manifest("a", 3))  # one subject more
    repo.write("pipelines/c/ref.txt", "a file of c's folder\n")
    repo.write("pipelines/c.yaml", manifest("c", 1))
    git(repo.work, "add", "-A")
    git(repo.work, "commit", "--quiet", "-m", "a: one more; c")
    head = git(repo.work, "rev-parse", "HEAD")
    git(repo.work, "checkout", "--quiet", "main")
    repo.write("pipelines/b.yaml", manifest("b", 4))  # main moved on: b is not the PR's
    repo.commit("b on main")
    git(repo.work, "checkout", "--quiet", "change-a")
    event = {
        "number": 7,
        "pull_request": {
            "number": 7,
            "base": {"sha": git(repo.work, "rev-parse", "main")},
            "head": {"sha": head, "repo": {"full_name": "someone/manifests"}},
        },
    }
    assert base
    runner = repo.runner("plan", event, event_name="pull_request")
    jobs = load_workflow()["jobs"]
    assert evaluate(jobs["plan"]["if"], runner.contexts)
    assert not evaluate(jobs["changes"]["if"], runner.contexts)
    assert run_job(runner, "plan") == "success", [r.stdout for r in runner.results]
    changed = (repo.work / "changed.txt").read_text().splitlines()
    assert changed == ["pipelines/a.yaml", "pipelines/c.yaml"]
    summary = runner.summary.read_text()
    assert summary.startswith("<!-- flux-pipeline-plan -->")
    assert "1 new, 2 unchanged, 0 orphaned" in summary  # a against its lock
    assert "1 new, 0 unchanged" in summary  # c: no lock yet
    calls = repo.gh_log.read_text().splitlines()
    assert calls[0].startswith("api --paginate repos/someone/manifests/issues/7/comments")
    assert calls[1] == "token seen"
    assert (
        calls[2]
        == "api --method POST repos/someone/manifests/issues/7/comments -F body=@comment.md"
    )
    assert (repo.tmp / "gh.log.body").read_text() == (repo.work / "comment.md").read_text()
    assert KEY not in summary

    # the next push to the PR: the comment with the marker is found and updated
    repo.gh_log.unlink()
    repo.gh_answer.write_text("987\n")
    again = repo.runner("plan-again", event, event_name="pull_request")
    assert run_job(again, "plan") == "success"
    calls = repo.gh_log.read_text().splitlines()
    assert (
        calls[2]
        == "api --method PATCH repos/someone/manifests/issues/comments/987 -F body=@comment.md"
    )

    # a fork's pull request: no comment (its token is read-only), the summary still has it
    fork = json.loads(json.dumps(event))
    fork["pull_request"]["head"]["repo"]["full_name"] = "x/y"
    repo.gh_log.unlink()
    forked = repo.runner("plan-fork", fork, event_name="pull_request")
    assert run_job(forked, "plan") == "success"
    assert not repo.gh_log.exists()
    assert forked.step("One plan comment on the pull request (updated, not repeated)").outcome == (
        "skipped"
    )


def test_sharded_run_matrix_shards_and_merge(repo: Repo) -> None:
    inputs = {"manifest": "pipelines/a.yaml", "shards": 2, "simulate": False}
    repo.write("pipelines/a.yaml", manifest("a", 4))
    repo.commit("a: four")
    jobs = load_workflow()["jobs"]
    changes = repo.runner(
        "changes", {"inputs": inputs}, event_name="workflow_dispatch", inputs=inputs
    )
    assert run_job(changes, "changes") == "success"
    needs: dict[str, Any] = {"changes": {"outputs": job_outputs(jobs["changes"], changes)}}
    plan = repo.runner("shard-plan", {}, event_name="workflow_dispatch", inputs=inputs, needs=needs)
    assert evaluate(jobs["shard-plan"]["if"], plan.contexts)
    assert not evaluate(jobs["generate"]["if"], plan.contexts)  # the matrix jobs instead
    assert run_job(plan, "shard-plan") == "success", [r.stdout for r in plan.results]
    plan_outputs = job_outputs(jobs["shard-plan"], plan)
    matrix = json.loads(plan_outputs["matrix"])
    assert [m["shard"] for m in matrix["include"]] == ["1/2", "2/2"]
    assert plan_outputs["stem"] == "a"
    needs["shard-plan"] = {"outputs": plan_outputs, "result": "success"}

    artifacts = repo.tmp / "artifacts"
    for entry in matrix["include"]:
        job_dir = repo.tmp / f"job-{entry['label']}"  # a fresh runner: a clean workspace
        shutil.copytree(repo.work, job_dir, ignore=shutil.ignore_patterns("out", "state"))
        shard = repo.runner(
            f"shard-{entry['label']}", {}, event_name="workflow_dispatch", inputs=inputs,
            needs=needs, matrix=entry,
        )  # fmt: skip
        shard.workspace = job_dir

        def upload(uses: str, with_: dict[str, str], runner: Runner) -> None:
            if uses.startswith("actions/upload-artifact"):
                assert with_["overwrite"] == "true"
                target = artifacts / with_["name"]
                for line in with_["path"].split():
                    shutil.copytree(runner.workspace / line, target / line, dirs_exist_ok=True)

        shard.uses = upload
        assert run_job(shard, "shard") == "success", [r.stdout for r in shard.results]
        run = shard.step(f"Generate shard {entry['shard']}")
        assert run.outputs["exit-code"] == "0", run.stdout
        assert run.outputs["report"].endswith(f"out/report.shard-{entry['label']}.json")

    merge = repo.runner("merge", {}, event_name="workflow_dispatch", inputs=inputs, needs=needs)
    merge_if = jobs["merge"]["if"].strip().removeprefix("${{").removesuffix("}}")
    assert "!cancelled()" in merge_if
    assert evaluate(merge_if, merge.contexts | {"needs": needs | {"shard": {"result": "failure"}}})

    def download(uses: str, with_: dict[str, str], runner: Runner) -> None:
        if uses.startswith("actions/download-artifact"):
            assert with_["pattern"] == "shard-*"
            shutil.copytree(artifacts, runner.workspace / with_["path"])

    merge.uses = download
    assert run_job(merge, "merge") == "success", [r.stdout for r in merge.results]
    report = json.loads((repo.work / "out" / "report.json").read_text())
    assert sorted(t["state"] for t in report["tasks"]) == ["downloaded"] * 4
    log = git(repo.origin, "log", "-1", "--format=%an|%s", "main")
    assert log == "github-actions[bot]|flux-pipeline: lock file of pipelines/a.yaml [skip ci]"
    lock = json.loads(git(repo.origin, "show", "main:pipelines/a.lock.json"))
    assert len(lock["tasks"]) == 4


def action_runner(repo: Repo) -> Runner:
    return repo.runner("action", {}, event_name="push")


@pytest.mark.parametrize(("resumable_exit", "step_exit"), [("0", 0), ("3", 3)])
def test_a_deadline_stop_is_resumable_not_a_crash(
    repo: Repo, resumable_exit: str, step_exit: int
) -> None:
    """``--deadline`` reached (exit 3): by default a green step with a notice and
    ``resumable == 'true'``, red with ``resumable-exit: 3``; the rerun finishes the rest."""
    repo.write("pipelines/many.yaml", manifest("many", 30))
    runner = action_runner(repo)
    with_ = {
        "manifest": "pipelines/many.yaml",
        "api-key": KEY,
        "args": "--deadline 2 --rpm 60",  # about a request a second: the deadline comes first
        "resumable-exit": resumable_exit,
    }
    result = runner.run_action(with_, "flux-pipeline", runner.contexts)
    assert result.outcome == ("success" if step_exit == 0 else "failure")
    assert result.returncode == step_exit
    assert result.outputs["exit-code"] == "3"
    assert result.outputs["resumable"] == "true"
    assert int(result.outputs["done"]) < int(result.outputs["total"]) == 30
    notice = "::notice title=flux-pipeline stopped at the deadline, resumable::stopped at the"
    assert notice in result.stdout
    assert "the next push continues where it stopped" in runner.summary.read_text()
    # and the rerun continues: only the tasks not created yet are created, none twice
    again = runner.run_action(with_ | {"args": ""}, "flux-pipeline", runner.contexts)
    assert (again.outcome, again.outputs["exit-code"], again.outputs["done"]) == (
        "success",
        "0",
        "30",
    )
    assert int(result.outputs["created"]) + int(again.outputs["created"]) == 30
    assert again.outputs["resumable"] == "false"


def test_a_run_that_left_no_summary_fails_the_step(repo: Repo) -> None:
    runner = action_runner(repo)
    (repo.bin / "flux-pipeline").write_text("#!/bin/sh\nkill -9 $$\n")  # killed
    result = runner.run_action({"manifest": "pipelines/a.yaml"}, "x", runner.contexts)
    assert (result.outcome, result.returncode) == ("failure", 1)
    assert result.outputs["exit-code"] == ""
    assert result.outputs["resumable"] == "false"
    assert "::error title=flux-pipeline::the run ended without its summary" in result.stdout


def test_install_step_installs_the_actions_own_checkout_into_a_venv(tmp_path: Path) -> None:
    """The install step's script, with a stand-in ``python3`` (no network, no pip): from the
    action's checkout by default, from the action's repository at a ref with ``version``."""
    import yaml

    steps = yaml.safe_load((ACTION_DIR / "action.yml").read_text())["runs"]["steps"]
    (install,) = [s for s in steps if s.get("name") == INSTALL]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "python.log"
    stand_in = bindir / "python3"
    stand_in.write_text(
        f'#!/usr/bin/env bash\nprintf "%s|" "$0" "$@" >> {log}\necho >> {log}\n'
        'if [ "$2" = venv ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python";'
        ' printf "#!/bin/sh\\necho fp\\n" > "$3/bin/flux-pipeline";'
        ' chmod +x "$3/bin/flux-pipeline"; fi\n'
    )
    stand_in.chmod(0o755)
    github_path = tmp_path / "github_path"
    env = clean_env(
        PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}",
        RUNNER_TEMP=str(tmp_path),
        GITHUB_PATH=str(github_path),
        FP_SOURCE=f"{ACTION_DIR}/../../..",
        FP_VERSION="",
        FP_ACTION_REPOSITORY="",
    )

    def run(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", install["run"]],
            env=env | extra,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert run().returncode == 0
    calls = log.read_text().splitlines()
    venv = tmp_path / "flux-pipeline-venv"
    assert calls[0].endswith(f"|-m|venv|{venv}|")
    assert calls[1].endswith(
        f"|-m|pip|install|--disable-pip-version-check|--quiet|{ACTION_DIR}/../../..|"
    )
    assert github_path.read_text() == f"{venv}/bin\n"
    log.unlink()
    assert run(FP_VERSION="v1.2", FP_ACTION_REPOSITORY="someone/flux-pipeline").returncode == 0
    spec = "flux-kontext-pipeline @ git+https://github.com/someone/flux-pipeline@v1.2"
    assert log.read_text().splitlines()[1].endswith(f"|{spec}|")
    outside = tmp_path / "not-the-tool"
    (outside / "a" / "b").mkdir(parents=True)
    refused = run(FP_SOURCE=str(outside))  # the action copied into another repository
    assert refused.returncode == 2
    assert "use it as OWNER/flux-pipeline/.github/actions/flux-pipeline@REF" in refused.stdout
