"""``report.json``, the whole file: the one writer and the one reader (docs/reports.md).

Layout: a head (format version, manifest, run, counts, state fingerprint) pretty-printed with
sorted keys, then ``"tasks"``, one entry a line (``TaskEntry.to_json``), sorted keys, in
readable-id order, so two reports diff cleanly line by line. The file is written in pieces
(``report_json_pieces``): a 100,000-task report is never one string.

``load_report`` reads a whole report (``diff``, ``merge``: untrusted input, every problem one
line); ``read_head`` reads only the lines before the tasks, which is all a rerun that changed
nothing needs (``report_is_current``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from flux_pipeline.errors import UsageError
from flux_pipeline.outcome import BLOCKING, STATE_BUCKET, Bucket, Buckets
from flux_pipeline.plan.expand import Plan
from flux_pipeline.report.entry import TaskEntry, counts_by_state
from flux_pipeline.report.review_summary import summarize
from flux_pipeline.states import TaskState

FORMAT_VERSION = 1
TASKS_LINE = '  "tasks": [\n'  # where the head ends: every key of the head sorts before it
HEAD_LIMIT = 1024 * 1024  # characters: a head is a few kilobytes


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportHead:
    """What a report says before its tasks (the parts read back)."""

    format_version: int
    manifest_name: str | None = None
    manifest_sha256: str | None = None
    state_fingerprint: str | None = None
    review_sha256: str | None = None  # of the review decisions it was made with


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    path: Path
    head: ReportHead
    tasks: tuple[TaskEntry, ...]

    def by_id(self) -> dict[str, TaskEntry]:
        return {task.readable_id: task for task in self.tasks}


def entry_buckets(entries: Sequence[TaskEntry]) -> Buckets:
    """The outcome buckets of a report's tasks, as the run counts them: a planned task is
    blocked when the nearest ancestor that is not planned failed, expired or is ambiguous (a
    rerun does not retry it), else not started."""
    by_id = {entry.readable_id: entry for entry in entries}
    counts: Counter[Bucket] = Counter()
    for entry in entries:
        bucket = STATE_BUCKET.get(entry.state)
        if bucket is None:  # planned
            above = by_id.get(entry.parent) if entry.parent else None
            while above is not None and above.state is TaskState.PLANNED:
                above = by_id.get(above.parent) if above.parent else None
            blocked = above is not None and STATE_BUCKET.get(above.state) in BLOCKING
            bucket = Bucket.BLOCKED if blocked else Bucket.NOT_STARTED
        counts[bucket] += 1
    return Buckets.of(counts)


def buckets_json(buckets: Buckets) -> dict[str, int]:
    return {bucket.value: n for bucket, n in buckets.items()}


def report_json_pieces(plan: Plan, entries: Sequence[TaskEntry], run: RunInfo) -> Iterator[str]:
    """report.json in pieces, one task a line."""
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
        "buckets": buckets_json(entry_buckets(entries)),
        "state_fingerprint": run.state_fingerprint,
    }
    review = summarize(plan, ((entry.key, entry.step) for entry in entries))
    if review is not None:  # docs/reports.md#review-counts
        head["review"] = review.to_json()
    yield json.dumps(head, indent=2, sort_keys=True)[:-2]  # reopen the object for "tasks"
    yield ",\n" + TASKS_LINE
    encode = json.JSONEncoder(sort_keys=True).encode
    for i, entry in enumerate(entries):
        yield (",\n    " if i else "    ") + encode(entry.to_json())
    yield "\n  ]\n}\n"


def _not_a_report(path: Path, why: str) -> NoReturn:
    raise UsageError(f"{path}: not a flux-pipeline report.json ({why})")


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _parse(path: Path, text: str) -> object:
    try:
        return json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{path}: not a JSON report: {message}") from None


def _head(path: Path, document: object) -> ReportHead:
    if not isinstance(document, dict):
        _not_a_report(path, "not a JSON object")
    version = document.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        _not_a_report(path, "no format_version")
    if version != FORMAT_VERSION:
        _not_a_report(path, f"format_version {version}; this version reads {FORMAT_VERSION}")
    manifest = document.get("manifest")
    if manifest is None:
        manifest = {}
    if not isinstance(manifest, dict):
        _not_a_report(path, "'manifest' is not an object")
    texts = {
        "manifest name": manifest.get("name"),
        "manifest sha256": manifest.get("sha256"),
        "state_fingerprint": document.get("state_fingerprint"),
    }
    review = document.get("review")
    texts["review sha256"] = review.get("sha256") if isinstance(review, dict) else None
    for what, value in texts.items():
        if value is not None and not isinstance(value, str):
            _not_a_report(path, f"its {what} is not a string")
    return ReportHead(
        review_sha256=texts["review sha256"],
        format_version=version,
        manifest_name=manifest.get("name"),
        manifest_sha256=manifest.get("sha256"),
        state_fingerprint=document.get("state_fingerprint"),
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a JSON report: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the report: {exc.strerror or exc}") from None


def load_report(path: Path) -> Report:
    """The report at ``path``, every entry checked. Raises ``UsageError`` (one line)."""
    document = _parse(path, _read_text(path))
    head = _head(path, document)
    assert isinstance(document, dict)  # checked by _head
    tasks = document.get("tasks")
    if not isinstance(tasks, list):
        _not_a_report(path, "no list of tasks")
    entries = tuple(
        TaskEntry.from_json(task, source=str(path), index=i) for i, task in enumerate(tasks, 1)
    )
    seen: set[str] = set()
    for entry in entries:
        if entry.readable_id in seen:
            raise UsageError(f"{path}: task {entry.readable_id!r} is in the report twice")
        seen.add(entry.readable_id)
    return Report(path=path, head=head, tasks=entries)


def read_head(path: Path) -> ReportHead:
    """The head of the report at ``path``, read from its first lines only (the layout
    ``report_json_pieces`` writes). Raises ``UsageError`` (one line)."""
    lines: list[str] = []
    size = 0
    try:
        with path.open(encoding="utf-8") as fh:
            while True:
                line = fh.readline(HEAD_LIMIT - size + 1)
                if line == TASKS_LINE:
                    break
                size += len(line)
                if not line or size > HEAD_LIMIT:
                    _not_a_report(path, "no tasks list after its head")
                lines.append(line)
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a JSON report: not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the report: {exc.strerror or exc}") from None
    text = "".join(lines).rstrip().removesuffix(",") + "\n}"
    return _head(path, _parse(path, text))
