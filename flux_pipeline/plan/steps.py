"""A manifest step compiled for expansion: its templates, matrix cells and fixed input.

Templates are compiled once per step. A template that reads neither ``repeat_index`` nor
``parent`` gives the same text for every task of a matrix cell, so it is rendered once per
cell (``CompiledStep.cache``); text without Jinja syntax is never rendered at all.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flux_pipeline.manifest.apivalues import WARNING_HINT, input_warnings
from flux_pipeline.manifest.models import InputFields, Manifest, Step
from flux_pipeline.manifest.yamlload import Path_
from flux_pipeline.plan import templates
from flux_pipeline.plan.axes import Cell, CellBuilder
from flux_pipeline.plan.problems import Problems
from flux_pipeline.plan.templates import TemplateProblem

DEFAULT_OUTPUT_FORMAT = "jpeg"  # the API's default
PER_TASK_NAMES = frozenset({"repeat_index", "parent"})


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """One template of a step: compiled, where it is, whether it varies per task."""

    compiled: templates.Compiled
    at: Path_
    per_task: bool  # reads repeat_index or parent: cannot be shared by a cell's tasks
    uses_parent: bool
    slot: int  # index into the step's per-cell cache


@dataclass(slots=True)
class CompiledStep:
    index: int  # position in the manifest
    id: str
    parent: str | None  # the step it edits the outputs of (``from``)
    at: Path_
    cells: list[Cell]
    repeat: int
    prompt: CompiledTemplate
    images: list[CompiledTemplate] | None  # None: chained default, [PARENT_IMAGE_URL]
    output: CompiledTemplate | None  # None: the default output
    provider: str
    static_input: dict[str, Any]
    templated_input: list[tuple[str, Any, list[CompiledTemplate]]]
    output_format: str
    step_obj: dict[str, Any]  # what templates see as ``step``
    cache: dict[tuple[int, int], str]  # (template slot, cell index) -> rendered
    only: str | None = None  # ``from.only``: the review decisions that admit a parent


def compile_step(
    index: int, step: Step, model: Manifest, builder: CellBuilder, problems: Problems
) -> CompiledStep | None:
    """Step ``index`` of ``model`` compiled, or None when it has problems (reported)."""
    at: Path_ = ("steps", index)
    before = problems.count
    slots = itertools.count()

    def compile_one(source: str, where: Path_) -> CompiledTemplate | None:
        try:
            compiled = templates.compile_template(source)
            names = templates.names_used(source)
        except TemplateProblem as exc:
            problems.report(where, str(exc))
            return None
        if step.parent is None and "parent" in names:
            problems.report(where, "`parent` exists only in chained steps (with `from`)")
            return None
        return CompiledTemplate(
            compiled, where, bool(names & PER_TASK_NAMES), "parent" in names, next(slots)
        )

    prompt = compile_one(step.prompt, (*at, "prompt"))
    images: list[CompiledTemplate] | None = None
    if step.images is not None:
        images = []
        for j, source in enumerate(step.images):
            compiled = compile_one(source, (*at, "images", j))
            if compiled is not None:
                images.append(compiled)
    elif step.parent is None:
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
            problems.report(origin[key], f"set {what} instead", key=True)
    merged = {k: v for k, v in merged.items() if v is not None}
    static_input: dict[str, Any] = {}
    templated: list[tuple[str, Any, list[CompiledTemplate]]] = []
    for key, value in merged.items():
        sources = list(_template_strings(value))
        if not sources:
            static_input[key] = value
            continue
        compiled_list = [compile_one(s, origin[key]) for s in sources]
        templated.append((key, value, [c for c in compiled_list if c is not None]))
    for key, problem in input_warnings(static_input):  # templated ones: per task (render.py)
        problems.warn(origin[key], f"{problem}; {WARNING_HINT}")
    cells = builder.cells((*at, "matrix"), step.matrix)
    if cells is None or prompt is None or problems.count != before:
        return None
    output_format = str(merged.get("output_format", DEFAULT_OUTPUT_FORMAT))
    return CompiledStep(
        index=index,
        id=step.id,
        parent=step.parent,
        only=step.only,
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
