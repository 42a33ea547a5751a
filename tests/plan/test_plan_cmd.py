"""``plan``: every task's resume decision, as a table or a stable JSON document."""

from __future__ import annotations

import io
import json
from pathlib import Path

import anyio
import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.cli.manifest_cmds import StoredTask, decide_all, load_states
from flux_pipeline.cli.plan_output import write_json, write_table
from flux_pipeline.media import sha256_bytes
from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.resume import Policy, Reason
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.store import Store
from flux_pipeline.states import OutputRecord, TaskState

from ..manifest.helpers import plan_of

MANIFEST = """
version: 1
name: states
defaults: {input: {output_format: png}}
steps:
  - id: hero
    matrix: {n: [1, 2, 3, 4, 5, 6]}
    prompt: "shot {{ n }}"
  - id: banner
    from: hero
    prompt: "banner of {{ parent.n }}"
"""


@pytest.fixture
def plan(tmp_path: Path) -> Plan:
    return plan_of(tmp_path, MANIFEST)


def test_without_a_state_db_roots_are_new_and_children_wait(plan: Plan, tmp_path: Path) -> None:
    assert load_states(tmp_path / "missing.db") == {}
    reasons = [d.reason for d in decide_all(plan, {}, tmp_path / "out")]
    assert reasons == [Reason.NEW] * 6 + [Reason.WAITING_FOR_PARENT] * 6


def test_every_reason_from_stored_states(plan: Plan, tmp_path: Path) -> None:
    out = tmp_path / "out"
    heroes = plan.tasks[:6]
    (out / "hero").mkdir(parents=True)
    (out / heroes[0].output_paths(1)[0]).write_bytes(b"x")

    def outputs(task: TaskSpec) -> tuple[OutputRecord, ...]:
        path = task.output_paths(1)[0]
        return (OutputRecord(index=0, path=path, url="u", bytes=1, sha256=sha256_bytes(b"x")),)

    states = {
        heroes[0].key: StoredTask(TaskState.DOWNLOADED, outputs(heroes[0])),
        heroes[1].key: StoredTask(TaskState.DOWNLOADED, outputs(heroes[1])),
        heroes[2].key: StoredTask(TaskState.SUBMITTING),
        heroes[3].key: StoredTask(TaskState.SUBMITTED),
        heroes[4].key: StoredTask(TaskState.FAILED),
        heroes[5].key: StoredTask(TaskState.EXPIRED),
    }
    decisions = decide_all(plan, states, out)
    assert [d.reason for d in decisions] == [
        Reason.DONE,
        Reason.OUTPUT_MISSING,
        Reason.AMBIGUOUS,
        Reason.IN_FLIGHT,
        Reason.FAILED,
        Reason.EXPIRED,
        Reason.NEW,  # its parent is done: the banner can be submitted
        Reason.WAITING_FOR_PARENT,  # its parent is downloaded again
        Reason.BLOCKED,  # ambiguous parent, held
        Reason.WAITING_FOR_PARENT,  # its parent is in flight
        Reason.BLOCKED,  # failed parent
        Reason.BLOCKED,  # expired parent, held
    ]
    stream = io.StringIO()
    write_json(plan, decisions, stream)
    document = json.loads(stream.getvalue())
    assert document["counts"] == {
        "new": 1,
        "done": 1,
        "in flight": 1,
        "ambiguous": 1,
        "failed": 1,
        "expired": 1,
        "done but output missing": 1,
        "waiting for parent": 2,
        "blocked by parent": 3,
    }
    assert [t["action"] for t in document["tasks"][:7]] == [
        "skip",
        "download",
        "hold",
        "poll",
        "hold",
        "hold",
        "submit",
    ]
    table = io.StringIO()
    write_table(plan, decisions, table)
    lines = table.getvalue().splitlines()
    assert lines[0] == f"states: 12 tasks in 2 steps (manifest sha256 {plan.manifest_sha256[:12]})"
    assert "done but output missing" in table.getvalue()
    assert lines[-1].split() == [
        "blocked",
        "by",
        "parent",
        "hero@n=6#1/banner#1",
        "banner/hero-n-6-1-banner-1.png",
    ]


def test_plan_json_is_stable_and_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_of(tmp_path, MANIFEST)
    manifest = str(tmp_path / "m.yaml")
    assert run_cli(["plan", "--json", manifest, "--state", str(tmp_path / "none.db")]) == 0
    first = capsys.readouterr().out
    assert run_cli(["plan", "--json", manifest]) == 0
    assert capsys.readouterr().out == first
    document = json.loads(first)
    assert list(document) == [
        "manifest",
        "manifest_path",
        "manifest_sha256",
        "counts",
        "steps",
        "cost",
        "tasks",
    ]
    assert document["steps"] == {"hero": 6, "banner": 6}
    task = document["tasks"][6]
    assert list(task) == [
        "readable_id",
        "key",
        "step",
        "parent",
        "parent_output_index",
        "repeat_index",
        "reason",
        "action",
        "output",
        "request",
    ]
    assert task["parent"] == document["tasks"][0]["key"]
    assert task["request"] == {
        "provider": "auto",
        "input": {
            "output_format": "png",
            "prompt": "banner of 1",
            "image_urls": ["flux-pipeline:parent-image-url"],
        },
    }


def test_plan_reads_the_state_db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = plan_of(tmp_path, MANIFEST)
    hero = plan.tasks[0]
    out = tmp_path / "out"
    state = out / "custom.sqlite3"
    path = hero.output_paths(1)[0]

    async def record() -> None:
        async with await Store.open(state) as store:
            await store.mark_submitting(hero)
            store.mark_submitted(hero.key, "task_1")
            store.mark_succeeded(
                hero.key, ["https://r/1.png"], create_time=1, complete_time=2, cost_time=1
            )
            store.mark_downloaded(
                hero.key,
                [
                    OutputRecord(
                        index=0,
                        path=path,
                        url="https://r/1.png",
                        bytes=1,
                        sha256=sha256_bytes(b"x"),
                    )
                ],
            )

    anyio.run(record)
    (out / path).parent.mkdir(parents=True)
    (out / path).write_bytes(b"x")
    args = ["plan", "--json", str(tmp_path / "m.yaml"), "--out", str(out), "--state", str(state)]
    assert run_cli(args) == 0
    tasks = json.loads(capsys.readouterr().out)["tasks"]
    assert [t["reason"] for t in tasks[:2]] == ["done", "new"]
    assert tasks[6]["reason"] == "new"  # the banner of a done hero can be submitted
    (out / path).unlink()
    assert run_cli(args) == 0
    tasks = json.loads(capsys.readouterr().out)["tasks"]
    assert tasks[0]["reason"] == "done but output missing"
    assert tasks[6]["reason"] == "waiting for parent"
    # without --state the DB is looked for in its default place in the output directory
    assert run_cli(["plan", "--json", str(tmp_path / "m.yaml"), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"new": 6, "waiting for parent": 6}


def test_children_of_a_failed_parent_are_blocked_not_created(plan: Plan, tmp_path: Path) -> None:
    """A failed (or held) parent's chained tasks cannot run: ``plan`` shows them blocked and
    does not count them among the tasks a run would create."""
    heroes = plan.tasks[:6]
    states = {
        heroes[0].key: StoredTask(TaskState.FAILED),
        heroes[1].key: StoredTask(TaskState.SUBMITTING),  # ambiguous, held by default
        heroes[2].key: StoredTask(TaskState.EXPIRED),
    }
    decisions = decide_all(plan, states, tmp_path / "out")
    reasons = [d.reason for d in decisions[6:]]
    assert reasons == [Reason.BLOCKED] * 3 + [Reason.WAITING_FOR_PARENT] * 3
    assert [d.action.value for d in decisions[6:9]] == ["hold"] * 3
    retried = decide_all(plan, states, tmp_path / "out", policy=Policy(retry_failed=True))
    assert retried[6].reason is Reason.WAITING_FOR_PARENT  # its parent is created again


def test_plan_counts_no_creates_below_a_failed_parent(
    plan: Plan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    state = out / "s.sqlite3"

    async def record() -> None:
        async with await Store.open(state) as store:
            for hero in plan.tasks[:6]:
                await store.mark_submitting(hero)
                store.mark_submitted(hero.key, f"task_{hero.key[:6]}")
                store.mark_failed(hero.key, "BAD", "refused")

    anyio.run(record)
    args = ["plan", str(tmp_path / "m.yaml"), "--out", str(out), "--state", str(state)]
    assert run_cli([*args, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["counts"] == {"failed": 6, "blocked by parent": 6}
    assert document["cost"]["tasks"] == 0
    assert run_cli([*args, "--format", "md", "--no-lock"]) == 0
    assert "**Would create 0 task(s)" in capsys.readouterr().out


def test_the_run_cost_line_leaves_out_children_of_failed_parents(plan: Plan) -> None:
    """``run``'s "this run would create" line (plan/cost.py ``would_create``) uses the same
    rule: a failed hero's banner is not created unless ``--retry-failed``."""
    from flux_pipeline.plan.cost import would_create
    from flux_pipeline.run.spec_record import spec_record

    records = {
        hero.key: spec_record(hero, TaskState.FAILED, updated_at=0.0, attempts=1)
        for hero in plan.tasks[:2]
    }
    assert would_create(plan, records, Policy(), 0.0) == {"pro": 8}
    assert would_create(plan, records, Policy(retry_failed=True), 0.0) == {"pro": 12}
