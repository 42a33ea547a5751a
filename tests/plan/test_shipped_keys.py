"""The task keys of every shipped example under pipelines/, pinned (docs/keys.md).

A key is what tells a resumed run that a task is already done: a change to how manifests are
read (the YAML loader, values as written, the API values table) must not change the key of a
task whose request does not change. ``data/shipped_keys.json`` holds, per example, every
planned task's readable id and key as computed before such changes; a key that has to change
is changed there deliberately, with the reason in its commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_pipeline.plan.expand import load_plan

ROOT = Path(__file__).resolve().parents[2]
PINNED: dict[str, dict[str, str]] = json.loads(
    (Path(__file__).parent / "data" / "shipped_keys.json").read_text(encoding="utf-8")
)


def test_every_shipped_example_is_pinned() -> None:
    assert sorted(PINNED) == sorted(p.name for p in (ROOT / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(PINNED))
def test_keys_of_a_shipped_example_do_not_move(name: str) -> None:
    plan = load_plan(ROOT / "pipelines" / name)
    assert {task.readable_id: task.key for task in plan.tasks} == PINNED[name]
