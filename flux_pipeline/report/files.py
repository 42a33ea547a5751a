"""Report files (docs/reports.md): ``report.json`` for machines (``reportfile``), ``report.md``
for people (``markdown``), ``index.html`` (the gallery, ``gallery``) and ``junit.xml``
(``junit``) for browsers and CI, all from the same ``entry.TaskEntry`` list.

Built from the plan and the state DB alone, so ``flux-pipeline report`` can rewrite them at any
time. Every file is written to a temporary name and renamed into place. Tasks are sorted by
readable id so two reports diff cleanly in git. Nothing secret is in them: the request shown
is the planned one (local images by path and hash, never the API key or callback secret).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from flux_pipeline import redact
from flux_pipeline.errors import UsageError
from flux_pipeline.layout import report_name
from flux_pipeline.media import write_atomic
from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.tasks import LOCAL_IMAGE_PREFIX, PARENT_IMAGE_URL, TaskSpec, map_strings
from flux_pipeline.report import gallery, junit
from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.report.markdown import report_markdown
from flux_pipeline.report.reportfile import RunInfo as RunInfo  # where runs and merges take it
from flux_pipeline.report.reportfile import read_head, report_json_pieces
from flux_pipeline.states import TaskRecord

STEP_SUMMARY_LIMIT = 1024 * 1024  # GitHub's limit for one step summary


def _relative(path: Path, base: Path) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _display_request(plan: Plan, request_json: str, parent_url: str | None) -> object:
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
) -> list[TaskEntry]:
    """The report's view of every task, sorted by readable id. ``consume``: take each record
    out of ``records`` as its entry is made, so a 100,000-task report never holds both in full."""
    specs = list(_all_specs(plan, records))
    by_key = {spec.key: spec for spec, _ in specs}
    entries = []
    for spec, parent_url in specs:
        record = records.pop(spec.key, None) if consume else records.get(spec.key)
        parent = by_key.get(spec.parent_key) if spec.parent_key else None
        request = _display_request(plan, spec.request_json, parent_url)
        parent_id = parent.readable_id if parent is not None else None
        entries.append(TaskEntry.of(spec, record, parent=parent_id, request=request))
    entries.sort(key=lambda e: e.readable_id)
    return entries


def write_reports(
    plan: Plan,
    records: dict[str, TaskRecord],
    out_dir: Path,
    run: RunInfo,
    *,
    consume: bool = False,
    shard: tuple[int, int] | None = None,
    decisions: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write report.json, report.md, index.html (and the gallery's files) and junit.xml into
    ``out_dir``; append report.md to ``$GITHUB_STEP_SUMMARY`` when set. Returns the main files.
    ``decisions``: the review file's, task key -> ``picked``/``rejected``, for the gallery
    (default: those the plan's review gate was made with, plan/review_gate.py).

    A ``shard`` writes its own ``report.shard-IofN.json``, ``.md`` and ``junit.shard-IofN.xml``
    (``layout.report_name``) and no gallery: shards sharing a directory keep their reports
    apart, and the gallery of every shard is the one ``merge`` writes."""
    entries = task_entries(plan, records, consume=consume)
    json_path = out_dir / report_name("json", shard)
    md_path = out_dir / report_name("markdown", shard)
    html_path = out_dir / "index.html"
    junit_path = out_dir / report_name("junit", shard)
    # every file through redact last: nothing secret is written, whatever a field holds
    write_atomic(json_path, redact.scrub_pieces(report_json_pieces(plan, entries, run)))
    markdown = redact.scrub(report_markdown(plan, entries, run))
    write_atomic(md_path, markdown)
    if decisions is None and plan.review is not None:
        decisions = plan.review.decisions
    if shard is None:
        html_path = gallery.write_gallery(
            out_dir,
            name=plan.name,
            manifest=plan.manifest_path.name,
            entries=entries,
            step_order=plan.step_ids,
            decisions=decisions,
        )
    xml = junit.junit_xml(
        name=plan.name, entries=entries, step_order=plan.step_ids, elapsed=run.elapsed
    )
    write_atomic(junit_path, redact.scrub(xml))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        append_step_summary(Path(summary), markdown)
    return [json_path, md_path, *([] if shard else [html_path]), junit_path]


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
    data = redact.scrub(markdown).encode()
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


def report_is_current(
    out_dir: Path,
    manifest_sha256: str,
    fingerprint: str,
    shard: tuple[int, int] | None = None,
    review_sha256: str | None = None,
) -> bool:
    """True when every report file exists and report.json was written for this manifest from
    exactly the rows the state DB holds now (and the same review decisions, ``review_sha256``):
    a run that changed nothing need not rewrite them."""
    names = [report_name(kind, shard) for kind in ("json", "markdown", "junit")]
    names += [] if shard else ["index.html", gallery.DATA_PATH]
    if not all((out_dir / name).is_file() for name in names):
        return False
    try:
        # its first lines only: a rerun stays cheap
        head = read_head(out_dir / report_name("json", shard))
    except UsageError:
        return False
    return (
        head.manifest_sha256 == manifest_sha256
        and head.state_fingerprint == fingerprint
        and head.review_sha256 == review_sha256
    )


def keep_reports(out_dir: Path, shard: tuple[int, int] | None = None) -> None:
    """The reports stay as they are; the step summary still gets report.md."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        markdown = (out_dir / report_name("markdown", shard)).read_text(encoding="utf-8")
        append_step_summary(Path(summary), markdown)
