"""One task from a compiled step, a matrix cell, a repeat and (chained) a parent output.

``TaskRenderer.tasks_of(step, parent, output_index)`` renders the prompt, images, input and
output path of every task of ``step`` for one parent output (or the root tasks), computes their
keys (``tasks.key_of_request_json``, docs/keys.md) and records each task so that its own
children can see it as ``parent``. What a planning pass adds to a rendered task (uniqueness
checks up front, the output rule of tasks planned on demand) is its ``admit`` callback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from flux_pipeline.layout import STATE_DIR
from flux_pipeline.manifest.apivalues import WARNING_HINT, input_warnings
from flux_pipeline.plan import templates
from flux_pipeline.plan.imagesets import is_http_url
from flux_pipeline.plan.problems import Failed, Problems
from flux_pipeline.plan.steps import CompiledStep, CompiledTemplate
from flux_pipeline.plan.tasks import (
    IMAGE_EXTENSIONS,
    LOCAL_IMAGE_PREFIX,
    PARENT_IMAGE_URL,
    TaskSpec,
    canonical_json,
    key_of_request_json,
)
from flux_pipeline.plan.templates import TemplateProblem

_UNSAFE_OUTPUT = re.compile(r"[\x00-\x1f\\]")
MAX_PROMPT_CHARS = 10_000  # the API documents no limit; no real prompt comes near this
NAME_MAX = 255  # bytes in one file or directory name (Linux, macOS)
# The last part of an output path gets an extension, a "-N" or "~N" suffix and, while it is
# written, a temporary name (".NAME.XXXXXXXX.part"): it must leave room for all of them.
MAX_OUTPUT_NAME_BYTES = 200
MAX_OUTPUT_PATH_BYTES = 1024

Admit = Callable[[CompiledStep, TaskSpec], TaskSpec]
"""Takes a rendered task (or raises ``Failed``, reported); returns the task to keep."""


@dataclass(frozen=True, slots=True)
class Planned:
    """A planned task and where it came from: its step (index) and matrix cell (index)."""

    spec: TaskSpec
    step: int
    cell: int


class TaskRenderer:
    """Renders the tasks of compiled steps; ``records`` collects every task rendered."""

    def __init__(
        self,
        *,
        variables: dict[str, Any],
        steps: Iterable[CompiledStep],
        records: dict[str, Planned],
        problems: Problems,
        admit: Admit,
    ) -> None:
        self.vars = variables
        self.steps_by_index = {step.index: step for step in steps}
        self.records = records
        self.problems = problems
        self.admit = admit

    def tasks_of(
        self, step: CompiledStep, parent: TaskSpec | None, output_index: int
    ) -> list[TaskSpec]:
        """The tasks of ``step`` for one parent output (or the root tasks when no parent)."""
        return list(self.each_task(step, parent, output_index))

    def each_task(
        self, step: CompiledStep, parent: TaskSpec | None, output_index: int
    ) -> Iterator[TaskSpec]:
        """``tasks_of``, one task at a time: each is recorded before it is yielded (a stream,
        plan/stream.py, forgets it once its own chained tasks are done)."""
        base = templates.context({"vars": self.vars, "step": step.step_obj})
        if parent is not None:
            base["parent"] = self._parent_object(parent, output_index)
            prefix = parent.readable_id + (f"~{output_index}" if output_index else "") + "/"
        else:
            prefix = ""
        # The default output is the slug of the readable id (without the step for root tasks);
        # slugs of parts joined by "-" equal the slug of the whole, and are cheaper.
        prefix_slug = templates.slug_part(prefix)
        for cell_index, cell in enumerate(step.cells):
            cell_context = dict(base)
            cell_context.update(cell.values)
            own = cell.label if parent is None else step.id + cell.label
            slug_start = "-".join(part for part in (prefix_slug, templates.slug_part(own)) if part)
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
                except Failed:
                    continue
                yield spec

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

    def _render(
        self,
        template: CompiledTemplate,
        step: CompiledStep,
        cell: int,
        context: dict[str, Any],
        task: str,
    ) -> str:
        if template.at in self.problems.failed:
            raise Failed
        if not template.per_task:
            cached = step.cache.get((template.slot, cell))
            if cached is not None:
                return cached
        try:
            text = templates.render(template.compiled, context).strip()
        except TemplateProblem as exc:
            raise self.problems.fail(template.at, f"{exc} (in task {task})") from None
        if not template.per_task:
            step.cache[(template.slot, cell)] = text
        return text

    def _task(
        self,
        step: CompiledStep,
        cell: int,
        context: dict[str, Any],
        readable_id: str,
        parent: TaskSpec | None,
        output_index: int,
        repeat_index: int,
        default_output: str,
    ) -> TaskSpec:
        problems = self.problems
        prompt = self._render(step.prompt, step, cell, context, readable_id)
        if not prompt:
            raise problems.fail(step.prompt.at, f"the prompt renders empty (task {readable_id})")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise problems.fail(
                step.prompt.at,
                f"the prompt has {len(prompt)} characters (task {readable_id}); "
                f"at most {MAX_PROMPT_CHARS}",
            )
        input_ = dict(step.static_input)
        for key, value, compiled in step.templated_input:
            for template in compiled:
                if template.at in problems.failed:
                    raise Failed
            at = compiled[0].at if compiled else step.at
            try:
                input_[key] = _render_value(value, context)
            except TemplateProblem as exc:
                raise problems.fail(at, f"{exc} (in task {readable_id})") from None
            for _, outside in input_warnings({key: input_[key]}):
                warning = f"renders {outside} (first in task {readable_id}); {WARNING_HINT}"
                problems.warn(at, warning, once=outside)
        input_["prompt"] = prompt
        if step.images is None:
            image_urls = [PARENT_IMAGE_URL]
        else:
            image_urls = []
            for template in step.images:
                url = self._render(template, step, cell, context, readable_id)
                if not _is_image_reference(url):
                    raise problems.fail(
                        template.at,
                        f"renders {url[:80]!r} (task {readable_id}): expected an http(s) URL, "
                        "an image set's `.url` or `{{ parent.image_url }}`",
                    )
                image_urls.append(url)
        if image_urls:
            input_["image_urls"] = image_urls
        request_json = canonical_json({"provider": step.provider, "input": input_})
        parent_key = parent.key if parent is not None else None
        lineage_index = output_index if parent is not None else None
        key = key_of_request_json(
            request_json,
            parent_key=parent_key,
            parent_output_index=lineage_index,
            repeat_index=repeat_index,
        )
        if step.output is None:
            output = default_output  # a slug: only its length can be wrong
            problem = length_problem(output)
        else:
            output = self._render(step.output, step, cell, context, readable_id)
            problem = output_problem(output)
        if problem:
            at = step.output.at if step.output is not None else step.at
            raise problems.fail(at, f"{problem} (task {readable_id})")
        spec = self.admit(
            step,
            TaskSpec(
                key=key,
                readable_id=readable_id,
                step=step.id,
                parent_key=parent_key,
                parent_output_index=lineage_index,
                repeat_index=repeat_index,
                request_json=request_json,
                output=output,
                output_format=step.output_format,
                cell=step.cells[cell].pairs,
            ),
        )
        self.records[spec.key] = Planned(spec, step.index, cell)
        return spec


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


def length_problem(path: str) -> str | None:
    """Why ``path`` is too long for a file system to create, or None."""
    if len(path) * 4 <= MAX_OUTPUT_NAME_BYTES:  # UTF-8: at most 4 bytes a character
        return None
    shown = path if len(path) <= 80 else path[:77] + "..."
    parts = path.split("/")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_OUTPUT_PATH_BYTES:
        return f"output path {shown!r} is longer than {MAX_OUTPUT_PATH_BYTES} bytes"
    for part in parts[:-1]:
        if len(part.encode("utf-8", "surrogatepass")) > NAME_MAX:
            return (
                f"output path {shown!r} has a directory name longer than {NAME_MAX} bytes "
                "(no file system can create it)"
            )
    if len(parts[-1].encode("utf-8", "surrogatepass")) > MAX_OUTPUT_NAME_BYTES:
        return (
            f"output path {shown!r} has a file name longer than {MAX_OUTPUT_NAME_BYTES} bytes "
            f"(with its extension and temporary name it would pass the {NAME_MAX}-byte limit "
            "of file systems)"
        )
    return None


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
    if parts[0].lower() == STATE_DIR:  # the state DB, the lease, thumbnails, the gallery's files
        return f"output path {path!r} is inside the tool's own directory {STATE_DIR}/"
    problem = length_problem(path)
    if problem:
        return problem
    suffix = path.rsplit(".", 1)[-1].lower() if "." in parts[-1] else ""
    if suffix in IMAGE_EXTENSIONS:
        return f"output path {path!r} has an extension; leave it out, it comes from output_format"
    return None
