"""Manifest -> ``Plan``: every task with its rendered request, key, readable id and output.

``load_plan(path)`` validates the manifest (``manifest``), resolves image sets (``imagesets``),
builds each step's matrix cells (``axes``), renders the templates and computes the keys
(docs/keys.md). It reads the files the manifest references and nothing else. Every problem found
is collected and raised at the end as one ``ManifestError``.

Chained steps (``from``) are planned before their parents have run: one task per cell and
repeat for output image 0 of every parent task, with ``parent.image_url`` rendered as the
``PARENT_IMAGE_URL`` marker. When a parent returns several images, ``Plan.children(parent, i)``
plans the tasks for output ``i`` with the same rules. Parents always precede their children in
``Plan.tasks``.

Per task the work is kept small (100,000 tasks plan in seconds): templates are compiled once;
a template that reads neither ``repeat_index`` nor ``parent`` renders once per matrix cell; text
without Jinja syntax is never rendered at all.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flux_pipeline.errors import Diagnostic, ManifestError, did_you_mean
from flux_pipeline.layout import project_root
from flux_pipeline.manifest.models import InputFields, LoadedManifest, Step, dotted, load_manifest
from flux_pipeline.manifest.yamlload import Path_
from flux_pipeline.plan import templates
from flux_pipeline.plan.axes import Cell, CellBuilder
from flux_pipeline.plan.imagesets import Image, LocalImage, Resolver, is_http_url, sha256_hex
from flux_pipeline.plan.tasks import (
    IMAGE_EXTENSIONS,
    LOCAL_IMAGE_PREFIX,
    PARENT_IMAGE_URL,
    TaskSpec,
    canonical_json,
    data_uri,
    task_key,
)
from flux_pipeline.plan.templates import TemplateProblem

__all__ = ["MAX_TASKS", "LocalImage", "Plan", "check_keys", "load_plan", "output_problem"]

MAX_TASKS = 1_000_000
MAX_ERRORS = 200
DEFAULT_OUTPUT_FORMAT = "jpeg"  # the API's default
PER_TASK_NAMES = frozenset({"repeat_index", "parent"})
_UNSAFE_OUTPUT = re.compile(r"[\x00-\x1f\\]")


@dataclass(frozen=True, slots=True)
class _Template:
    """One template of a step: compiled, where it is, whether it varies per task."""

    compiled: templates.Compiled
    at: Path_
    per_task: bool  # reads repeat_index or parent: cannot be shared by a cell's tasks
    uses_parent: bool
    slot: int  # index into the step's per-cell cache


@dataclass(slots=True)
class _Step:
    index: int
    id: str
    parent: str | None
    at: Path_
    cells: list[Cell]
    repeat: int
    prompt: _Template
    images: list[_Template] | None  # None: chained default, [PARENT_IMAGE_URL]
    output: _Template | None  # None: the default output
    provider: str
    static_input: dict[str, Any]
    templated_input: list[tuple[str, Any, list[_Template]]]
    output_format: str
    step_obj: dict[str, Any]
    cache: dict[tuple[int, int], str]  # (template slot, cell index) -> rendered


@dataclass(frozen=True, slots=True)
class _Record:
    spec: TaskSpec
    step: int
    cell: int


class _Failed(Exception):
    """A task could not be built (already reported)."""


class Plan:
    """The expanded manifest: what ``plan`` shows and ``run`` executes."""

    def __init__(
        self,
        *,
        loaded: LoadedManifest,
        tasks: list[TaskSpec],
        local_images: dict[str, LocalImage],
        steps: list[_Step],
        records: dict[str, _Record],
        variables: dict[str, Any],
    ) -> None:
        self.name = loaded.model.name
        self.manifest_path = loaded.path
        self.manifest_sha256 = loaded.sha256
        self.tasks = tasks
        self.local_images: Mapping[str, LocalImage] = local_images
        self._loaded = loaded
        self._steps = steps
        self._step_by_id = {step.id: step for step in steps}
        self._records = records
        self._vars = variables
        self._children0: dict[str, list[TaskSpec]] | None = None
        self._children_more: dict[tuple[str, int], list[TaskSpec]] = {}
        self._on_demand: set[str] = set()  # keys of tasks planned by children(), not in tasks

    @property
    def step_ids(self) -> list[str]:
        """Step ids in manifest order."""
        return [step.id for step in sorted(self._steps, key=lambda s: s.index)]

    def step_location(self, step_id: str) -> tuple[int, int]:
        """(line, column) of the step in the manifest, for annotations."""
        return self._loaded.located.where(self._step_by_id[step_id].at)

    def data_uri(self, sha256: str) -> str:
        """The ``data:`` URI of a local reference image (checked against its hash)."""
        return _data_uri(self.local_images[sha256])

    def children(self, parent: TaskSpec, output_index: int) -> list[TaskSpec]:
        """Chained tasks editing output ``output_index`` of ``parent``.

        For index 0 these are the tasks already in ``tasks``; for other indexes (the API
        returned several images) they are planned now with the same rules, and remembered.
        """
        if output_index == 0 and parent.key not in self._on_demand:
            if self._children0 is None:
                index: dict[str, list[TaskSpec]] = {}
                for task in self.tasks:
                    if task.parent_key is not None and task.parent_output_index == 0:
                        index.setdefault(task.parent_key, []).append(task)
                self._children0 = index
            return list(self._children0.get(parent.key, []))
        cache_key = (parent.key, output_index)
        if cache_key not in self._children_more:
            expander = _Expander(self._loaded, self._vars, checks=False)
            expander.steps = self._steps
            expander.records = self._records
            found: list[TaskSpec] = []
            for step in self._steps:
                if step.parent == parent.step:
                    found.extend(expander.tasks_of(step, parent, output_index))
            if expander.diagnostics:  # a template failed for this output only: not expected
                raise ManifestError(expander.diagnostics)
            self._children_more[cache_key] = found
            self._on_demand.update(task.key for task in found)
        return list(self._children_more[cache_key])


@functools.lru_cache(maxsize=8)
def _data_uri(image: LocalImage) -> str:
    try:
        content = image.path.read_bytes()
    except OSError as exc:
        message = f"cannot read the reference image: {exc.strerror or exc}"
        diagnostic = Diagnostic(file=str(image.path), line=0, column=0, message=message)
        raise ManifestError([diagnostic]) from None
    if sha256_hex(content) != image.sha256:
        message = "the reference image changed since the plan was made; plan again"
        raise ManifestError([Diagnostic(file=str(image.path), line=0, column=0, message=message)])
    return data_uri(content, image.mime)


def load_plan(path: Path, *, file: str | None = None, max_tasks: int = MAX_TASKS) -> Plan:
    """Validate and expand the manifest at ``path``. Raises ``ManifestError`` (all problems)."""
    loaded = load_manifest(path, file=file)
    expander = _Expander(loaded, dict(loaded.model.vars), checks=True, max_tasks=max_tasks)
    return expander.run()


class _Expander:
    def __init__(
        self,
        loaded: LoadedManifest,
        variables: dict[str, Any],
        *,
        checks: bool,
        max_tasks: int = MAX_TASKS,
    ) -> None:
        self.loaded = loaded
        self.vars = variables
        self.checks = checks  # uniqueness of ids/keys/outputs (only while planning)
        self.max_tasks = max_tasks
        self.diagnostics: list[Diagnostic] = []
        self._reported: set[tuple[Path_, str]] = set()
        self.failed_templates: set[Path_] = set()
        self.steps: list[_Step] = []
        self.records: dict[str, _Record] = {}
        self.rids: dict[str, str] = {}  # readable id -> key
        self.outputs: dict[str, str] = {}  # casefolded output -> readable id
        self._collisions: set[tuple[str, str]] = set()

    # -- reporting ------------------------------------------------------------------------

    def report(self, at: Path_, message: str, *, key: bool = False) -> None:
        if (at, message) in self._reported or len(self.diagnostics) >= MAX_ERRORS:
            return
        self._reported.add((at, message))
        self.diagnostics.append(self.loaded.located.diag(at, f"{dotted(at)}: {message}", key=key))

    # -- the whole plan -------------------------------------------------------------------

    def run(self) -> Plan:
        model = self.loaded.model
        base = self.loaded.path.parent
        root = project_root(base)
        resolver = Resolver(base, self.vars, self.report, root=root)
        image_sets: dict[str, list[Image]] = {}
        for name, spec in model.image_sets.items():
            before = len(self.diagnostics)
            images = resolver.resolve(name, spec)
            if len(self.diagnostics) == before:
                image_sets[name] = images
            else:
                image_sets[name] = []  # reported; steps using it stay quiet
        builder = CellBuilder(base, image_sets, self.report, max_cells=self.max_tasks, root=root)
        order = self._order(model.steps)
        for index in order:
            step = self._compile(index, model.steps[index], builder)
            if step is not None:
                self.steps.append(step)
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
            before = len(self.diagnostics)
            own: list[TaskSpec] = []
            for parent in parents:
                own.extend(self.tasks_of(step, parent, 0))
            if len(self.diagnostics) == before:
                planned[step.id] = own
                tasks.extend(own)
        if self.diagnostics:
            raise ManifestError(sorted(self.diagnostics, key=lambda d: (d.line, d.column)))
        first_of_step = {task.step: task for task in reversed(tasks)}
        check_keys(first_of_step.values())
        self.rids.clear()
        self.outputs.clear()
        return Plan(
            loaded=self.loaded,
            tasks=tasks,
            local_images=resolver.local,
            steps=self.steps,
            records=self.records,
            variables=self.vars,
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
            if step.from_ is None or by_id.get(step.id) != i:
                continue
            if step.from_ not in by_id:
                hint = did_you_mean(step.from_, list(by_id))
                self.report(("steps", i, "from"), f"unknown step {step.from_!r}{hint}")
                continue
            seen = [step.id]
            current: str | None = step.from_
            while current is not None and current not in seen:
                seen.append(current)
                current = steps[by_id[current]].from_ if current in by_id else None
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
                parent = steps[i].from_
                if parent is None or parent in placed:
                    order.append(i)
                    placed.add(steps[i].id)
                    remaining.remove(i)
                    progress = True
        return order

    # -- one step -------------------------------------------------------------------------

    def _compile(self, index: int, step: Step, builder: CellBuilder) -> _Step | None:
        at: Path_ = ("steps", index)
        model = self.loaded.model
        before = len(self.diagnostics)
        slots = itertools.count()

        def compile_one(source: str, where: Path_) -> _Template | None:
            try:
                compiled = templates.compile_template(source)
                names = templates.names_used(source)
            except TemplateProblem as exc:
                self.report(where, str(exc))
                return None
            if step.from_ is None and "parent" in names:
                self.report(where, "`parent` exists only in chained steps (with `from`)")
                return None
            return _Template(
                compiled, where, bool(names & PER_TASK_NAMES), "parent" in names, next(slots)
            )

        prompt = compile_one(step.prompt, (*at, "prompt"))
        images: list[_Template] | None = None
        if step.images is not None:
            images = []
            for j, source in enumerate(step.images):
                compiled = compile_one(source, (*at, "images", j))
                if compiled is not None:
                    images.append(compiled)
        elif step.from_ is None:
            images = []
        output = None if step.output is None else compile_one(step.output, (*at, "output"))
        merged: dict[str, Any] = {}
        origin: dict[str, Path_] = {}
        layers = ((model.defaults.input, ("defaults", "input")), (step.input, (*at, "input")))
        for fields, where in layers:
            for key, value in _set_fields(fields).items():
                merged[key] = value
                origin[key] = (*where, key)
        for key, what in (("prompt", "the step's `prompt`"), ("image_urls", "the step's `images`")):
            if key in merged:
                self.report(origin[key], f"set {what} instead", key=True)
        merged = {k: v for k, v in merged.items() if v is not None}
        static_input: dict[str, Any] = {}
        templated: list[tuple[str, Any, list[_Template]]] = []
        for key, value in merged.items():
            sources = list(_template_strings(value))
            if not sources:
                static_input[key] = value
                continue
            compiled_list = [compile_one(s, origin[key]) for s in sources]
            templated.append((key, value, [c for c in compiled_list if c is not None]))
        cells = builder.cells((*at, "matrix"), step.matrix)
        if cells is None or prompt is None or len(self.diagnostics) != before:
            return None
        output_format = str(merged.get("output_format", DEFAULT_OUTPUT_FORMAT))
        return _Step(
            index=index,
            id=step.id,
            parent=step.from_,
            at=at,
            cells=cells,
            repeat=step.repeat,
            prompt=prompt,
            images=images,
            output=output,
            provider=model.defaults.provider,
            static_input=static_input,
            templated_input=templated,
            output_format=output_format,
            step_obj={"id": step.id},
            cache={},
        )

    # -- tasks ----------------------------------------------------------------------------

    def _parent_object(self, spec: TaskSpec, output_index: int) -> dict[str, Any]:
        """What a chained task sees as ``parent``: the parent's context and its output."""
        record = self.records[spec.key]
        step = self.steps_by_index[record.step]
        obj: dict[str, Any] = {"vars": self.vars, "step": step.step_obj}
        obj.update(step.cells[record.cell].values)
        obj["repeat_index"] = spec.repeat_index
        if spec.parent_key is not None:
            grandparent = self.records[spec.parent_key].spec
            obj["parent"] = self._parent_object(grandparent, spec.parent_output_index or 0)
        obj["image_url"] = PARENT_IMAGE_URL
        obj["output"] = (
            spec.output_paths(1)[0]
            if output_index == 0
            else f"{spec.output}-{output_index + 1}.{spec.extension}"
        )
        obj["id"] = spec.readable_id
        obj["output_index"] = output_index
        return obj

    @functools.cached_property
    def steps_by_index(self) -> dict[int, _Step]:
        return {step.index: step for step in self.steps}

    def tasks_of(self, step: _Step, parent: TaskSpec | None, output_index: int) -> list[TaskSpec]:
        """The tasks of ``step`` for one parent output (or the root tasks when no parent)."""
        base = templates.context({"vars": self.vars, "step": step.step_obj})
        if parent is not None:
            base["parent"] = self._parent_object(parent, output_index)
            prefix = parent.readable_id + (f"~{output_index}" if output_index else "") + "/"
        else:
            prefix = ""
        # The default output is the slug of the readable id (without the step for root tasks);
        # slugs of parts joined by "-" equal the slug of the whole, and are cheaper.
        prefix_slug = templates.slug(prefix)
        result: list[TaskSpec] = []
        for cell_index, cell in enumerate(step.cells):
            cell_context = dict(base)
            cell_context.update(cell.values)
            own = cell.label if parent is None else step.id + cell.label
            slug_start = "-".join(part for part in (prefix_slug, templates.slug(own)) if part)
            slug_start = f"{step.id}/{slug_start}-" if slug_start else f"{step.id}/"
            for repeat_index in range(1, step.repeat + 1):
                context = dict(cell_context)
                context["repeat_index"] = repeat_index
                readable_id = f"{prefix}{step.id}{cell.label}#{repeat_index}"
                try:
                    spec = self._task(
                        step,
                        cell_index,
                        context,
                        readable_id,
                        parent,
                        output_index,
                        repeat_index,
                        f"{slug_start}{repeat_index}",
                    )
                except _Failed:
                    continue
                result.append(spec)
        return result

    def _render(
        self, template: _Template, step: _Step, cell: int, context: dict[str, Any], task: str
    ) -> str:
        if template.at in self.failed_templates:
            raise _Failed
        if not template.per_task:
            cached = step.cache.get((template.slot, cell))
            if cached is not None:
                return cached
        try:
            text = templates.render(template.compiled, context).strip()
        except TemplateProblem as exc:
            self.failed_templates.add(template.at)
            self.report(template.at, f"{exc} (in task {task})")
            raise _Failed from None
        if not template.per_task:
            step.cache[(template.slot, cell)] = text
        return text

    def _fail(self, at: Path_, message: str) -> _Failed:
        self.failed_templates.add(at)  # one report per template; its other tasks are skipped
        self.report(at, message)
        return _Failed()

    def _task(
        self,
        step: _Step,
        cell: int,
        context: dict[str, Any],
        readable_id: str,
        parent: TaskSpec | None,
        output_index: int,
        repeat_index: int,
        default_output: str,
    ) -> TaskSpec:
        prompt = self._render(step.prompt, step, cell, context, readable_id)
        if not prompt:
            raise self._fail(step.prompt.at, f"the prompt renders empty (task {readable_id})")
        input_ = dict(step.static_input)
        for key, value, compiled in step.templated_input:
            for template in compiled:
                if template.at in self.failed_templates:
                    raise _Failed
            try:
                input_[key] = _render_value(value, context)
            except TemplateProblem as exc:
                at = compiled[0].at if compiled else step.at
                self.failed_templates.add(at)
                raise self._fail(at, f"{exc} (in task {readable_id})") from None
        input_["prompt"] = prompt
        if step.images is None:
            image_urls = [PARENT_IMAGE_URL]
        else:
            image_urls = []
            for template in step.images:
                url = self._render(template, step, cell, context, readable_id)
                if not _is_image_reference(url):
                    raise self._fail(
                        template.at,
                        f"renders {url[:80]!r} (task {readable_id}): expected an http(s) URL, "
                        "an image set's `.url` or `{{ parent.image_url }}`",
                    )
                image_urls.append(url)
        if image_urls:
            input_["image_urls"] = image_urls
        request_json = _canonical({"provider": step.provider, "input": input_})
        parent_key = parent.key if parent is not None else None
        key = _key(request_json, parent_key, output_index, repeat_index)
        if step.output is None:
            output = default_output
        else:
            output = self._render(step.output, step, cell, context, readable_id)
            problem = output_problem(output)
            if problem:
                raise self._fail(step.output.at, f"{problem} (task {readable_id})")
        if self.checks:
            self._check_unique(step, readable_id, key, output)
        elif output_index and step.output is not None and not step.output.uses_parent:
            # planned on demand for another parent output: keep clear of output 0's path
            output = f"{output}~{output_index}"
        spec = TaskSpec(
            key=key,
            readable_id=readable_id,
            step=step.id,
            parent_key=parent_key,
            parent_output_index=output_index if parent is not None else None,
            repeat_index=repeat_index,
            request_json=request_json,
            output=output,
            output_format=step.output_format,
            cell=step.cells[cell].pairs,
        )
        self.records[key] = _Record(spec, step.index, cell)
        return spec

    def _collision(self, step: _Step, kind: str, at: Path_, message: str) -> _Failed:
        if (step.id, kind) not in self._collisions:
            self._collisions.add((step.id, kind))
            self.report(at, message)
        return _Failed()

    def _check_unique(self, step: _Step, readable_id: str, key: str, output: str) -> None:
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
        folded = output.casefold()
        first = self.outputs.get(folded)
        if first is not None:
            at = step.output.at if step.output is not None else step.at
            raise self._collision(
                step,
                "output",
                at,
                f"output path {output!r} of task {readable_id!r} collides with task {first!r}",
            )
        self.outputs[folded] = readable_id


# tasks.canonical_json without building an encoder per call (same settings, same text)
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _key(request_json: str, parent_key: str | None, output_index: int, repeat_index: int) -> str:
    """``tasks.task_key`` from the request's canonical JSON, without encoding it again.

    canonical_json({"parent": ..., "repeat": ..., "request": ...}) is exactly this text (keys
    sorted, no spaces); ``check_keys`` verifies it against ``task_key`` on every plan.
    """
    lineage = "null" if parent_key is None else f'["{parent_key}",{output_index}]'
    material = f'{{"parent":{lineage},"repeat":{repeat_index},"request":{request_json}}}'
    return hashlib.sha256(material.encode()).hexdigest()


def check_keys(tasks: Iterable[TaskSpec]) -> None:
    """Recompute keys with ``tasks.task_key``; a mismatch means the seam changed under us."""
    for task in tasks:
        request = json.loads(task.request_json)
        expected = task_key(
            request,
            parent_key=task.parent_key,
            parent_output_index=task.parent_output_index,
            repeat_index=task.repeat_index,
        )
        if expected != task.key or canonical_json(request) != task.request_json:
            raise RuntimeError(f"task key of {task.readable_id} disagrees with tasks.task_key")


def _set_fields(fields: InputFields) -> dict[str, Any]:
    return fields.model_dump(exclude_unset=True)


def _template_strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        if templates.is_template(value):
            yield value
    elif isinstance(value, list):
        for item in value:
            yield from _template_strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _template_strings(item)


def _render_value(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        if not templates.is_template(value):
            return value
        return templates.render(templates.compile_template(value), context)
    if isinstance(value, list):
        return [_render_value(item, context) for item in value]
    if isinstance(value, dict):
        return {k: _render_value(v, context) for k, v in value.items()}
    return value


def _is_image_reference(url: str) -> bool:
    return (
        url.startswith((LOCAL_IMAGE_PREFIX, "data:image/"))
        or url == PARENT_IMAGE_URL
        or is_http_url(url)
    )


def output_problem(path: str) -> str | None:
    """Why ``path`` is not a valid output path, or None."""
    if not path:
        return "the output path renders empty"
    if _UNSAFE_OUTPUT.search(path):
        return f"output path {path!r} contains a backslash or control character; use '/'"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return f"output path {path!r} is absolute; it must be relative to the output directory"
    parts = path.split("/")
    if ".." in parts:
        return f"output path {path!r} escapes the output directory"
    if any(part in ("", ".") for part in parts):
        return f"output path {path!r} has an empty or '.' segment"
    suffix = path.rsplit(".", 1)[-1].lower() if "." in parts[-1] else ""
    if suffix in IMAGE_EXTENSIONS:
        return f"output path {path!r} has an extension; leave it out, it comes from output_format"
    return None
