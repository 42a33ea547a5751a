"""Report files (docs/reports.md): ``report.json`` for machines, ``report.md`` for people,
``index.html`` (the gallery, ``gallery``) and ``junit.xml`` (``junit``) for browsers and CI.

Built from the plan and the state DB alone, so ``flux-pipeline report`` can rewrite them at any
time. Every file is written to a temporary name and renamed into place. Tasks are sorted by
readable id so two reports diff cleanly in git. Nothing secret is in them: the request shown
is the planned one (local images by path and hash, never the API key or callback secret).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flux_pipeline.media import write_atomic
from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.tasks import LOCAL_IMAGE_PREFIX, PARENT_IMAGE_URL, TaskSpec, map_strings
from flux_pipeline.report import gallery, junit
from flux_pipeline.report.github import FAILED_STATES, failure_code
from flux_pipeline.states import TaskRecord, TaskState

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
    state_fingerprint: str | None = None  # Store.fingerprint() of the rows reported


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _display_request(plan: Plan, request_json: str, parent_url: str | None) -> Any:
    """The request as sent, readable: local images by path and hash, never their bytes."""

    def show(value: str) -> str:
        if value.startswith(LOCAL_IMAGE_PREFIX):
            sha = value[len(LOCAL_IMAGE_PREFIX) :]
            image = plan.local_images.get(sha)
            where = _relative(image.path, plan.manifest_path.parent) if image else "?"
            return f"local:{where}#sha256={sha}"
        if PARENT_IMAGE_URL in value and parent_url:
            return value.replace(PARENT_IMAGE_URL, parent_url)
        return value

    return map_strings(json.loads(request_json), show)


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


def task_entries(
    plan: Plan, records: dict[str, TaskRecord], *, consume: bool = False
) -> list[dict[str, Any]]:
    """The report's view of every task. ``consume``: take each record out of ``records`` as
    its entry is made, so a 100,000-task report never holds both in full."""
    specs = list(_all_specs(plan, records))
    by_key = {spec.key: spec for spec, _ in specs}
    entries = []
    for spec, parent_url in specs:
        record = records.pop(spec.key, None) if consume else records.get(spec.key)
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


def report_json_pieces(plan: Plan, entries: list[dict[str, Any]], run: RunInfo) -> Iterator[str]:
    """report.json in pieces, one task a line, so a 100,000-task report is never one string."""
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
        "state_fingerprint": run.state_fingerprint,
    }
    yield json.dumps(head, indent=2, sort_keys=True)[:-2]  # reopen the object for "tasks"
    yield ',\n  "tasks": [\n'
    encode = json.JSONEncoder(sort_keys=True).encode
    for i, entry in enumerate(entries):
        yield (",\n    " if i else "    ") + encode(entry)
    yield "\n  ]\n}\n"


def _code(text: str) -> str:
    """``text`` as inline Markdown code, whatever backticks it holds."""
    text = " ".join(text.split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_text(text: str, limit: int = 300) -> str:
    """API text as one line of plain Markdown: no markup, no HTML, at most ``limit`` chars."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return re.sub(r"([\\`*_\[\]<>|~&])", r"\\\1", text)


def _ids(ids: list[str], limit: int) -> str:
    shown = ", ".join(_code(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _resumable(run: RunInfo, counts: dict[str, int]) -> bool:
    """Did the run stop before the end, so that running the same command again continues?"""
    if run.exit_code == 3:
        return True
    if run.exit_code is None:  # interrupted before the engine returned an outcome
        return run.stop_reason is not None
    unfinished = sum(counts[s] for s in UNFINISHED_STATES)
    return run.exit_code == 2 and unfinished > 0


UNFINISHED_STATES = ("planned", "submitting", "submitted", "succeeded")
MAX_IDS = 20


def report_markdown(plan: Plan, entries: list[dict[str, Any]], run: RunInfo) -> str:
    counts = counts_by_state(entries)
    lines = [f"# flux-pipeline: {plan.name}", ""]
    if run.exit_code is not None:
        verdict = {0: "all done", 1: "finished with failures", 2: "stopped: error"}.get(
            run.exit_code, "stopped early (resumable)"
        )
        lines.append(f"**{verdict}** (exit {run.exit_code})")
        lines.append("")
    elif run.stop_reason:
        lines += ["**interrupted** (resumable)", ""]
    lines += ["| state | tasks |", "|---|---:|"]
    lines += [f"| {state} | {n} |" for state, n in counts.items() if n]
    lines.append(f"| **total** | {len(entries)} |")
    lines.append("")
    if run.elapsed is not None:
        lines.append(f"- time taken: {_duration(run.elapsed)}")
    elif run.started_at is not None and run.finished_at is not None:
        lines.append(f"- time taken: {_duration(run.finished_at - run.started_at)}")
    if run.created is not None:
        lines.append(f"- tasks created (billed) in this run: {run.created}")
    if run.stop_reason:
        lines.append(f"- stopped: {_md_text(run.stop_reason)}")
    if run.error:
        lines.append(f"- last error: {_md_text(run.error)}")
    lines.append(
        "- files: `report.json` (every task), `index.html` (gallery), `junit.xml` (CI test report)"
    )
    failures: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        if e["state"] in FAILED_STATES:
            failures[failure_code(e["state"], e["failCode"])].append(e)
    if failures:
        total = sum(len(v) for v in failures.values())
        lines += ["", f"## Failures ({total})", ""]
        for code in sorted(failures):
            group = failures[code]
            ids = [e["readable_id"] for e in group]
            lines.append(f"- **{_code(code)}** ({len(ids)}): {_ids(ids, MAX_IDS)}")
            messages = Counter(e["failMsg"] for e in group if e["failMsg"])
            for message, n in messages.most_common(3):
                times = f" ({n}×)" if n > 1 else ""
                lines.append(f"  - {_md_text(message)}{times}")
        lines += ["", "Rerun with `--retry-failed` to submit the failed tasks again (pays again)."]
    ambiguous = [e["readable_id"] for e in entries if e["state"] == "submitting"]
    if ambiguous:
        lines += ["", f"## Ambiguous ({len(ambiguous)}: create sent, answer lost)", ""]
        lines.append(_ids(ambiguous, 50))
        lines.append("")
        lines.append(
            "Check the API dashboard; rerun with `--resubmit-ambiguous` to create them again."
        )
    if run.resume_command and _resumable(run, counts):
        unfinished = sum(counts[s] for s in UNFINISHED_STATES)
        lines += [
            "",
            "## Resume",
            "",
            f"{unfinished} task(s) not finished. Run the same command again to continue "
            "(tasks already created are polled, never created twice):",
            "",
            "```sh",
            run.resume_command,
            "```",
        ]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def write_reports(
    plan: Plan,
    records: dict[str, TaskRecord],
    out_dir: Path,
    run: RunInfo,
    *,
    consume: bool = False,
) -> list[Path]:
    """Write report.json, report.md, index.html (and its further pages) and junit.xml into
    ``out_dir``; append report.md to ``$GITHUB_STEP_SUMMARY`` when set. Returns the main files."""
    entries = task_entries(plan, records, consume=consume)
    json_path = out_dir / "report.json"
    md_path = out_dir / "report.md"
    html_path = out_dir / "index.html"
    junit_path = out_dir / "junit.xml"
    write_atomic(json_path, report_json_pieces(plan, entries, run))
    markdown = report_markdown(plan, entries, run)
    write_atomic(md_path, markdown)
    pages = gallery.render_pages(
        name=plan.name, entries=entries, step_order=plan.step_ids, out_dir=out_dir
    )
    for number, page in enumerate(pages, start=1):
        write_atomic(out_dir / gallery.page_name(number), page)
    for stale in gallery.stale_pages(out_dir, len(pages)):
        stale.unlink(missing_ok=True)
    write_atomic(
        junit_path,
        junit.junit_xml(
            name=plan.name, entries=entries, step_order=plan.step_ids, elapsed=run.elapsed
        ),
    )
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        append_step_summary(Path(summary), markdown)
    return [json_path, md_path, html_path, junit_path]


TRUNCATED_NOTE = (
    "\n\n_(truncated to fit GitHub's step summary limit: the full report is in report.md)_\n"
)


def append_step_summary(path: Path, markdown: str, *, limit: int = STEP_SUMMARY_LIMIT) -> None:
    """Append ``markdown`` to the step summary file, keeping the whole file within ``limit``
    bytes (GitHub drops a bigger summary entirely): what the file already holds counts, and a
    report that does not fit is cut at a line boundary with a note."""
    try:
        used = path.stat().st_size
    except FileNotFoundError:
        used = 0
    room = limit - used
    data = markdown.encode()
    if len(data) > room:
        note = TRUNCATED_NOTE.encode()
        if room < len(note):
            return  # not even the note fits: leave the summary as it is
        cut = data[: room - len(note) - 4]  # 4: room for a closing code fence
        cut = cut.rsplit(b"\n", 1)[0] if b"\n" in cut else b""
        text = cut.decode(errors="ignore")
        if text.count("```") % 2:
            text += "\n```"
        data = text.encode() + note
    with path.open("ab") as fh:
        fh.write(data)


def report_is_current(out_dir: Path, manifest_sha256: str, fingerprint: str) -> bool:
    """True when every report file exists and report.json was written for this manifest from
    exactly the rows the state DB holds now: a run that changed nothing need not rewrite them."""
    names = ("report.json", "report.md", "index.html", "junit.xml")
    if not all((out_dir / name).is_file() for name in names):
        return False
    try:
        with (out_dir / "report.json").open(encoding="utf-8") as fh:
            head = fh.read(8192)
    except OSError:
        return False
    return (
        f'"sha256": "{manifest_sha256}"' in head and f'"state_fingerprint": "{fingerprint}"' in head
    )


def keep_reports(out_dir: Path) -> None:
    """The reports stay as they are; the step summary still gets report.md."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        append_step_summary(Path(summary), (out_dir / "report.md").read_text(encoding="utf-8"))
