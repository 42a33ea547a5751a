"""Manifest -> ``Plan``: every task with its rendered request, key, readable id and output.

``load_plan(path)`` validates the manifest (``manifest``), resolves image sets (``imagesets``),
builds each step's matrix cells (``axes``), compiles the steps (``steps``), renders every task
(``render``) and checks that readable ids, keys and output paths are unique (``unique``). It
reads the files the manifest references and nothing else. Every problem found is collected and
raised at the end as one ``ManifestError``. ``prepare`` and ``plan_steps`` (which steps are
planned) are shared with the streamed plan (``stream``), which gives the same tasks and the
same problems without keeping the tasks.

Chained steps (``from``) are planned before their parents have run: one task per cell and
repeat for output image 0 of every parent task, with ``parent.image_url`` rendered as the
``PARENT_IMAGE_URL`` marker. When a parent returns several images, the plan's ``ChildPlanner``
(``Plan.children(parent, i)``) plans the tasks for output ``i`` with the same rules. Parents
always precede their children in ``Plan.tasks``.

Per task the work is kept small (100,000 tasks plan in seconds): templates are compiled once;
a template that reads neither ``repeat_index`` nor ``parent`` renders once per matrix cell; text
without Jinja syntax is never rendered at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from flux_pipeline.errors import Diagnostic, ManifestError, did_you_mean
from flux_pipeline.layout import project_root
from flux_pipeline.manifest.apivalues import WARNING_HINT
from flux_pipeline.manifest.load import LoadedManifest, load_manifest
from flux_pipeline.manifest.models import Step
from flux_pipeline.manifest.yamlload import Path_
from flux_pipeline.plan import budget
from flux_pipeline.plan.axes import CellBuilder
from flux_pipeline.plan.children import ChildPlanner
from flux_pipeline.plan.imagesets import Image, LocalImage, Resolver
from flux_pipeline.plan.plan import Plan
from flux_pipeline.plan.problems import Problems
from flux_pipeline.plan.render import Planned, TaskRenderer
from flux_pipeline.plan.steps import CompiledStep, compile_step
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.plan.unique import Uniqueness

__all__ = ["MAX_PLAN_CHARS", "MAX_TASKS", "LocalImage", "Plan", "load_plan"]

MAX_TASKS = 1_000_000
MAX_PLAN_CHARS = 500_000_000  # rendered requests, ids and outputs of all tasks together


def load_plan(
    path: Path, *, file: str | None = None, max_tasks: int = MAX_TASKS, strict: bool = False
) -> Plan:
    """Validate and expand the manifest at ``path``. Raises ``ManifestError`` (all problems);
    with ``strict``, warnings (``Plan.warnings``) are errors too."""
    loaded = load_manifest(path, file=file)
    token = budget.start_plan()  # the renders of one plan share MAX_PLAN_RENDER_SECONDS
    try:
        prepared = prepare(loaded, dict(loaded.model.vars), max_tasks=max_tasks)
        plan = _Expander(prepared, max_tasks=max_tasks).run()
    finally:
        budget.stop_plan(token)
    if strict and plan.warnings:
        raise ManifestError([strict_error(w) for w in plan.warnings])
    return plan


def strict_error(warning: Diagnostic) -> Diagnostic:
    """A warning as the error ``--strict`` makes of it."""
    message = warning.message.removeprefix("warning: ")
    message = message.replace(f"; {WARNING_HINT}", "")
    return dataclasses.replace(warning, message=f"{message} (an error with --strict)")


@dataclass(slots=True)
class Prepared:
    """A manifest ready to expand: its steps compiled (parents first), the problems so far."""

    loaded: LoadedManifest
    variables: dict[str, Any]
    problems: Problems
    steps: list[CompiledStep]
    resolver: Resolver

    def step_facts(self) -> dict[str, Any]:
        """What a plan says of its steps, in manifest order (``Plan`` fields)."""
        located = self.loaded.located
        in_order = sorted(self.steps, key=lambda s: s.index)
        return {
            "step_order": tuple(step.id for step in in_order),
            "step_locations": MappingProxyType({s.id: located.where(s.at) for s in in_order}),
            "gates": MappingProxyType({s.id: s.only for s in in_order if s.only is not None}),
        }

    def warnings(self, problems: Problems | None = None) -> tuple[Diagnostic, ...]:
        found = (problems or self.problems).warnings
        return tuple(sorted(found, key=lambda d: (d.line, d.column)))


def prepare(loaded: LoadedManifest, variables: dict[str, Any], *, max_tasks: int) -> Prepared:
    """Resolve the image sets, build the matrix cells and compile the steps, parents first;
    what is wrong is collected in ``Prepared.problems``."""
    problems = Problems(loaded.located)
    model = loaded.model
    base = loaded.path.parent
    root = project_root(base)
    resolver = Resolver(base, variables, problems.report, root=root)
    image_sets: dict[str, list[Image]] = {}
    for name, spec in model.image_sets.items():
        before = problems.count
        images = resolver.resolve(name, spec)
        if problems.count == before:
            image_sets[name] = images
        else:
            image_sets[name] = []  # reported; steps using it stay quiet
    builder = CellBuilder(
        base, image_sets, problems.report, max_cells=max_tasks, root=root, resolver=resolver
    )
    steps: list[CompiledStep] = []
    for index in _order(loaded, problems, model.steps):
        step = compile_step(index, model.steps[index], model, builder, problems)
        if step is not None:
            steps.append(step)
    return Prepared(loaded, variables, problems, steps, resolver)


def plan_steps(
    steps: Sequence[CompiledStep],
    problems: Problems,
    *,
    max_tasks: int,
    tasks_of: Callable[[CompiledStep], Iterable[TaskSpec]],
) -> dict[str, int]:
    """Which steps are planned, parents first, and how many tasks each has (the planned ones).

    ``tasks_of(step)`` renders and admits the tasks of ``step`` for every task of its parent
    step; a step is planned when that added no problem, and only the steps of planned parents
    are tried. A step that would bring the plan past ``max_tasks`` is reported, not rendered.
    """
    counts: dict[str, int] = {}
    total = 0
    for step in steps:
        if step.parent is None:
            parents = 1
        elif step.parent in counts:
            parents = counts[step.parent]
        else:
            continue  # the parent step is invalid: reported already
        estimate = parents * len(step.cells) * step.repeat
        if total + estimate > max_tasks:
            problems.report(
                step.at,
                f"step {step.id!r} would bring the plan to {total + estimate} tasks; "
                f"the limit is {max_tasks}",
            )
            continue
        before = problems.count
        count = 0
        for _ in tasks_of(step):
            count += 1
        if problems.count == before:
            counts[step.id] = count
            total += count
    return counts


class _Expander:
    """One expansion of a manifest, up front: every task kept, with its record."""

    def __init__(self, prepared: Prepared, *, max_tasks: int) -> None:
        self.prepared = prepared
        self.max_tasks = max_tasks
        self.problems = prepared.problems
        self.records: dict[str, Planned] = {}
        self.unique = Uniqueness(self.problems, max_chars=MAX_PLAN_CHARS, key_owner=self._key_owner)

    def _key_owner(self, key: str) -> str | None:
        other = self.records.get(key)
        return other.spec.readable_id if other is not None else None

    def run(self) -> Plan:
        prepared = self.prepared
        loaded, steps = prepared.loaded, prepared.steps
        renderer = TaskRenderer(
            variables=prepared.variables,
            steps=steps,
            records=self.records,
            problems=self.problems,
            admit=self.unique.admit,
        )
        planned: dict[str, list[TaskSpec]] = {}  # step id -> its tasks (planned or not)

        def tasks_of(step: CompiledStep) -> Iterator[TaskSpec]:
            own: list[TaskSpec] = []
            planned[step.id] = own
            parents: Sequence[TaskSpec | None] = (
                [None] if step.parent is None else planned[step.parent]
            )
            for parent in parents:
                for spec in renderer.tasks_of(step, parent, 0):
                    own.append(spec)
                    yield spec

        counts = plan_steps(steps, self.problems, max_tasks=self.max_tasks, tasks_of=tasks_of)
        if self.problems.diagnostics:
            raise ManifestError(self.problems.sorted())
        all_tasks = tuple(task for step in steps if step.id in counts for task in planned[step.id])
        planned.clear()
        self.unique = Uniqueness(self.problems, max_chars=MAX_PLAN_CHARS)
        model = loaded.model
        return Plan(
            name=model.name,
            manifest_path=loaded.path,
            manifest_sha256=loaded.sha256,
            tasks=all_tasks,
            local_images=MappingProxyType(prepared.resolver.local),
            pricing=model.pricing,
            storage=model.storage,
            planner=ChildPlanner(
                located=loaded.located,
                variables=prepared.variables,
                steps=steps,
                records=self.records,
                tasks=all_tasks,
            ),
            warnings=prepared.warnings(),
            **prepared.step_facts(),
        )


def _order(loaded: LoadedManifest, problems: Problems, steps: list[Step]) -> list[int]:
    """Step indexes, parents first; reports duplicate ids, unknown ``from`` and cycles."""
    report = problems.report
    by_id: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.id in by_id:
            line, column = loaded.located.where(("steps", by_id[step.id], "id"))
            report(
                ("steps", i, "id"),
                f"duplicate step id {step.id!r} (first used at line {line}, column {column})",
            )
        else:
            by_id[step.id] = i
    for i, step in enumerate(steps):
        if step.parent is None or by_id.get(step.id) != i:
            continue
        if step.parent not in by_id:
            hint = did_you_mean(step.parent, list(by_id))
            at: Path_ = ("steps", i, "from") + (() if step.only is None else ("step",))
            report(at, f"unknown step {step.parent!r}{hint}")
            continue
        seen = [step.id]
        current: str | None = step.parent
        while current is not None and current not in seen:
            seen.append(current)
            current = steps[by_id[current]].parent if current in by_id else None
        if current is not None:
            cycle = " -> ".join([*seen[seen.index(current) :], current])
            report(("steps", i, "from"), f"`from` makes a cycle: {cycle}")
    order: list[int] = []
    remaining = [i for i, s in enumerate(steps) if by_id.get(s.id) == i]
    placed: set[str] = set()
    progress = True
    while remaining and progress:
        progress = False
        for i in list(remaining):
            parent = steps[i].parent
            if parent is None or parent in placed:
                order.append(i)
                placed.add(steps[i].id)
                remaining.remove(i)
                progress = True
    return order
