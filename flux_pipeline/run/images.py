"""Where a request's images come from at submit time (docs/storage.md, docs/resume.md).

A planned request names a local reference file by its hash (``LOCAL_IMAGE_PREFIX``) and a
chained task's parent image by a placeholder (``flux_pipeline/plan/tasks.py``); an
``ImageSource`` turns them into what the API is sent, right before the create:

- ``InlineImages`` (no storage): a local file goes inline as a ``data:`` URI, a parent's
  result URL as it is, and a parent whose URL may have expired inline from disk;
- ``StoredImages`` (``storage:``): a local file as a presigned GET URL of its object (uploaded
  before the first create, ``run/storage_setup.py``), made at submit time and so renewed by
  every run; a stale parent's output is uploaded content-addressed and presigned the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from flux_pipeline.layout import read_inside
from flux_pipeline.media import sha256_bytes, sniff_image
from flux_pipeline.plan.imagesets import MAX_IMAGE_BYTES
from flux_pipeline.plan.plan import Plan
from flux_pipeline.plan.tasks import LOCAL_IMAGE_PREFIX, map_strings, resolve_request
from flux_pipeline.run.on_disk import INLINE_MAX_BYTES, inline_output
from flux_pipeline.run.storage import EXTENSION, MIME, ObjectStore, StorageError
from flux_pipeline.states import TaskRecord

STORED_PREFIX = "flux-pipeline:stored:"  # + an object key: presigned at submit time


class ImageSource(Protocol):
    async def resolve(self, request: dict[str, Any], parent_url: str | None) -> dict[str, Any]:
        """``request`` with its references replaced by what the API is sent."""
        ...

    async def parent(self, out: Path, record: TaskRecord, index: int) -> str | None:
        """What stands for output ``index`` of a parent whose result URL may have expired
        (None: keep the URL)."""
        ...


def local_hashes(request: dict[str, Any]) -> set[str]:
    """The hashes of the local reference files ``request`` names."""
    found: set[str] = set()

    def note(value: str) -> str:
        if value.startswith(LOCAL_IMAGE_PREFIX):
            found.add(value[len(LOCAL_IMAGE_PREFIX) :])
        return value

    map_strings(request, note)
    return found


class InlineImages:
    """No storage: local files and stale parents go inline as ``data:`` URIs."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan

    async def resolve(self, request: dict[str, Any], parent_url: str | None) -> dict[str, Any]:
        return resolve_request(
            request, parent_image_url=parent_url, local_image=self._plan.data_uri
        )

    async def parent(self, out: Path, record: TaskRecord, index: int) -> str | None:
        return await inline_output(out, record, index)


class StoredImages:
    """``storage:``: local files (uploaded before the first create, ``upload_references``)
    and stale parents (uploaded when needed) as presigned URLs, made at submit time."""

    def __init__(self, plan: Plan, objects: ObjectStore) -> None:
        self._plan = plan
        self._objects = objects
        self.references: dict[str, str] = {}  # sha256 of a local file -> its object key

    def reference_key(self, sha256: str) -> str:
        image = self._plan.local_images[sha256]
        extension = EXTENSION.get(image.mime.removeprefix("image/"), "bin")
        return self._objects.settings.ref_key(sha256, extension)

    async def upload_references(self) -> int:
        """Every local reference file of the plan in the bucket (once: existing objects are
        not written again), each read again and checked (hash, size, type) first. Before the
        first create: nothing is billed for a file that cannot be sent. The uploads made."""
        made = 0
        for sha in sorted(self._plan.local_images):
            key = self.reference_key(sha)
            uploaded = await self._objects.call(
                self._objects.put_once, key, lambda sha=sha: self._content(sha), self._mime(sha)
            )
            made += uploaded
            self.references[sha] = key
        return made

    def _mime(self, sha256: str) -> str:
        return self._plan.local_images[sha256].mime

    def _content(self, sha256: str) -> bytes:
        """The file's bytes, checked as the plan checked them (in a worker thread)."""
        image = self._plan.local_images[sha256]
        content = read_inside(image.root, image.path, MAX_IMAGE_BYTES)
        if isinstance(content, str):
            raise StorageError(f"cannot read the reference image {image.path}: {content}")
        if sha256_bytes(content) != sha256:
            raise StorageError(
                f"the reference image {image.path} changed since the plan was made; run again"
            )
        if sniff_image(content[:16]) is None:
            raise StorageError(f"the reference image {image.path} is not a JPG, PNG or WebP")
        return content

    async def resolve(self, request: dict[str, Any], parent_url: str | None) -> dict[str, Any]:
        hashes = local_hashes(request)
        keys = {sha: self.references.get(sha) or self.reference_key(sha) for sha in hashes}
        wanted = list(keys.values())
        stored = parent_url is not None and parent_url.startswith(STORED_PREFIX)
        if stored:
            assert parent_url is not None
            wanted.append(parent_url[len(STORED_PREFIX) :])
        if not wanted:
            return resolve_request(request, parent_image_url=parent_url, local_image=str)
        objects = self._objects
        urls = await objects.call(lambda: {key: objects.presign(key) for key in wanted})
        if stored:
            assert parent_url is not None
            parent_url = urls[parent_url[len(STORED_PREFIX) :]]
        return resolve_request(
            request, parent_image_url=parent_url, local_image=lambda sha: urls[keys[sha]]
        )

    async def parent(self, out: Path, record: TaskRecord, index: int) -> str | None:
        """The parent's output uploaded (content-addressed) as a reference image."""
        for output in record.outputs:
            if output.index != index or output.bytes > INLINE_MAX_BYTES:
                continue
            kind = (output.path.rsplit(".", 1)[-1] if "." in output.path else "").lower()
            extension = EXTENSION.get("jpeg" if kind == "jpg" else kind)
            if extension is None:
                return None
            key = self._objects.settings.ref_key(output.sha256, extension)

            def content(path: Path = out / output.path, sha: str = output.sha256) -> bytes:
                data = path.read_bytes()
                if sha256_bytes(data) != sha or sniff_image(data[:16]) is None:
                    raise StorageError(f"{path} is not the image the state DB recorded")
                return data

            try:
                await self._objects.call(self._objects.put_once, key, content, MIME[extension])
            except (StorageError, OSError):
                return await inline_output(out, record, index)
            return STORED_PREFIX + key
        return None
