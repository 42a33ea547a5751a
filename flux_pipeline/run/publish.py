"""Publishing (``--publish``, ``storage.publish``; docs/storage.md): every downloaded image and
the run's reports copied to the bucket, after the run.

An image goes to ``<prefix>/outputs/sha256/<hex>.<ext>``: content-addressed, so publishing is
idempotent (an object already there is not written again, and an output the lock already
names in the bucket is not even looked at), and two outputs with the same bytes are one
object. The lock records each output's object key (``report/lockfile.py``), from which a run
that lost its state DB and output directory restores the images (``run/adopt.py``
``restore_outputs``). The reports (report.json, report.md, index.html, junit.xml) and the
lock go to ``<prefix>/reports/<manifest name>/``, replaced at every publish.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import anyio

from flux_pipeline.media import sha256_bytes, sniff_image
from flux_pipeline.run.storage import EXTENSION, MIME, ObjectStore, StorageError
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

REPORT_FILES = {
    "report.json": "application/json",
    "report.md": "text/markdown; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
    "junit.xml": "application/xml",
}


def _extension(path: str) -> str | None:
    kind = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return EXTENSION.get("jpeg" if kind == "jpg" else kind)


def output_key(objects: ObjectStore, output: OutputRecord) -> str | None:
    extension = _extension(output.path)
    return None if extension is None else objects.settings.output_key(output.sha256, extension)


async def publish_outputs(
    objects: ObjectStore,
    records: Iterable[TaskRecord],
    out_dir: Path,
    known: Mapping[str, str],
) -> dict[str, str]:
    """Every output of the downloaded tasks in ``records`` in the bucket; ``known``: SHA-256 ->
    object key the lock names already (skipped). Returns SHA-256 -> object key of every
    output now in the bucket. A file gone since is left out; one that is not what the state DB
    recorded, or an upload that failed, raises ``StorageError`` once the others are done."""
    found: dict[str, str] = {}
    todo: dict[str, tuple[str, Path]] = {}
    for record in records:
        if record.state is not TaskState.DOWNLOADED:
            continue
        for output in record.outputs:
            key = output_key(objects, output)
            if key is None:
                continue
            if known.get(output.sha256) == key:
                found[output.sha256] = key
            else:
                todo.setdefault(output.sha256, (key, out_dir / output.path))

    async def one(sha: str, key: str, path: Path) -> None:
        def content() -> bytes:
            data = path.read_bytes()
            if sha256_bytes(data) != sha or sniff_image(data[:16]) is None:
                raise StorageError(f"{path} is not the image the state DB recorded")
            return data

        mime = MIME[key.rsplit(".", 1)[-1]]
        try:
            await objects.call(objects.put_once, key, content, mime)
        except OSError:  # gone since the run verified it: the next run downloads it again
            return
        except StorageError as exc:
            problems.append(exc)
            return
        found[sha] = key

    problems: list[StorageError] = []
    async with anyio.create_task_group() as tg:
        for sha, (key, path) in todo.items():
            tg.start_soon(one, sha, key, path)
    if problems:
        raise problems[0]
    return found


async def publish_reports(
    objects: ObjectStore, out_dir: Path, manifest: str, lock: Path | None
) -> int:
    """The report files in ``out_dir`` (and the lock) in the bucket; the number written."""
    files = [(out_dir / name, mime) for name, mime in REPORT_FILES.items()]
    if lock is not None:
        files.append((lock, "application/json"))
    written = 0
    for path, mime in files:
        try:
            content = await anyio.to_thread.run_sync(path.read_bytes)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from None
        key = objects.settings.report_key(manifest, path.name)
        await objects.call(objects.put, key, content, mime)
        written += 1
    return written
