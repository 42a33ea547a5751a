"""``plan``'s output: the table and the JSON document, streamed in chunks (docs/cli.md)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, Protocol

from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.resume import Decision, Reason
from flux_pipeline.plan.tasks import TaskSpec

CHUNK = 2000  # tasks per write when streaming the plan


def reason_counts(by_reason: Mapping[Reason, int]) -> dict[str, int]:
    """Tasks by reason, in the order of ``Reason``, the reasons no task has left out."""
    return {reason.value: by_reason[reason] for reason in Reason if by_reason.get(reason)}


def _counts(plan: Plan, decisions: Sequence[Decision]) -> tuple[dict[str, int], dict[str, int]]:
    reasons = reason_counts(Counter(d.reason for d in decisions))
    by_step = Counter(task.step for task in plan.tasks)
    steps = {step: by_step[step] for step in plan.step_ids}
    return reasons, steps


def _output(task: TaskSpec) -> str:
    return f"{task.output}.{task.extension}"


def write_json(
    plan: Plan,
    decisions: Sequence[Decision],
    stream: IO[str],
    lock: dict[str, object] | None = None,
    cost: dict[str, object] | None = None,
    review: dict[str, object] | None = None,
) -> None:
    """The plan as one JSON document, written in chunks (100,000 tasks stay cheap); ``lock``:
    the review against the lock file (``plan_review.Review.to_json``)."""
    reasons, steps = _counts(plan, decisions)
    head = json_head(plan, reasons, steps, lock=lock, cost=cost, review=review)
    write_document(head, plan.step_ids, zip(plan.tasks, decisions, strict=True), stream)


class Described(Protocol):
    """What the head of the document names: a ``Plan`` or a ``PlanStream``."""

    @property
    def name(self) -> str: ...
    @property
    def manifest_path(self) -> Path: ...
    @property
    def manifest_sha256(self) -> str: ...


def json_head(
    plan: Described,
    reasons: dict[str, int],
    steps: dict[str, int],
    *,
    lock: dict[str, object] | None = None,
    cost: dict[str, object] | None = None,
    review: dict[str, object] | None = None,
) -> dict[str, object]:
    """The document without its tasks: counts by reason (``reason_counts``) and by step."""
    head: dict[str, object] = {
        "manifest": plan.name,
        "manifest_path": str(plan.manifest_path),
        "manifest_sha256": plan.manifest_sha256,
        "counts": reasons,
        "steps": steps,
    }
    if lock is not None:
        head["lock"] = lock
    if cost is not None:
        head["cost"] = cost
    if review is not None:  # the review decisions' counts (report/review_summary.py)
        head["review"] = review
    return head


def document_start(head: dict[str, object]) -> str:
    """The document up to its first task: ``head`` and the opening of its ``tasks`` list."""
    text = json.dumps(head, ensure_ascii=False, indent=None)
    return text[:-1] + ', "tasks": ['


DOCUMENT_END = "\n]}\n"
_dumps = encode_basestring  # json.dumps(str, ensure_ascii=False), in C


def task_json(task: TaskSpec, decision: Decision, step_json: Mapping[str, str]) -> str:
    """One task of the list, on one line; ``step_json``: each step id as a JSON string."""
    return (
        '{"readable_id": '
        + _dumps(task.readable_id)
        + ', "key": "'
        + task.key
        + '", "step": '
        + step_json[task.step]
        + ', "parent": '
        + (f'"{task.parent_key}"' if task.parent_key else "null")
        + ', "parent_output_index": '
        + ("null" if task.parent_output_index is None else str(task.parent_output_index))
        + ', "repeat_index": '
        + str(task.repeat_index)
        + ', "reason": "'
        + decision.reason.value
        + '", "action": "'
        + decision.action.value
        + '", "output": '
        + _dumps(_output(task))
        + ', "request": '
        + task.request_json  # canonical JSON already
        + "}"
    )


def steps_json(step_ids: Iterable[str]) -> dict[str, str]:
    return {step: _dumps(step) for step in step_ids}


def write_document(
    head: dict[str, object],
    step_ids: Sequence[str],
    tasks: Iterable[tuple[TaskSpec, Decision]],
    stream: IO[str],
) -> None:
    """``head`` with its ``tasks`` list, one line per task, written in chunks as they come."""
    stream.write(document_start(head))
    step_json = steps_json(step_ids)
    chunk: list[str] = []
    for i, (task, decision) in enumerate(tasks):
        chunk.append(("\n" if i == 0 else ",\n") + task_json(task, decision, step_json))
        if len(chunk) >= CHUNK:
            stream.write("".join(chunk))
            chunk.clear()
    stream.write("".join(chunk))
    stream.write(DOCUMENT_END)


def write_table(plan: Plan, decisions: Sequence[Decision], stream: IO[str]) -> None:
    """Per-step counts, counts by reason, then one line per task."""
    reasons, steps = _counts(plan, decisions)
    total = len(plan.tasks)
    lines = [
        f"{plan.name}: {total} task{'s' * (total != 1)} in {len(steps)} "
        f"step{'s' * (len(steps) != 1)} (manifest sha256 {plan.manifest_sha256[:12]})",
        "",
    ]
    width = max([len("STEP"), *(len(s) for s in steps)])
    lines.append(f"{'STEP':<{width}}  TASKS")
    lines += [f"{step:<{width}}  {count:>5}" for step, count in steps.items()]
    lines.append("")
    rwidth = max([len("REASON"), *(len(r) for r in reasons)])
    lines.append(f"{'REASON':<{rwidth}}  TASKS")
    lines += [f"{reason:<{rwidth}}  {count:>5}" for reason, count in reasons.items()]
    lines.append("")
    stream.write("\n".join(lines) + "\n")
    rwidth = max(rwidth, *(len(r.value) for r in Reason))
    iwidth = min(max([len("TASK"), *(len(t.readable_id) for t in plan.tasks[:1000])]), 80)
    stream.write(f"{'REASON':<{rwidth}}  {'TASK':<{iwidth}}  OUTPUT\n")
    chunk: list[str] = []
    for task, decision in zip(plan.tasks, decisions, strict=True):
        chunk.append(
            f"{decision.reason.value:<{rwidth}}  {task.readable_id:<{iwidth}}  {_output(task)}\n"
        )
        if len(chunk) >= CHUNK:
            stream.write("".join(chunk))
            chunk.clear()
    stream.write("".join(chunk))
