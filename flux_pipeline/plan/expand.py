"""Manifest -> ``Plan``: every task with its rendered request, key, readable id and output.

``load_plan(path)`` validates the manifest (``manifest``), resolves image sets (``imagesets``),
builds each step's matrix cells (``axes``), compiles the steps (``steps``), renders every task
(``render``) and checks that readable ids, keys and output paths are unique. It reads the files
the manifest references and nothing else. Every problem found is collected and raised at the
end as one ``ManifestError``.

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
from flux_pipeline.plan.outputs import OutputTree
from flux_pipeline.plan.plan import Plan
from flux_pipeline.plan.problems import Failed, Problems
from flux_pipeline.plan.render import Planned, TaskRenderer
from flux_pipeline.plan.steps import CompiledStep, compile_step
from flux_pipeline.plan.tasks import TaskSpec

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
        plan = _Expander(loaded, dict(loaded.model.vars), max_tasks=max_tasks).run()
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


class _Expander:
    """One expansion of a manifest, up front: the tasks must have unique ids, keys, outputs."""

    def __init__(
        self, loaded: LoadedManifest, variables: dict[str, Any], *, max_tasks: int
    ) -> None:
        self.loaded = loaded
        self.vars = variables
        self.max_tasks = max_tasks
        self.problems = Problems(loaded.located)
        self.report = self.problems.report
        self.steps: list[CompiledStep] = []
        self.records: dict[str, Planned] = {}
        self.rids: dict[str, str] = {}  # readable id -> key
        self.outputs: dict[str, str] = {}  # casefolded output -> readable id
        self.tree = OutputTree()
        self.chars = 0  # the size of the plan so far (MAX_PLAN_CHARS)
        self._collisions: set[tuple[str, str]] = set()

    def run(self) -> Plan:
        model = self.loaded.model
        base = self.loaded.path.parent
        root = project_root(base)
        resolver = Resolver(base, self.vars, self.report, root=root)
        image_sets: dict[str, list[Image]] = {}
        for name, spec in model.image_sets.items():
            before = self.problems.count
            images = resolver.resolve(name, spec)
            if self.problems.count == before:
                image_sets[name] = images
            else:
                image_sets[name] = []  # reported; steps using it stay quiet
        builder = CellBuilder(
            base, image_sets, self.report, max_cells=self.max_tasks, root=root, resolver=resolver
        )
        for index in self._order(model.steps):
            step = compile_step(index, model.steps[index], model, builder, self.problems)
            if step is not None:
                self.steps.append(step)
        renderer = TaskRenderer(
            variables=self.vars,
            steps=self.steps,
            records=self.records,
            problems=self.problems,
            admit=self._check_unique,
        )
        tasks: list[TaskSpec] = []
        planned: dict[str, list[TaskSpec]] = {}
        for step in self.steps:
            if step.parent is None:
                parents: list[TaskSpec | None] = [None]
            elif step.parent in planned:
                parents = list(planned[step.parent])
            else:
                continue  # the parent step is invalid: reported already
            estimate = len(parents) * len(step.cells) * step.repeat
            if len(tasks) + estimate > self.max_tasks:
                self.report(
                    step.at,
                    f"step {step.id!r} would bring the plan to {len(tasks) + estimate} tasks; "
                    f"the limit is {self.max_tasks}",
                )
                continue
            before = self.problems.count
            own: list[TaskSpec] = []
            for parent in parents:
                own.extend(renderer.tasks_of(step, parent, 0))
            if self.problems.count == before:
                planned[step.id] = own
                tasks.extend(own)
        if self.problems.diagnostics:
            raise ManifestError(self.problems.sorted())
        self.rids.clear()
        self.outputs.clear()
        self.tree = OutputTree()
        all_tasks = tuple(tasks)
        del tasks, planned
        located = self.loaded.located
        in_order = sorted(self.steps, key=lambda s: s.index)
        return Plan(
            name=model.name,
            manifest_path=self.loaded.path,
            manifest_sha256=self.loaded.sha256,
            tasks=all_tasks,
            step_order=tuple(step.id for step in in_order),
            step_locations=MappingProxyType({s.id: located.where(s.at) for s in in_order}),
            local_images=MappingProxyType(resolver.local),
            pricing=model.pricing,
            storage=model.storage,
            gates=MappingProxyType({s.id: s.only for s in in_order if s.only is not None}),
            planner=ChildPlanner(
                located=located,
                variables=self.vars,
                steps=self.steps,
                records=self.records,
                tasks=all_tasks,
            ),
            warnings=tuple(sorted(self.problems.warnings, key=lambda d: (d.line, d.column))),
        )

    def _order(self, steps: list[Step]) -> list[int]:
        """Step indexes, parents first; reports duplicate ids, unknown ``from`` and cycles."""
        by_id: dict[str, int] = {}
        for i, step in enumerate(steps):
            if step.id in by_id:
                line, column = self.loaded.located.where(("steps", by_id[step.id], "id"))
                self.report(
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
                self.report(at, f"unknown step {step.parent!r}{hint}")
                continue
            seen = [step.id]
            current: str | None = step.parent
            while current is not None and current not in seen:
                seen.append(current)
                current = steps[by_id[current]].parent if current in by_id else None
            if current is not None:
                cycle = " -> ".join([*seen[seen.index(current) :], current])
                self.report(("steps", i, "from"), f"`from` makes a cycle: {cycle}")
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

    # -- uniqueness (up front only: tasks planned on demand follow ``on_demand_output``) --

    def _collision(self, step: CompiledStep, kind: str, at: Path_, message: str) -> Failed:
        if (step.id, kind) not in self._collisions:
            self._collisions.add((step.id, kind))
            self.report(at, message)
        return Failed()

    def _check_unique(self, step: CompiledStep, spec: TaskSpec) -> TaskSpec:
        """``spec`` if its readable id, key and output (case-folded) are new; else ``Failed``."""
        readable_id, key = spec.readable_id, spec.key
        self.chars += len(spec.request_json) + len(readable_id) + len(spec.output)
        if self.chars > MAX_PLAN_CHARS:
            raise self._collision(
                step,
                "size",
                step.at,
                f"the plan would hold more than {MAX_PLAN_CHARS} characters of requests "
                f"(at task {readable_id!r}): fewer tasks or shorter prompts",
            )
        if readable_id in self.rids:
            raise self._collision(
                step, "id", step.at, f"two tasks have the readable id {readable_id!r}"
            )
        self.rids[readable_id] = key
        other = self.records.get(key)
        if other is not None:
            raise self._collision(
                step,
                "key",
                step.at,
                f"tasks {other.spec.readable_id!r} and {readable_id!r} would send the same "
                "request (does the prompt use every matrix axis?)",
            )
        folded = spec.output.casefold()
        first = self.outputs.get(folded)
        if first is not None:
            at = step.output.at if step.output is not None else step.at
            raise self._collision(
                step,
                "output",
                at,
                f"output path {spec.output!r} of task {readable_id!r} collides with task {first!r}",
            )
        clash = self.tree.add(spec.output, spec.extension, readable_id)
        if clash is not None:
            at = step.output.at if step.output is not None else step.at
            raise self._collision(step, "tree", at, clash)
        self.outputs[folded] = readable_id
        return spec
