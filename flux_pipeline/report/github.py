"""GitHub Actions workflow commands: failed tasks as ``::error`` annotations, secrets masked.

Only used when ``GITHUB_ACTIONS=true``. Commands are lines on standard output::

    ::error file=pipelines/a.yaml,line=12,col=5,title=flux-pipeline%3A hero failed::text
    ::add-mask::value

Escaping follows the runner (and ``@actions/core``): in the message ``%`` → ``%25``,
``\\r`` → ``%0D``, ``\\n`` → ``%0A``; in property values also ``:`` → ``%3A`` and ``,`` → ``%2C``.
At most ``MAX_ERRORS`` tasks are annotated (GitHub shows only the first few per step anyway);
the rest are counted in one ``::notice``. The file is relative to ``GITHUB_WORKSPACE`` (else the
current directory), as GitHub expects, so the annotation lands on the step's line in the diff.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from flux_pipeline import redact
from flux_pipeline.plan.expand import Plan
from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.states import TaskRecord, failure_code

MAX_ERRORS = 10


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, properties: Mapping[str, object] | None = None) -> str:
    """One workflow command line (no newline); ``None`` properties are left out. Secrets are
    redacted from the message and the values before escaping (``redact``)."""
    props = ",".join(
        f"{key}={escape_property(redact.scrub(str(value)))}"
        for key, value in (properties or {}).items()
        if value is not None
    )
    return f"::{name}{' ' + props if props else ''}::{escape_data(redact.scrub(message))}"


MASK_PREFIX = "::add-mask::"


def add_mask(secret: str) -> str:
    """The one line meant to name a secret: GitHub hides it in the log from then on."""
    return MASK_PREFIX + escape_data(secret)


def enabled(env: Mapping[str, str] | None = None) -> bool:
    return (os.environ if env is None else env).get("GITHUB_ACTIONS") == "true"


def workspace_path(path: Path, env: Mapping[str, str] | None = None) -> str:
    """``path`` relative to ``GITHUB_WORKSPACE`` (else the current directory), POSIX style;
    unchanged (absolute) when it is outside."""
    base = (os.environ if env is None else env).get("GITHUB_WORKSPACE") or os.getcwd()
    try:
        return path.resolve().relative_to(Path(base).resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def failure_annotations(
    plan: Plan,
    tasks: Iterable[TaskRecord | TaskEntry],
    *,
    env: Mapping[str, str] | None = None,
    limit: int = MAX_ERRORS,
) -> list[str]:
    """``::error`` lines for the first ``limit`` failed or expired ``tasks`` (by readable id),
    each at the manifest line of its step, then one ``::notice`` counting the rest."""
    failed = sorted((t for t in tasks if t.state.failed), key=lambda t: t.readable_id)
    file = workspace_path(plan.manifest_path, env)
    lines = []
    for task in failed[:limit]:
        try:
            line, col = plan.step_location(task.step)
        except KeyError:  # not a step of this manifest (a row left by an older version)
            line, col = 1, 1
        code = failure_code(task.state, task.fail_code)
        message = f"{task.readable_id}: {code}: {task.fail_msg or 'no message'}"
        title = f"flux-pipeline: task of step {task.step} failed ({code})"
        props = {"file": file, "line": line, "col": col, "title": title}
        lines.append(command("error", message, props))
    if len(failed) > limit:
        rest = len(failed) - limit
        lines.append(
            command(
                "notice",
                f"{rest} more failed task(s) not annotated (at most {limit}): see report.md",
                {"title": f"flux-pipeline: {len(failed)} task(s) failed"},
            )
        )
    return lines


def emit(lines: Iterable[str], write: Callable[[str], object] | None = None) -> None:
    """Write command lines to standard output (where the runner reads them), flushed; every
    line but an ``::add-mask::`` redacted last (``redact``)."""

    def clean(line: str) -> str:
        return line if line.startswith(MASK_PREFIX) else redact.scrub(line)

    if write is not None:
        for line in lines:
            write(clean(line))
        return
    for line in lines:
        if line.startswith(MASK_PREFIX):  # past a RedactingStream, which would hide it
            out = redact.unredacted(sys.stdout)
            out.write(line + "\n")
            out.flush()
        else:
            sys.stdout.write(clean(line) + "\n")
    sys.stdout.flush()
