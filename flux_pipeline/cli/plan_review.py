"""``plan`` against the lock file (docs/lockfile.md): what will be created, what is unchanged
and what the lock has that the manifest no longer makes, for a reviewer.

Each planned task is matched with the lock: its key is there (unchanged, "locked"), or it is
new; a new task whose readable id the lock has under another key is a change, and the parts
of the key that differ are named as ``flux-pipeline diff`` names them (report/diff.py). A lock
entry whose key the plan does not make is orphaned (kept: it was paid for).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.resume import Action, Decision, Reason
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.report.diff import PartChange, key_parts
from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.report.lockfile import LOCK_STATE, Lock, LockEntry, lock_request


@dataclass(frozen=True, slots=True)
class NewTask:
    readable_id: str
    key: str
    reason: str  # the resume decision's reason ("new", "waiting for parent")
    was: str | None  # the lock's key of the same readable id (None: not in the lock)
    parts: tuple[PartChange, ...]


@dataclass(frozen=True, slots=True)
class LockedTask:
    readable_id: str
    key: str
    reason: str  # "done", "expired", ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Review:
    lock: Path
    new: tuple[NewTask, ...]
    unchanged: tuple[LockedTask, ...]
    orphaned: tuple[LockEntry, ...]
    superseded: tuple[LockEntry, ...]  # older generations of regenerated tasks (kept)
    to_create: int  # tasks the plan says a run creates (new, retried, regenerated)
    expired_held: int  # expired tasks a run leaves (re-created with --regenerate-expired)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.lock),
            "counts": {
                "new": len(self.new),
                "unchanged": len(self.unchanged),
                "orphaned": len(self.orphaned),
                "superseded": len(self.superseded),
                "to_create": self.to_create,
                "expired_held": self.expired_held,
            },
            "new": [
                {
                    "readable_id": t.readable_id,
                    "key": t.key,
                    "reason": t.reason,
                    "key_before": t.was,
                    "parts": [
                        {"part": p.part, "before": p.before, "after": p.after} for p in t.parts
                    ],
                }
                for t in self.new
            ],
            "unchanged": [
                {"readable_id": t.readable_id, "key": t.key, "reason": t.reason}
                for t in self.unchanged
            ],
            "orphaned": [
                {
                    "readable_id": e.readable_id,
                    "key": e.key,
                    "state": LOCK_STATE[e.state],
                    "taskId": e.task_id,
                }
                for e in self.orphaned
            ],
            "superseded": [
                {"readable_id": e.readable_id, "key": e.key, "generation": e.generation}
                for e in self.superseded
            ],
        }


def _lock_task(entry: LockEntry) -> TaskEntry:
    return TaskEntry(
        readable_id=entry.readable_id,
        key=entry.key,
        step=entry.step,
        parent=entry.parent,
        parent_output_index=entry.parent_output_index,
        request=entry.request,
    )


def _plan_task(plan: Plan, spec: TaskSpec, parent: TaskSpec | None) -> TaskEntry:
    return TaskEntry(
        readable_id=spec.readable_id,
        key=spec.key,
        step=spec.step,
        parent=parent.readable_id if parent is not None else None,
        parent_output_index=spec.parent_output_index,
        request=lock_request(plan, spec.request_json),
    )


def _parts(
    plan: Plan, spec: TaskSpec, old: LockEntry, lock: Lock, specs: dict[str, TaskSpec]
) -> tuple[PartChange, ...]:
    parent = specs.get(spec.parent_key) if spec.parent_key else None
    after = _plan_task(plan, spec, parent)
    tasks_b = {after.readable_id: after}
    if parent is not None:
        tasks_b[parent.readable_id] = _plan_task(plan, parent, None)
    before = _lock_task(old)
    tasks_a = {before.readable_id: before}
    old_parent = lock.entries.get(old.parent_key) if old.parent_key else None
    if old_parent is not None:
        tasks_a[old_parent.readable_id] = _lock_task(old_parent)
    return tuple(key_parts(before, after, tasks_a, tasks_b))


def review(
    plan: Plan, decisions: Sequence[Decision], lock: Lock, *, whole: Plan | None = None
) -> Review:
    """``plan``'s tasks (with their resume ``decisions``) against ``lock``; orphaned are the
    lock's keys ``whole`` (the manifest's plan, of which ``plan`` may be a shard) does not make."""
    by_id = lock.by_id()
    specs = {task.key: task for task in plan.tasks}
    made = specs if whole is None else {task.key: task for task in whole.tasks}
    new: list[NewTask] = []
    unchanged: list[LockedTask] = []
    to_create = expired_held = 0
    for task, decision in zip(plan.tasks, decisions, strict=True):
        if decision.action in (Action.SUBMIT, Action.WAIT):
            to_create += 1
        if decision.reason is Reason.EXPIRED and decision.action is Action.HOLD:
            expired_held += 1
        if task.key in lock.entries:
            unchanged.append(LockedTask(task.readable_id, task.key, decision.reason.value))
            continue
        old = by_id.get(task.readable_id)
        parts = _parts(plan, task, old, lock, specs) if old is not None else ()
        if old is not None and task.generation != old.generation:  # the key's only change
            kept = tuple(p for p in parts if p.part != "other")
            parts = (*kept, PartChange("generation", old.generation, task.generation))
        was = old.key if old is not None else None
        new.append(NewTask(task.readable_id, task.key, decision.reason.value, was, parts))
    regenerated = {t.base_key for t in made.values() if t.generation}
    orphans: list[LockEntry] = []
    superseded: list[LockEntry] = []
    older: set[str] = set()  # keys of older generations, and of their chained tasks
    for k, e in sorted(lock.entries.items(), key=lambda item: item[1].readable_id):
        if k in made or (e.parent_key in made and e.parent_output_index):
            continue  # a parent's chained tasks of its other outputs are made at run time
        if (e.base_key or e.key) in regenerated or (e.parent_key or "") in older:
            older.add(k)
            superseded.append(e)
        else:
            orphans.append(e)
    return Review(
        lock=lock.path,
        new=tuple(sorted(new, key=lambda t: t.readable_id)),
        unchanged=tuple(sorted(unchanged, key=lambda t: t.readable_id)),
        orphaned=tuple(sorted(orphans, key=lambda e: e.readable_id)),
        superseded=tuple(sorted(superseded, key=lambda e: (e.readable_id, e.generation))),
        to_create=to_create,
        expired_held=expired_held,
    )


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _change(task: NewTask, sep: str = "; ") -> str:
    if task.was is None:
        return "not in the lock"
    return sep.join(f"{p.part}: {_short(p.before)} -> {_short(p.after)}" for p in task.parts)


def summary_line(r: Review) -> str:
    older = f", {len(r.superseded)} older generation(s) kept" if r.superseded else ""
    return (
        f"{len(r.new)} new, {len(r.unchanged)} unchanged, {len(r.orphaned)} orphaned "
        f"(in the lock, no longer in the manifest){older}; {r.to_create} to create"
    )


def expired_hint(r: Review) -> str | None:
    if not r.expired_held:
        return None
    return (
        f"{r.expired_held} expired task(s): their result URLs are past their lifetime and "
        "their files are not here; --regenerate-expired creates them again (pays again)"
    )


def render_text(r: Review) -> str:
    lines = ["", f"LOCK {r.lock}: {summary_line(r)}"]
    width = max([9, *(len(t.reason) + 9 for t in r.unchanged)])
    lines += [f"{'new':<{width}}  {t.readable_id}  ({_change(t)})" for t in r.new]
    lines += [f"{t.reason + ' (locked)':<{width}}  {t.readable_id}" for t in r.unchanged]
    lines += [
        f"{'orphaned':<{width}}  {e.readable_id}  ({LOCK_STATE[e.state]}, taskId {e.task_id})"
        for e in r.orphaned
    ]
    lines += [
        f"{'superseded':<{width}}  {e.readable_id}  (generation {e.generation}, kept)"
        for e in r.superseded
    ]
    if hint := expired_hint(r):
        lines.append(hint)
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def render_markdown(plan: Plan, r: Review, *, cost: str | None = None, limit: int = 500) -> str:
    """For a pull request comment or a step summary; long tables are cut at ``limit`` rows.
    ``cost``: what a run would create (``plan/cost.py`` ``describe``), shown under the counts."""
    lines = [f"### flux-pipeline plan: {_md(plan.name)}", "", summary_line(r), ""]
    if cost is not None:
        lines += [f"**Would create {_md(cost)}**", ""]

    def table(title: str, head: str, rows: list[str]) -> None:
        columns = head.count("|") - 1
        lines.extend([f"#### {title}", "", head, "|" + "---|" * columns])
        lines.extend(rows[:limit])
        if len(rows) > limit:
            lines.append(f"| … {len(rows) - limit} more |" + " |" * (columns - 1))
        lines.append("")

    if r.new:
        rows = [
            f"| `{_md(t.readable_id)}` | {_md(t.reason)} | {_md(_change(t, '<br>'))} |"
            for t in r.new
        ]
        table("New: will be created", "| task | reason | key parts changed |", rows)
    if r.unchanged:
        rows = [f"| `{_md(t.readable_id)}` | {_md(t.reason)} (locked) |" for t in r.unchanged]
        table("Unchanged", "| task | state |", rows)
    if r.orphaned:
        rows = [
            f"| `{_md(e.readable_id)}` | {LOCK_STATE[e.state]} | `{_md(str(e.task_id))}` |"
            for e in r.orphaned
        ]
        title = "Orphaned: in the lock, no longer in the manifest (kept)"
        table(title, "| task | state | taskId |", rows)
    if r.superseded:
        rows = [f"| `{_md(e.readable_id)}` | {e.generation} |" for e in r.superseded]
        table("Older generations of regenerated tasks (kept)", "| task | generation |", rows)
    if hint := expired_hint(r):
        lines += [hint, ""]
    return "\n".join(lines).rstrip("\n") + "\n"
