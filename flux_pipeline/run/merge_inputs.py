"""What ``merge`` checks in the rows it takes from a source (a shard's state DB or
``report.json``) before any is merged: sources are untrusted (docs/cli.md, ``merge``).

Every output path of a row must be one of the task's own file names (its ``output`` with the
``-N`` suffix of a multi-image task and any extension) and stay inside the output directory
(``layout.inside``): a row naming ``../../../../etc/passwd``, ``/etc/passwd`` or another
task's file is refused as a whole source, one line naming the file, exit 2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from flux_pipeline.errors import UsageError
from flux_pipeline.layout import inside
from flux_pipeline.states import TaskRecord

# the file name of output N of a task whose output is STEM: STEM.ext or STEM-N.ext
_SUFFIX = re.compile(r"(?:-[1-9][0-9]{0,5})?\.[A-Za-z0-9]{1,10}")


def _problem(record: TaskRecord, path: str, out_dir: Path) -> str | None:
    try:
        inside(out_dir, record.output or ".")
        inside(out_dir, path)
    except ValueError as exc:
        return str(exc)
    own = PurePosixPath(record.output)
    given = PurePosixPath(path)
    name = given.name
    if given.parent != own.parent or not name.startswith(own.name):
        return f"output path {path!r} is not a file of this task (its output is {own})"
    if not _SUFFIX.fullmatch(name[len(own.name) :]):
        return f"output path {path!r} is not a file of this task (its output is {own})"
    return None


def check_records(source: Path, records: Iterable[TaskRecord], out_dir: Path) -> None:
    """``UsageError`` (one line, naming ``source`` and the task) for the first row with an
    output path that is not the task's own or not inside ``out_dir``."""
    for record in records:
        for output in record.outputs:
            problem = _problem(record, output.path, out_dir)
            if problem is not None:
                raise UsageError(f"{source}: task {record.readable_id!r}: {problem}")
