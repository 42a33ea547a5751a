"""What the engine reads of the output files, always in a worker thread (the event loop
never waits on the disk): which downloaded tasks are still intact, and a parent image to
send inline when its result URL is too old (docs/resume.md)."""

from __future__ import annotations

from pathlib import Path

import anyio

from flux_pipeline.media import sniff_image
from flux_pipeline.plan.tasks import data_uri
from flux_pipeline.run.state_store import StateStore
from flux_pipeline.run.verify import Hasher, verify_downloaded
from flux_pipeline.states import TaskRecord

INLINE_MAX_BYTES = 10 * 1024 * 1024  # a parent image larger than this keeps its URL


async def intact_keys(
    records: dict[str, TaskRecord], out: Path, store: StateStore, *, hasher: Hasher | None = None
) -> set[str]:
    """Keys of the downloaded tasks that are done (flux_pipeline/run/verify.py): one worker
    thread call for the whole run, one ``stat`` an output whose memo holds, a hash otherwise.
    The memos of the files hashed and found right are queued in one batch."""
    found = await anyio.to_thread.run_sync(
        lambda: verify_downloaded(records.values(), out, hasher=hasher)
    )
    if found.memos:
        store.refresh_memos(found.memos)
    return found.intact


async def inline_output(out: Path, record: TaskRecord, index: int) -> str | None:
    """Output ``index`` of ``record`` as a ``data:`` URI, None if too big or not an image."""
    for output in record.outputs:
        if output.index == index and output.bytes <= INLINE_MAX_BYTES:
            content = await anyio.to_thread.run_sync((out / output.path).read_bytes)
            kind = sniff_image(content[:16])
            if kind:
                return data_uri(content, f"image/{kind}")
    return None
