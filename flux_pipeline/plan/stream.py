"""A manifest's plan one task at a time, for manifests of up to ``MAX_TASKS`` tasks.

``open_stream(path)`` loads and compiles the manifest (plan/expand.py ``prepare``);
``PlanStream.check(watch)`` expands it and checks it as ``load_plan`` does, raising the same
``ManifestError`` for the same manifest, and shows ``watch`` every task in plan order (the
order and the ``TaskSpec`` of ``Plan.tasks``); ``PlanStream.tasks()`` then renders them again,
in the same order. No pass keeps the tasks: the memory is flat in the number of tasks but for
the 8-byte digests of the uniqueness checks (plan/unique.py).

Both paths share the rules: which steps are planned (``expand.plan_steps``), how a task is
rendered (``TaskRenderer``), what must be unique (``Uniqueness``). A chained task needs its
ancestors' records (``TaskRenderer._parent_object``): the tasks of a parent step are rendered
again, lazily, while its children are rendered, and ``records`` holds only the ancestors of
the task being rendered. That costs time, not memory.

A check is exact: a pass takes a value as unique when its digest is not among the suspects
(digests an earlier pass saw twice); when it saw a digest twice that was not a suspect, the
check passes again with it among the suspects (plan/unique.py). A manifest without repeats
is checked in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from flux_pipeline.errors import Diagnostic, ManifestError
from flux_pipeline.manifest.load import load_manifest
from flux_pipeline.manifest.models import Pricing, Storage
from flux_pipeline.plan import budget, expand
from flux_pipeline.plan.cost import step_mode
from flux_pipeline.plan.problems import Problems
from flux_pipeline.plan.render import Planned, TaskRenderer
from flux_pipeline.plan.steps import CompiledStep
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.plan.unique import NO_SUSPECTS, Suspects, Uniqueness, covered, union

__all__ = ["PlanStream", "open_stream"]

W = TypeVar("W", bound=Callable[[TaskSpec], None])


def open_stream(
    path: Path, *, file: str | None = None, max_tasks: int = expand.MAX_TASKS
) -> PlanStream:
    """The manifest at ``path`` loaded and its steps compiled; its problems are raised by
    ``PlanStream.check`` with the others (a manifest that cannot be read raises now)."""
    loaded = load_manifest(path, file=file)
    token = budget.start_plan()
    try:
        prepared = expand.prepare(loaded, dict(loaded.model.vars), max_tasks=max_tasks)
    finally:
        budget.stop_plan(token)
    return PlanStream(prepared, max_tasks=max_tasks)


def _as_is(step: CompiledStep, spec: TaskSpec) -> TaskSpec:
    return spec


def _no_watch() -> Callable[[TaskSpec], None]:
    return lambda spec: None


class PlanStream:
    """One manifest's plan, streamed: what ``Plan`` says of the whole, and its tasks on demand."""

    def __init__(self, prepared: expand.Prepared, *, max_tasks: int) -> None:
        self._prepared = prepared
        self._max_tasks = max_tasks
        self._by_id = {step.id: step for step in prepared.steps}
        loaded = prepared.loaded
        facts = prepared.step_facts()
        self.name: str = loaded.model.name
        self.manifest_path: Path = loaded.path
        self.manifest_sha256: str = loaded.sha256
        self.pricing: Pricing | None = loaded.model.pricing
        self.storage: Storage | None = loaded.model.storage
        self.step_order: tuple[str, ...] = facts["step_order"]
        self.step_locations: Mapping[str, tuple[int, int]] = facts["step_locations"]
        self.gates: Mapping[str, str] = facts["gates"]
        # step id -> the mode of all its tasks (None: per task), for counting costs
        self.step_modes: Mapping[str, str | None] = {s.id: step_mode(s) for s in prepared.steps}
        self.warnings: tuple[Diagnostic, ...] = ()  # known after ``check``
        self.counts: Mapping[str, int] = MappingProxyType({})  # step id -> tasks, by ``check``
        self._checked = False

    @property
    def step_ids(self) -> list[str]:
        return list(self.step_order)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def check(self, *, strict: bool = False) -> None:
        """Expand and check the manifest: ``ManifestError`` with every problem, as
        ``load_plan`` reports them (with ``strict``, warnings too)."""
        self.watch(_no_watch, strict=strict)

    def watch(self, watch: Callable[[], W], *, strict: bool = False) -> W:
        """``check``, showing every task, in plan order, to ``watch()`` (a new one for each
        pass); the one of the exact pass is returned."""
        suspects: Suspects = NO_SUSPECTS
        while True:
            problems = self._prepared.problems.copy()
            unique = Uniqueness(problems, max_chars=expand.MAX_PLAN_CHARS, suspects=suspects)
            seen = watch()
            counts = self._expand(problems, unique, seen)
            found = unique.digests.repeated()
            if covered(found, suspects):
                break
            suspects = union(suspects, found)
        if problems.diagnostics:
            raise ManifestError(problems.sorted())
        self.warnings = self._prepared.warnings(problems)
        if strict and self.warnings:
            raise ManifestError([expand.strict_error(w) for w in self.warnings])
        self.counts = MappingProxyType({step: counts[step] for step in self.step_order})
        self._checked = True
        return seen

    def tasks(self) -> Iterator[TaskSpec]:
        """Every task of the plan, in plan order (parents first), rendered again; after
        ``check``."""
        if not self._checked:
            raise RuntimeError("PlanStream.tasks() before check()")
        problems = self._prepared.problems.copy()
        records: dict[str, Planned] = {}
        renderer = self._renderer(problems, records, _as_is)
        token = budget.start_plan()
        try:
            for step in self._prepared.steps:
                for spec in self._each(step, renderer, renderer, records):
                    if problems.count:  # a render that passed the check failed now
                        raise ManifestError(problems.sorted())
                    yield spec
            if problems.count:
                raise ManifestError(problems.sorted())
        finally:
            budget.stop_plan(token)

    def _renderer(
        self,
        problems: Problems,
        records: dict[str, Planned],
        admit: Callable[[CompiledStep, TaskSpec], TaskSpec],
    ) -> TaskRenderer:
        return TaskRenderer(
            variables=self._prepared.variables,
            steps=self._prepared.steps,
            records=records,
            problems=problems,
            admit=admit,
        )

    def _expand(
        self, problems: Problems, unique: Uniqueness, seen: Callable[[TaskSpec], None]
    ) -> dict[str, int]:
        records: dict[str, Planned] = {}
        checking = self._renderer(problems, records, unique.admit)
        again = self._renderer(problems, records, _as_is)

        def tasks_of(step: CompiledStep) -> Iterator[TaskSpec]:
            for spec in self._each(step, checking, again, records):
                seen(spec)
                yield spec

        token = budget.start_plan()
        try:
            return expand.plan_steps(
                self._prepared.steps, problems, max_tasks=self._max_tasks, tasks_of=tasks_of
            )
        finally:
            budget.stop_plan(token)

    def _each(
        self,
        step: CompiledStep,
        renderer: TaskRenderer,
        ancestors: TaskRenderer,
        records: dict[str, Planned],
    ) -> Iterator[TaskSpec]:
        """The tasks of ``step`` (``renderer``) for every task of its parent step, rendered
        again (``ancestors``); each task's record is dropped once its children are done."""
        parents: Iterator[TaskSpec | None]
        if step.parent is None:
            parents = iter([None])
        else:
            parents = self._each(self._by_id[step.parent], ancestors, ancestors, records)
        for parent in parents:
            for spec in renderer.each_task(step, parent, 0):
                yield spec
                records.pop(spec.key, None)
