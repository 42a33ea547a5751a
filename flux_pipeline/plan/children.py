"""Chained tasks of a parent output, at run time: ``ChildPlanner.children(parent, i)``.

A plan holds the chained tasks of output 0 of every parent (docs/keys.md): they are planned
before their parents run. When a parent returns several images, the tasks editing output
``i > 0`` are planned when asked for, with the same compiled steps, variables and matrix cells
as the plan itself, so they have the keys, readable ids and outputs that planning up front
would give them, except for ``on_demand_output``. Chains continue: the children of a task
planned on demand are planned on demand too.

A template that fails only for an output ``i > 0`` (it cannot fail for output 0: those tasks
were planned up front) is contained to that parent output: ``children`` returns the tasks
that did render and keeps the others in ``unplanned`` (how many, and the first diagnostic),
so a run counts them as failed with ``TEMPLATE_ERROR`` and goes on; nothing raises at run
time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flux_pipeline.errors import ManifestError
from flux_pipeline.manifest.yamlload import Located
from flux_pipeline.plan.problems import Problems
from flux_pipeline.plan.render import Planned, TaskRenderer
from flux_pipeline.plan.steps import CompiledStep
from flux_pipeline.plan.tasks import TaskSpec, at_generation

TEMPLATE_ERROR = "TEMPLATE_ERROR"  # the fail code of chained tasks that could not be planned


@dataclass(frozen=True, slots=True)
class Unplanned:
    """Chained tasks of one parent output whose templates failed: never planned, failed."""

    parent: str  # the parent's readable id
    output_index: int
    count: int  # chained tasks of that output that could not be planned
    message: str  # the first diagnostic, one line

    def __str__(self) -> str:
        return (
            f"{TEMPLATE_ERROR}: {self.count} chained task(s) of {self.parent} output "
            f"{self.output_index} could not be planned: {self.message}"
        )


def on_demand_output(step: CompiledStep, output: str, output_index: int) -> str:
    """The output path of a task planned on demand for output ``output_index`` of its parent.

    The readable id of such a task carries ``~N`` after its parent's (docs/keys.md), and so
    does its default output (the slug of the readable id). An explicit ``output`` template
    that does not read ``parent`` would render the same path as the task editing output 0:
    ``~N`` is appended to keep clear of it. Outputs of output 0 and templates that read
    ``parent`` are kept as rendered.
    """
    if output_index and step.output is not None and not step.output.uses_parent:
        return f"{output}~{output_index}"
    return output


class ChildPlanner:
    """Plans the chained tasks of a parent output from what the expansion produced.

    ``tasks`` are the tasks planned up front (parents first), ``records`` every planned task
    with its step and matrix cell; tasks planned here are added to ``records`` and remembered.
    """

    def __init__(
        self,
        *,
        located: Located,
        variables: dict[str, Any],
        steps: Sequence[CompiledStep],
        records: dict[str, Planned],
        tasks: Sequence[TaskSpec],
        generations: Mapping[str, int] | None = None,
    ) -> None:
        self._located = located
        self._vars = variables
        self._steps = list(steps)
        self._records = records
        self._tasks = tasks
        self._generations = generations or {}  # base key -> generation (plan/generations.py)
        self._up_front: dict[str, list[TaskSpec]] | None = None  # parent key -> output 0 tasks
        self._on_demand: dict[tuple[str, int], list[TaskSpec]] = {}
        self._on_demand_keys: set[str] = set()  # tasks planned here, not in ``tasks``
        self.unplanned: dict[tuple[str, int], Unplanned] = {}  # (parent key, output index)

    def children(self, parent: TaskSpec, output_index: int) -> list[TaskSpec]:
        """Chained tasks editing output ``output_index`` of ``parent``.

        For output 0 of a task planned up front these are tasks of the plan; otherwise they
        are planned now, with the same rules, and remembered.
        """
        if output_index == 0 and parent.key not in self._on_demand_keys:
            return list(self._planned_up_front().get(parent.key, []))
        cache_key = (parent.key, output_index)
        if cache_key not in self._on_demand:
            found, problems = self._render(parent, output_index)
            if problems.diagnostics:  # contained: these children count as failed
                expected = sum(
                    len(step.cells) * step.repeat
                    for step in self._steps
                    if step.parent == parent.step
                )
                first = str(problems.diagnostics[0]).splitlines()[0][:300]
                missing = max(1, expected - len(found))
                self.unplanned[cache_key] = Unplanned(
                    parent.readable_id, output_index, missing, first
                )
            self._on_demand[cache_key] = found
            self._on_demand_keys.update(task.key for task in found)
        return list(self._on_demand[cache_key])

    def _planned_up_front(self) -> dict[str, list[TaskSpec]]:
        if self._up_front is None:
            index: dict[str, list[TaskSpec]] = {}
            for task in self._tasks:
                if task.parent_key is not None and task.parent_output_index == 0:
                    index.setdefault(task.parent_key, []).append(task)
            self._up_front = index
        return self._up_front

    def plan_now(self, parent: TaskSpec, output_index: int) -> list[TaskSpec]:
        """Render the children of output ``output_index`` of ``parent`` now, not remembered.

        For output 0 of a task planned up front they equal the plan's own tasks.
        """
        found, problems = self._render(parent, output_index)
        if problems.diagnostics:  # a template failed for this output only: not expected
            raise ManifestError(problems.diagnostics)
        return found

    @property
    def unplanned_count(self) -> int:
        """Chained tasks asked for so far that could not be planned (``unplanned``)."""
        return sum(u.count for u in self.unplanned.values())

    def _render(self, parent: TaskSpec, output_index: int) -> tuple[list[TaskSpec], Problems]:
        problems = Problems(self._located)
        renderer = TaskRenderer(
            variables=self._vars,
            steps=self._steps,
            records=self._records,
            problems=problems,
            admit=self._admit,
        )
        found: list[TaskSpec] = []
        for step in self._steps:
            if step.parent == parent.step:
                found.extend(renderer.tasks_of(step, parent, output_index))
        return found, problems

    def _admit(self, step: CompiledStep, spec: TaskSpec) -> TaskSpec:
        output = on_demand_output(step, spec.output, spec.parent_output_index or 0)
        spec = spec if output == spec.output else dataclasses.replace(spec, output=output)
        return at_generation(spec, spec.parent_key, self._generations)

    def regenerated(
        self,
        tasks: Sequence[TaskSpec],
        renamed: Mapping[str, str],
        generations: Mapping[str, int],
    ) -> ChildPlanner:
        """This planner for ``tasks``, the plan's tasks at ``generations``, where ``renamed``
        maps each old key to its new one: chained tasks planned on demand are planned under
        the new keys, at their own generations."""
        records = dict(self._records)
        by_key = {task.key: task for task in tasks}
        for old, new in renamed.items():
            planned = records[old]
            records[new] = dataclasses.replace(planned, spec=by_key[new])
        return ChildPlanner(
            located=self._located,
            variables=self._vars,
            steps=self._steps,
            records=records,
            tasks=tasks,
            generations=generations,
        )
