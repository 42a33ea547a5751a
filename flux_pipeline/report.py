"""Report files (DESIGN §4): ``report.json`` for machines, ``report.md`` for people.

Built from the plan and the state DB alone, so ``flux-pipeline report`` can rewrite them at any
time. Every file is written to a temporary name and renamed into place. Tasks are sorted by
readable id so two reports diff cleanly in git. Nothing secret is in them: the request shown
is the planned one (local images by path and hash, never the API key or callback secret).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flux_pipeline.expand import Plan
from flux_pipeline.resume import TaskState
from flux_pipeline.store import TaskRecord
from flux_pipeline.tasks import LOCAL_IMAGE_PREFIX, PARENT_IMAGE_URL, TaskSpec

FORMAT_VERSION = 1
STEP_SUMMARY_LIMIT = 1024 * 1024  # GitHub's limit for one step summary


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What the report says about the run that wrote it (None when rewritten offline)."""

    settings: dict[str, Any]
    started_at: float | None = None
    finished_at: float | None = None
    elapsed: float | None = None
    exit_code: int | None = None
    stop_reason: str | None = None
    error: str | None = None
    created: int | None = None
    resume_command: str | None = None
    engine_stats: dict[str, float] | None = None


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _display_request(plan: Plan, request_json: str, parent_url: str | None) -> Any:
    def visit(value: Any) -> Any:
        if isinstance(value, str):
            if value.startswith(LOCAL_IMAGE_PREFIX):
                sha = value[len(LOCAL_IMAGE_PREFIX) :]
                image = plan.local_images.get(sha)
                where = _relative(image.path, plan.manifest_path.parent) if image else "?"
                return f"local:{where}#sha256={sha}"
            if PARENT_IMAGE_URL in value and parent_url:
                return value.replace(PARENT_IMAGE_URL, parent_url)
            return value
        if isinstance(value, list):
            return [visit(v) for v in value]
        if isinstance(value, dict):
            return {k: visit(v) for k, v in value.items()}
        return value

    return visit(json.loads(request_json))


def _all_specs(plan: Plan, records: dict[str, TaskRecord]) -> Iterator[tuple[TaskSpec, str | None]]:
    """Planned tasks, plus chained tasks planned at run time (parents with several outputs)."""
    seen: set[str] = set()
    stack: list[tuple[TaskSpec, str | None]] = [
        (spec, None) for spec in reversed(plan.tasks) if spec.parent_key is None
    ]
    while stack:
        spec, parent_url = stack.pop()
        if spec.key in seen:
            continue
        seen.add(spec.key)
        yield spec, parent_url
        record = records.get(spec.key)
        urls = record.result_urls if record is not None else ()
        for index in range(max(1, len(urls))):
            url = urls[index] if index < len(urls) else None
            stack.extend((child, url) for child in reversed(plan.children(spec, index)))


def task_entries(plan: Plan, records: dict[str, TaskRecord]) -> list[dict[str, Any]]:
    specs = list(_all_specs(plan, records))
    by_key = {spec.key: spec for spec, _ in specs}
    entries = []
    for spec, parent_url in specs:
        record = records.get(spec.key)
        parent = by_key.get(spec.parent_key) if spec.parent_key else None
        entry: dict[str, Any] = {
            "readable_id": spec.readable_id,
            "key": spec.key,
            "step": spec.step,
            "parent": parent.readable_id if parent is not None else None,
            "parent_output_index": spec.parent_output_index,
            "request": _display_request(plan, spec.request_json, parent_url),
            "state": record.state.value if record else TaskState.PLANNED.value,
            "taskId": record.task_id if record else None,
            "failCode": record.fail_code if record else None,
            "failMsg": record.fail_msg if record else None,
            "attempts": record.attempts if record else 0,
            "timestamps": {
                "first_submitted": record.first_submitted_at if record else None,
                "submitted": record.submitted_at if record else None,
                "finished": record.finished_at if record else None,
                "downloaded": record.downloaded_at if record else None,
                "api_create": record.api_create_time if record else None,
                "api_complete": record.api_complete_time if record else None,
            },
            "costTime": record.cost_time if record else None,
            "output": spec.output,
            "outputs": [
                {"path": o.path, "url": o.url, "bytes": o.bytes, "sha256": o.sha256}
                for o in (record.outputs if record else [])
            ],
        }
        entries.append(entry)
    entries.sort(key=lambda e: e["readable_id"])
    return entries


def counts_by_state(entries: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(e["state"] for e in entries)
    return {state.value: counts.get(state.value, 0) for state in TaskState}


def report_json(plan: Plan, entries: list[dict[str, Any]], run: RunInfo) -> str:
    head = {
        "format_version": FORMAT_VERSION,
        "manifest": {
            "name": plan.name,
            "path": plan.manifest_path.as_posix(),
            "sha256": plan.manifest_sha256,
        },
        "run": {
            "settings": run.settings,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "elapsed_seconds": run.elapsed,
            "exit_code": run.exit_code,
            "stop_reason": run.stop_reason,
            "error": run.error,
            "tasks_created": run.created,
            "engine_stats": run.engine_stats,
        },
        "counts": counts_by_state(entries),
    }
    lines = json.dumps(head, indent=2, sort_keys=True)[:-2]  # reopen the object for "tasks"
    parts = [lines, ',\n  "tasks": [\n']
    parts.append(",\n".join("    " + json.dumps(e, sort_keys=True) for e in entries))
    parts.append("\n  ]\n}\n")
    return "".join(parts)


def report_markdown(plan: Plan, entries: list[dict[str, Any]], run: RunInfo) -> str:
    counts = counts_by_state(entries)
    lines = [f"# flux-pipeline: {plan.name}", ""]
    if run.exit_code is not None:
        verdict = {0: "all done", 1: "finished with failures", 2: "stopped: error"}.get(
            run.exit_code, "stopped early (resumable)"
        )
        lines.append(f"**{verdict}** (exit {run.exit_code})")
        lines.append("")
    lines += ["| state | tasks |", "|---|---:|"]
    lines += [f"| {state} | {n} |" for state, n in counts.items() if n]
    lines.append(f"| **total** | {len(entries)} |")
    lines.append("")
    if run.elapsed is not None:
        lines.append(f"- time taken: {run.elapsed:.1f} s")
    if run.created is not None:
        lines.append(f"- tasks created (billed) in this run: {run.created}")
    if run.stop_reason:
        lines.append(f"- stopped: {run.stop_reason}")
    if run.error:
        lines.append(f"- last error: {run.error}")
    failures: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        if e["state"] in ("failed", "expired"):
            failures[e["failCode"] or "UNKNOWN"].append(e["readable_id"])
    if failures:
        lines += ["", "## Failures", ""]
        for code in sorted(failures):
            ids = failures[code]
            shown = ", ".join(f"`{i}`" for i in ids[:20])
            more = f" and {len(ids) - 20} more" if len(ids) > 20 else ""
            lines.append(f"- **{code}** ({len(ids)}): {shown}{more}")
    ambiguous = [e["readable_id"] for e in entries if e["state"] == "submitting"]
    if ambiguous:
        lines += ["", "## Ambiguous (create sent, answer lost)", ""]
        lines += [f"- `{i}`" for i in ambiguous[:50]]
        lines.append("")
        lines.append(
            "Check the API dashboard; rerun with `--resubmit-ambiguous` to create them again."
        )
    if run.resume_command and run.exit_code == 3:
        lines += ["", "## Resume", "", "```", run.resume_command, "```"]
    return "\n".join(lines) + "\n"


def write_reports(
    plan: Plan, records: dict[str, TaskRecord], out_dir: Path, run: RunInfo
) -> list[Path]:
    entries = task_entries(plan, records)
    json_path = out_dir / "report.json"
    md_path = out_dir / "report.md"
    write_atomic(json_path, report_json(plan, entries, run))
    markdown = report_markdown(plan, entries, run)
    write_atomic(md_path, markdown)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        append_step_summary(Path(summary), markdown)
    return [json_path, md_path]


def append_step_summary(path: Path, markdown: str) -> None:
    data = markdown.encode()
    if len(data) > STEP_SUMMARY_LIMIT - 1024:
        note = b"\n\n_(truncated: the full report is in report.md)_\n"
        data = data[: STEP_SUMMARY_LIMIT - 1024 - len(note)].rsplit(b"\n", 1)[0] + note
    with path.open("ab") as fh:
        fh.write(data)
