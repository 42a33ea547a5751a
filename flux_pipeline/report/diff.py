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

from flux_pipeline.errors import UsageError

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


def load_report(path: Path) -> dict[str, dict[str, Any]]:
    """The tasks of a ``report.json`` by readable id. Raises ``UsageError`` (one line)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the report: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not a JSON report: {exc}") from None
    tasks = document.get("tasks") if isinstance(document, dict) else None
    if not isinstance(tasks, list) or not all(
        isinstance(t, dict) and isinstance(t.get("readable_id"), str) for t in tasks
    ):
        raise UsageError(f"{path}: not a flux-pipeline report.json (no list of tasks)")
    return {task["readable_id"]: task for task in tasks}


def _parent_urls(task: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]]) -> set[str]:
    parent = tasks.get(task.get("parent") or "")
    if parent is None:
        return set()
    outputs = parent.get("outputs") or []
    return {o["url"] for o in outputs if isinstance(o, dict) and isinstance(o.get("url"), str)}


def _images(task: Mapping[str, Any], tasks: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    urls = _input(task).get("image_urls")
    if not isinstance(urls, list):
        return [] if urls is None else [urls]
    parents = _parent_urls(task, tasks)
    return [
        PARENT_IMAGE if url in parents or url == "flux-pipeline:parent-image-url" else url
        for url in urls
    ]


def _input(task: Mapping[str, Any]) -> dict[str, Any]:
    request = task.get("request")
    fields = request.get("input") if isinstance(request, dict) else None
    return fields if isinstance(fields, dict) else {}


def _provider(task: Mapping[str, Any]) -> Any:
    request = task.get("request")
    return request.get("provider") if isinstance(request, dict) else None


def key_parts(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    tasks_a: Mapping[str, Mapping[str, Any]],
    tasks_b: Mapping[str, Mapping[str, Any]],
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
    parent_a, parent_b = a.get("parent"), b.get("parent")
    key_a = tasks_a[parent_a]["key"] if isinstance(parent_a, str) and parent_a in tasks_a else None
    key_b = tasks_b[parent_b]["key"] if isinstance(parent_b, str) and parent_b in tasks_b else None
    index_a, index_b = a.get("parent_output_index"), b.get("parent_output_index")
    if (parent_a, key_a, index_a) != (parent_b, key_b, index_b):
        before = None if parent_a is None else f"{parent_a} (key {str(key_a)[:12]}, #{index_a})"
        after = None if parent_b is None else f"{parent_b} (key {str(key_b)[:12]}, #{index_b})"
        parts.append(PartChange("parent", before, after))
    if not parts:
        parts.append(PartChange("other", a.get("key"), b.get("key")))
    return parts


def _outputs(task: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {
        o["path"]: o
        for o in task.get("outputs") or []
        if isinstance(o, dict) and isinstance(o.get("path"), str)
    }


def output_changes(rid: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> list[OutputChange]:
    outs_a, outs_b = _outputs(a), _outputs(b)
    changes = []
    for path in sorted(set(outs_a) | set(outs_b)):
        old, new = outs_a.get(path), outs_b.get(path)
        if old is not None and new is not None and old.get("sha256") == new.get("sha256"):
            continue
        kind = "changed" if old is not None and new is not None else "added" if new else "removed"
        changes.append(
            OutputChange(
                readable_id=rid,
                path=path,
                change=kind,
                sha256_before=old.get("sha256") if old else None,
                sha256_after=new.get("sha256") if new else None,
                bytes_before=old.get("bytes") if old else None,
                bytes_after=new.get("bytes") if new else None,
            )
        )
    return changes


def diff_tasks(
    tasks_a: Mapping[str, Mapping[str, Any]],
    tasks_b: Mapping[str, Mapping[str, Any]],
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
        if a.get("key") != b.get("key"):
            parts = tuple(key_parts(a, b, tasks_a, tasks_b))
            changed.append(TaskChange(rid, str(a.get("key")), str(b.get("key")), parts))
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
    return diff_tasks(
        load_report(path_a), load_report(path_b), before=str(path_a), after=str(path_b)
    )


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
