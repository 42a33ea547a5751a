"""``flux-pipeline diff REPORT_A REPORT_B``: what a manifest change does, for a pull request.

Tasks are matched by readable id. A task in both reports whose key differs is *changed*, and
the diff names the parts of the key that differ (docs/keys.md), read from the reports' rendered
``request`` and ``parent``: ``prompt``, ``images``, ``provider``, ``input.<field>`` for every
other input field, and ``parent`` (the parent task, its key or the output it edits). A parent
image URL is compared as "the parent's output", so two runs of the same chain do not differ by
their result URLs. A key that differs in none of those parts is reported as ``other`` (e.g. the
content of a local file whose path is unchanged is in ``images``; a key scheme change is not).
Outputs are compared by path for the tasks in both reports: a different sha256 is *changed*.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flux_pipeline.plan.tasks import PARENT_IMAGE_URL
from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.report.reportfile import load_report

PARENT_IMAGE = "<parent output>"


@dataclass(frozen=True, slots=True)
class PartChange:
    part: str  # "prompt", "images", "provider", "input.aspect_ratio", "parent", "other"
    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class TaskChange:
    readable_id: str
    key_before: str
    key_after: str
    parts: tuple[PartChange, ...]


@dataclass(frozen=True, slots=True)
class OutputChange:
    readable_id: str
    path: str
    change: str  # "changed" | "added" | "removed"
    sha256_before: str | None
    sha256_after: str | None
    bytes_before: int | None
    bytes_after: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportDiff:
    before: str  # the reports' paths, as given
    after: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[TaskChange, ...] = ()
    outputs: tuple[OutputChange, ...] = ()
    unchanged: int = 0

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.outputs)

    def to_json(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "after": self.after,
            "added": list(self.added),
            "removed": list(self.removed),
            "changed": [
                {
                    "readable_id": c.readable_id,
                    "key_before": c.key_before,
                    "key_after": c.key_after,
                    "parts": [
                        {"part": p.part, "before": p.before, "after": p.after} for p in c.parts
                    ],
                }
                for c in self.changed
            ],
            "outputs": [
                {
                    "readable_id": o.readable_id,
                    "path": o.path,
                    "change": o.change,
                    "sha256_before": o.sha256_before,
                    "sha256_after": o.sha256_after,
                    "bytes_before": o.bytes_before,
                    "bytes_after": o.bytes_after,
                }
                for o in self.outputs
            ],
            "counts": {
                "added": len(self.added),
                "removed": len(self.removed),
                "changed": len(self.changed),
                "unchanged": self.unchanged,
                "outputs_changed": len(self.outputs),
            },
        }


def _parent_urls(task: TaskEntry, tasks: Mapping[str, TaskEntry]) -> set[str]:
    parent = tasks.get(task.parent) if task.parent is not None else None
    return set() if parent is None else {o.url for o in parent.outputs}


def _images(task: TaskEntry, tasks: Mapping[str, TaskEntry]) -> list[object]:
    urls = _input(task).get("image_urls")
    if not isinstance(urls, list):
        return [] if urls is None else [urls]
    parents = _parent_urls(task, tasks)
    parents.add(PARENT_IMAGE_URL)  # a report written before its parent ran
    return [PARENT_IMAGE if isinstance(url, str) and url in parents else url for url in urls]


def _input(task: TaskEntry) -> dict[str, object]:
    request = task.request
    fields = request.get("input") if isinstance(request, dict) else None
    return fields if isinstance(fields, dict) else {}


def _provider(task: TaskEntry) -> object:
    request = task.request
    return request.get("provider") if isinstance(request, dict) else None


Lineage = tuple[str, str | None, int | None]  # parent's readable id, its key, output index


def _lineage(task: TaskEntry, tasks: Mapping[str, TaskEntry]) -> Lineage | None:
    """``task``'s parent (its key None when not in the report); None for a root task."""
    if task.parent is None:
        return None
    parent = tasks.get(task.parent)
    return task.parent, parent.key if parent is not None else None, task.parent_output_index


def _show(lineage: Lineage | None) -> str | None:
    if lineage is None:
        return None
    rid, key, index = lineage
    return f"{rid} (key {str(key)[:12]}, #{index})"


def key_parts(
    a: TaskEntry,
    b: TaskEntry,
    tasks_a: Mapping[str, TaskEntry],
    tasks_b: Mapping[str, TaskEntry],
) -> list[PartChange]:
    """Which parts of the key differ between task ``a`` (before) and ``b`` (after)."""
    parts: list[PartChange] = []
    in_a, in_b = _input(a), _input(b)
    if in_a.get("prompt") != in_b.get("prompt"):
        parts.append(PartChange("prompt", in_a.get("prompt"), in_b.get("prompt")))
    images_a, images_b = _images(a, tasks_a), _images(b, tasks_b)
    if images_a != images_b:
        parts.append(PartChange("images", images_a, images_b))
    if _provider(a) != _provider(b):
        parts.append(PartChange("provider", _provider(a), _provider(b)))
    for name in sorted((set(in_a) | set(in_b)) - {"prompt", "image_urls"}):
        if in_a.get(name) != in_b.get(name):
            parts.append(PartChange(f"input.{name}", in_a.get(name), in_b.get(name)))
    lineage_a, lineage_b = _lineage(a, tasks_a), _lineage(b, tasks_b)
    if lineage_a != lineage_b:
        parts.append(PartChange("parent", _show(lineage_a), _show(lineage_b)))
    if not parts:
        parts.append(PartChange("other", a.key, b.key))
    return parts


def output_changes(rid: str, a: TaskEntry, b: TaskEntry) -> list[OutputChange]:
    outs_a = {o.path: o for o in a.outputs}
    outs_b = {o.path: o for o in b.outputs}
    changes = []
    for path in sorted(set(outs_a) | set(outs_b)):
        old, new = outs_a.get(path), outs_b.get(path)
        if old is not None and new is not None and old.sha256 == new.sha256:
            continue
        kind = "changed" if old is not None and new is not None else "added" if new else "removed"
        changes.append(
            OutputChange(
                readable_id=rid,
                path=path,
                change=kind,
                sha256_before=old.sha256 if old else None,
                sha256_after=new.sha256 if new else None,
                bytes_before=old.bytes if old else None,
                bytes_after=new.bytes if new else None,
            )
        )
    return changes


def diff_tasks(
    tasks_a: Mapping[str, TaskEntry],
    tasks_b: Mapping[str, TaskEntry],
    *,
    before: str = "a",
    after: str = "b",
) -> ReportDiff:
    """Compare two reports' tasks (by readable id)."""
    changed: list[TaskChange] = []
    outputs: list[OutputChange] = []
    unchanged = 0
    for rid in sorted(set(tasks_a) & set(tasks_b)):
        a, b = tasks_a[rid], tasks_b[rid]
        if a.key != b.key:
            parts = tuple(key_parts(a, b, tasks_a, tasks_b))
            changed.append(TaskChange(rid, a.key, b.key, parts))
        else:
            unchanged += 1
        outputs.extend(output_changes(rid, a, b))
    return ReportDiff(
        before=before,
        after=after,
        added=tuple(sorted(set(tasks_b) - set(tasks_a))),
        removed=tuple(sorted(set(tasks_a) - set(tasks_b))),
        changed=tuple(changed),
        outputs=tuple(outputs),
        unchanged=unchanged,
    )


def diff_reports(path_a: Path, path_b: Path) -> ReportDiff:
    """Compare the reports at ``path_a`` and ``path_b``; a bad report is a one-line
    ``UsageError`` (``reportfile.load_report``)."""
    tasks_a, tasks_b = load_report(path_a).by_id(), load_report(path_b).by_id()
    return diff_tasks(tasks_a, tasks_b, before=str(path_a), after=str(path_b))


# --- rendering -----------------------------------------------------------------------------


def _short(value: Any, limit: int = 70) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(value: int | None) -> str:
    return "-" if value is None else f"{value:,} B"


def _summary_line(d: ReportDiff) -> str:
    return (
        f"{len(d.added)} added, {len(d.removed)} removed, {len(d.changed)} changed, "
        f"{d.unchanged} with the same key; {len(d.outputs)} output(s) changed"
    )


def render_text(d: ReportDiff) -> str:
    lines = [f"--- {d.before}", f"+++ {d.after}", _summary_line(d)]
    lines += [f"+ {rid}" for rid in d.added]
    lines += [f"- {rid}" for rid in d.removed]
    for change in d.changed:
        lines.append(f"~ {change.readable_id}: {', '.join(p.part for p in change.parts)}")
        for part in change.parts:
            lines.append(f"    {part.part}: {_short(part.before)} -> {_short(part.after)}")
    for out in d.outputs:
        lines.append(
            f"* {out.path} ({out.readable_id}): {out.change}, "
            f"{_size(out.bytes_before)} -> {_size(out.bytes_after)}"
        )
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def render_markdown(d: ReportDiff, *, limit: int = 200) -> str:
    """For a pull request comment or a step summary; long lists are cut at ``limit`` rows."""
    lines = ["### flux-pipeline diff", "", _summary_line(d), ""]

    def cut(rows: list[str], total: int) -> list[str]:
        return rows[:limit] + ([f"| … {total - limit} more | |"] if total > limit else [])

    if d.added or d.removed:
        lines += ["| task | |", "|---|---|"]
        rows = [f"| `{_md(r)}` | added |" for r in d.added]
        rows += [f"| `{_md(r)}` | removed |" for r in d.removed]
        lines += [*cut(rows, len(rows)), ""]
    if d.changed:
        lines += ["| changed task | key parts |", "|---|---|"]
        rows = [
            f"| `{_md(c.readable_id)}` | "
            + "<br>".join(
                f"**{p.part}**: {_md(_short(p.before, 50))} → {_md(_short(p.after, 50))}"
                for p in c.parts
            )
            + " |"
            for c in d.changed
        ]
        lines += [*cut(rows, len(rows)), ""]
    if d.outputs:
        lines += ["| output | task | change | bytes |", "|---|---|---|---|"]
        rows = [
            f"| `{_md(o.path)}` | `{_md(o.readable_id)}` | {o.change} | "
            f"{_size(o.bytes_before)} → {_size(o.bytes_after)} |"
            for o in d.outputs
        ]
        lines += [*cut(rows, len(rows)), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def render_json(d: ReportDiff) -> str:
    return json.dumps(d.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
