"""What the engine reads of the output files, always in a worker thread (the event loop
never waits on the disk): which downloaded tasks are still intact, and a parent image to
send inline when its result URL is too old (docs/resume.md)."""

from __future__ import annotations

from pathlib import Path

import anyio

from flux_pipeline.media import sniff_image
from flux_pipeline.plan.tasks import data_uri
from flux_pipeline.run.downloads import file_intact
from flux_pipeline.states import TaskRecord, TaskState

INLINE_MAX_BYTES = 10 * 1024 * 1024  # a parent image larger than this keeps its URL


def intact_keys(records: dict[str, TaskRecord], out: Path) -> set[str]:
    """Keys of the downloaded tasks whose every output is on disk with its recorded size:
    one ``stat`` an output, no reading (synchronous: run it in a worker thread, once)."""
    return {
        r.key
        for r in records.values()
        if r.state is TaskState.DOWNLOADED
        and r.outputs
        and all(file_intact(out / o.path, o.bytes) for o in r.outputs)
    }


async def inline_output(out: Path, record: TaskRecord, index: int) -> str | None:
    """Output ``index`` of ``record`` as a ``data:`` URI, None if too big or not an image."""
    for output in record.outputs:
        if output.index == index and output.bytes <= INLINE_MAX_BYTES:
            content = await anyio.to_thread.run_sync((out / output.path).read_bytes)
            kind = sniff_image(content[:16])
            if kind:
                return data_uri(content, f"image/{kind}")
    return None
