"""Deliberate regenerations: ``--regenerate PATTERN`` (docs/keys.md, "Regenerating a task").

A task's key is a function of its request and lineage, so asking for "another image of the
same request" needs something else that changes: a generation number, 0 unless the task was
regenerated (plan/tasks.py ``key_of_request_json``). A task is named across its generations by
its *base key* (the key of generation 0, ``TaskSpec.base_key``).

No counter is kept apart from the facts: the generation of a task is the highest one any state
DB row or lock entry records for its base key (``latest``). A generation is recorded when its
create is about to be sent, so a ``--regenerate`` run that is stopped before sending leaves
nothing behind, and running the same command again picks the same new generation (the same
key: a killed regeneration resumes, it is never paid twice).

``regenerate`` moves the matched tasks one generation on, when their current generation has
finished (done, failed or expired): a regeneration whose own create is still unfinished is
resumed instead. Their chained tasks follow: a new parent key is a new child key. The old
generation's state DB row and lock entry stay (it was paid for); its files stay at their paths
until the new generation's files are downloaded over them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from flux_pipeline.plan.plan import Plan
from flux_pipeline.plan.selection import Matcher
from flux_pipeline.plan.tasks import TaskSpec, at_generation
from flux_pipeline.states import TaskRecord, TaskState

# a task in one of these states has a finished generation: --regenerate starts the next one
FINISHED = frozenset(
    {TaskState.DOWNLOADED, TaskState.SUCCEEDED, TaskState.FAILED, TaskState.EXPIRED}
)


def latest(known: Iterable[tuple[str | None, int]]) -> dict[str, int]:
    """Base key -> the highest generation of ``known`` ``(base key, generation)`` pairs."""
    found: dict[str, int] = {}
    for base, generation in known:
        if base is not None and generation > found.get(base, 0):
            found[base] = generation
    return found


def of_records(records: Iterable[TaskRecord]) -> dict[str, int]:
    """The generations the state DB rows record."""
    return latest((r.base_key, r.generation) for r in records if r.generation)


def with_generations(plan: Plan, generations: Mapping[str, int]) -> Plan:
    """``plan`` with every task at its recorded generation (and every chained task under its
    parent's key at that generation); ``plan`` itself when nothing was regenerated."""
    if not generations and not plan.generations:
        return plan
    renamed: dict[str, str] = {}
    tasks: list[TaskSpec] = []
    for task in plan.tasks:  # parents first
        parent = renamed.get(task.parent_key, task.parent_key) if task.parent_key else None
        moved = at_generation(task, parent, generations)
        if moved.key != task.key:
            renamed[task.key] = moved.key
        tasks.append(moved)
    planner = plan.planner.regenerated(tasks, renamed, generations)
    return dataclasses.replace(
        plan, tasks=tuple(tasks), generations=dict(generations), planner=planner
    )


@dataclass(frozen=True, slots=True)
class Regeneration:
    plan: Plan  # with the new generations
    started: tuple[TaskSpec, ...]  # moved to a new generation (their new specs)
    resumed: tuple[TaskSpec, ...]  # a regeneration already started, not finished: resumed
    unfinished: tuple[TaskSpec, ...]  # matched, never finished: they simply run as planned


def regenerate(
    plan: Plan,
    patterns: Sequence[str],
    records: Mapping[str, TaskRecord],
    keys: Collection[str] = (),
) -> Regeneration:
    """The tasks ``patterns`` match (step ids, readable-id globs, as ``--only``) or whose key
    is in ``keys`` (``--regenerate-rejected``) moved one generation on (module docstring).
    ``UsageError`` for a pattern that matches nothing."""
    patterned = Matcher(patterns, plan.step_ids)

    def matches(task: TaskSpec) -> bool:
        return patterned(task) or task.key in keys

    generations = dict(plan.generations)
    moving: set[str] = set()  # keys moved on, and their chained tasks
    started: list[str] = []
    resumed: list[TaskSpec] = []
    unfinished: list[TaskSpec] = []
    for task in plan.tasks:  # parents first
        if task.parent_key is not None and task.parent_key in moving:
            moving.add(task.key)  # follows its parent to a new key
            continue
        if not matches(task):
            continue
        record = records.get(task.key)
        if record is not None and record.state in FINISHED:
            generations[task.base_key] = task.generation + 1
            moving.add(task.key)
            started.append(task.readable_id)
        elif task.generation:
            resumed.append(task)
        else:
            unfinished.append(task)
    patterned.check(patterns, "--regenerate")
    moved = with_generations(plan, generations)
    by_id = {task.readable_id: task for task in moved.tasks}
    return Regeneration(
        plan=moved,
        started=tuple(by_id[i] for i in started),
        resumed=tuple(resumed),
        unfinished=tuple(unfinished),
    )


def superseded(records: Mapping[str, TaskRecord]) -> set[str]:
    """The keys of rows an older generation made (and of their chained tasks): kept, paid
    for, but no longer the task (what ``status`` without a manifest leaves out)."""
    top = of_records(records.values())
    older = [
        key
        for key, r in records.items()
        if (r.base_key or key) in top and r.generation < top[r.base_key or key]
    ]
    children: dict[str, list[str]] = {}
    for key, r in records.items():
        if r.parent_key is not None:
            children.setdefault(r.parent_key, []).append(key)
    found: set[str] = set()
    while older:
        key = older.pop()
        if key not in found:
            found.add(key)
            older.extend(children.get(key, ()))
    return found
