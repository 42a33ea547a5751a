"""The child planner (plan/children.py) and the immutable plan (plan/plan.py).

Chained tasks planned at run time must be the ones planning up front gives (keys, readable
ids, outputs), except for the documented ``~N`` rule of outputs planned on demand.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.shard import select
from flux_pipeline.plan.tasks import TaskSpec, task_key

from ..manifest.helpers import plan_of, png
from .test_expand import CHAIN

FIXED_OUTPUT = """
version: 1
name: fixed
steps:
  - id: hero
    matrix: {style: [ink]}
    prompt: "a mug as {{ style }}"
  - id: fixed
    from: hero
    prompt: "banner of {{ parent.id }}"
    output: "fixed/banner-{{ repeat_index }}"
  - id: follows
    from: hero
    prompt: "copy of {{ parent.id }}"
    output: "follows/{{ parent.id | slug }}-{{ parent.output_index }}"
"""


def chain_plan(tmp_path: Path) -> Plan:
    return plan_of(tmp_path, CHAIN, {"refs/tee.png": png()})


def test_children_planned_at_run_time_equal_those_planned_up_front(tmp_path: Path) -> None:
    plan = chain_plan(tmp_path)
    parents = [task for task in plan.tasks if task.step in ("hero", "banner")]
    assert len(parents) == 3 + 6
    for parent in parents:
        up_front = plan.children(parent, 0)
        assert up_front, parent.readable_id
        assert all(child in plan.tasks for child in up_front)
        now = plan.planner.plan_now(parent, 0)  # rendered again, from the compiled steps
        assert [t.key for t in now] == [t.key for t in up_front]
        assert [t.readable_id for t in now] == [t.readable_id for t in up_front]
        assert [t.output for t in now] == [t.output for t in up_front]
        assert now == up_front


def test_children_of_another_output_differ_only_by_lineage(tmp_path: Path) -> None:
    plan = chain_plan(tmp_path)
    hero = plan.tasks[0]
    zero, one = plan.children(hero, 0), plan.children(hero, 1)
    assert len(zero) == len(one) == 2
    for first, second in zip(zero, one, strict=True):
        head, tail = hero.readable_id, first.readable_id.removeprefix(hero.readable_id)
        assert second.readable_id == f"{head}~1{tail}"
        assert second.parent_key == hero.key
        assert second.parent_output_index == 1
        assert second.key == task_key(
            second.request, parent_key=hero.key, parent_output_index=1, repeat_index=1
        )
        assert second.cell == first.cell
        assert second.step == first.step


def test_on_demand_outputs_follow_the_tilde_rule(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, FIXED_OUTPUT)
    ink = plan.tasks[0]
    assert ink.readable_id == "hero@style=ink#1"

    def outputs(children: list[TaskSpec]) -> dict[str, str]:
        return {task.step: task.output for task in children}

    assert outputs(plan.children(ink, 0)) == {
        "fixed": "fixed/banner-1",
        "follows": "follows/hero-style-ink-1-0",
    }
    # an output template that does not read `parent` would repeat output 0's path: ~N
    assert outputs(plan.children(ink, 2)) == {
        "fixed": "fixed/banner-1~2",
        "follows": "follows/hero-style-ink-1-2",  # reads `parent`: kept as rendered
    }
    # default outputs are slugs of readable ids, which carry ~N already
    chained = chain_plan(tmp_path / "chain")
    hero = chained.tasks[0]
    (zero, *_), (one, *_) = chained.children(hero, 0), chained.children(hero, 1)
    assert zero.output == "banner/hero-product-mug-style-watercolor-1-banner-headline-sale-1"
    assert one.output == "banner/hero-product-mug-style-watercolor-1-1-banner-headline-sale-1"


def test_children_of_on_demand_tasks_are_planned_on_demand(tmp_path: Path) -> None:
    plan = chain_plan(tmp_path)
    banner = plan.children(plan.tasks[0], 1)[0]
    crops = plan.children(banner, 0)
    assert [t.readable_id for t in crops] == [f"{banner.readable_id}/crop#1"]
    assert crops[0].parent_key == banner.key
    assert crops[0].parent_output_index == 0
    assert not {t.key for t in crops} & {t.key for t in plan.tasks}
    assert plan.children(banner, 0) == crops  # remembered: the same tasks again


def test_a_plan_is_immutable(tmp_path: Path) -> None:
    plan = chain_plan(tmp_path)
    for name, value in (("tasks", ()), ("name", "other"), ("manifest_sha256", "0" * 64)):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(plan, name, value)
    with pytest.raises(TypeError):
        plan.local_images["x"] = next(iter(plan.local_images.values()))  # type: ignore[index]
    assert isinstance(plan.tasks, tuple)
    plan.step_ids.append("extra")  # a copy: the plan's step order does not change
    assert plan.step_ids == ["hero", "banner", "crop"]


def test_a_shard_is_a_new_plan_sharing_the_child_planner(tmp_path: Path) -> None:
    plan = chain_plan(tmp_path)
    view = select(plan, 1, 2)
    assert view is not plan
    assert len(plan.tasks) == 3 + 6 + 6
    assert view.tasks
    assert view.planner is plan.planner
    for task in view.tasks:
        assert all(child in view.tasks for child in view.children(task, 0))
