"""``report.md``: the run for people (and for ``$GITHUB_STEP_SUMMARY``), docs/reports.md.

The verdict line says what the exit code means (``flux_pipeline.outcome.verdict``), then the
outcome buckets (as the run's last line counts them), the tasks per state, the failures
grouped by failure code, the ambiguous tasks (``outcome.ambiguous_message``), and how to
resume.
API text is shown as plain one-line Markdown: no markup, no HTML.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence

from flux_pipeline.errors import ExitCode
from flux_pipeline.outcome import Buckets, ambiguous_message, verdict
from flux_pipeline.plan.expand import Plan
from flux_pipeline.report.entry import TaskEntry, counts_by_state
from flux_pipeline.report.reportfile import RunInfo, entry_buckets
from flux_pipeline.report.review_summary import summarize
from flux_pipeline.states import TaskState

MAX_IDS = 20


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


def _resumable(run: RunInfo, buckets: Buckets) -> bool:
    """Did the run stop before the end, so that running the same command again continues?"""
    if run.exit_code == ExitCode.RESUMABLE:
        return True
    if run.exit_code is None:  # interrupted before the engine returned an outcome
        return run.stop_reason is not None
    return run.exit_code == ExitCode.INVALID and buckets.unfinished > 0


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"


def _failures(entries: Sequence[TaskEntry]) -> list[str]:
    failures: dict[str, list[TaskEntry]] = defaultdict(list)
    for e in entries:
        if e.state.failed:
            failures[e.failure_code].append(e)
    if not failures:
        return []
    total = sum(len(v) for v in failures.values())
    lines = ["", f"## Failures ({total})", ""]
    for code in sorted(failures):
        group = failures[code]
        ids = [e.readable_id for e in group]
        lines.append(f"- **{_code(code)}** ({len(ids)}): {_ids(ids, MAX_IDS)}")
        messages = Counter(e.fail_msg for e in group if e.fail_msg)
        for message, n in messages.most_common(3):
            times = f" ({n}×)" if n > 1 else ""
            lines.append(f"  - {_md_text(message)}{times}")
    lines += ["", "Rerun with `--retry-failed` to submit the failed tasks again (pays again)."]
    return lines


def _review(plan: Plan, entries: Sequence[TaskEntry]) -> list[str]:
    """The review decisions per step (docs/reports.md#review-counts); nothing without a review."""
    summary = summarize(plan, ((entry.key, entry.step) for entry in entries))
    if summary is None:
        return []
    lines = ["", "## Review", "", "| step | picked | rejected | undecided | held for review |"]
    lines.append("|---|---:|---:|---:|---:|")
    for step, counts in summary.steps.items():
        held = str(counts["held"]) if "held" in counts else ""
        lines.append(
            f"| {_code(step)} | {counts['picked']} | {counts['rejected']} | "
            f"{counts['undecided']} | {held} |"
        )
    if summary.orphaned:
        lines += ["", f"{len(summary.orphaned)} decision(s) for tasks no longer planned (kept)."]
    waiting = sum(counts.get("held", 0) for counts in summary.steps.values())
    if waiting:
        lines += [
            "",
            f"{waiting} parent(s) held for review: pick them (`flux-pipeline review`) and run "
            "again to chain them.",
        ]
    return lines


def report_markdown(plan: Plan, entries: Sequence[TaskEntry], run: RunInfo) -> str:
    counts = counts_by_state(entries)
    buckets = entry_buckets(entries)
    lines = [f"# flux-pipeline: {plan.name}", ""]
    if run.exit_code is not None:
        lines.append(f"**{verdict(run.exit_code)}** (exit {run.exit_code})")
        lines.append("")
    elif run.stop_reason:
        lines += ["**interrupted** (resumable)", ""]
    lines += [f"Tasks: {buckets.summary()}", ""]
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
    lines += _review(plan, entries)
    lines += _failures(entries)
    ambiguous = [e.readable_id for e in entries if e.state is TaskState.SUBMITTING]
    if ambiguous:
        lines += ["", f"## Ambiguous ({len(ambiguous)}: create sent, answer lost)", ""]
        lines.append(_ids(ambiguous, 50))
        lines.append("")
        lines.append(_md_text(ambiguous_message(ambiguous), limit=1000))
        lines.append("")
        lines.append("Check the API dashboard before resubmitting.")
    if run.resume_command and _resumable(run, buckets):
        lines += [
            "",
            "## Resume",
            "",
            f"{buckets.unfinished} task(s) not finished. Run the same command again to continue "
            "(tasks already created are polled, never created twice):",
            "",
            "```sh",
            run.resume_command,
            "```",
        ]
    return "\n".join(lines) + "\n"
