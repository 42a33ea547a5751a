"""A run's storage, from start to end (docs/storage.md): before the first create the bucket is
checked (reachable, writable) and the local reference images uploaded; adopted outputs the
output directory lacks are restored from it; after the run the outputs and reports are
published when asked. ``run/runner.py`` calls these steps; boto3 is behind
``run/storage.py``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flux_pipeline.plan.expand import Plan
from flux_pipeline.report.lockfile import Lock
from flux_pipeline.run.adopt import restore_outputs
from flux_pipeline.run.images import StoredImages
from flux_pipeline.run.lock_keeper import LockKeeper
from flux_pipeline.run.publish import publish_outputs, publish_reports
from flux_pipeline.run.storage import ObjectStore, StorageError, StorageSettings
from flux_pipeline.run.store import Store
from flux_pipeline.states import TaskRecord


@dataclass(kw_only=True)
class StorageRun:
    objects: ObjectStore
    images: StoredImages
    echo: Callable[[str], None]
    failed: StorageError | None = None  # publishing the outputs failed (raised at the end)

    @classmethod
    async def start(
        cls, settings: StorageSettings, plan: Plan, echo: Callable[[str], None]
    ) -> StorageRun:
        """Connect, check the bucket can be written, upload the plan's local reference
        images (those already there are not written again). Raises ``StorageError`` (exit 2)
        before anything is created."""
        objects = await ObjectStore.connect(settings)
        try:
            await objects.call(objects.check_writable)
        except StorageError as exc:
            raise StorageError(f"storage {settings.where} is not writable: {exc}") from None
        images = StoredImages(plan, objects)
        uploaded = await images.upload_references()
        count = len(plan.local_images)
        if count:
            echo(
                f"flux-pipeline: {count} reference image(s) in {settings.where} "
                f"({uploaded} uploaded now)"
            )
        return cls(objects=objects, images=images, echo=echo)

    @property
    def publishing(self) -> bool:
        return self.objects.settings.publish

    async def restore(self, records: dict[str, TaskRecord], lock: Lock | None, out: Path) -> None:
        restored = await restore_outputs(self.objects, records, lock, out)
        if restored:
            where = self.objects.settings.where
            self.echo(f"flux-pipeline: restored {restored} output(s) from {where}")

    async def publish_outputs(
        self, store: Store, out: Path, keeper: LockKeeper | None, lock: Lock | None
    ) -> None:
        """Every downloaded output in the bucket; the lock (``keeper``) learns where."""
        old = lock if keeper is None else keeper.old
        known = {
            o.sha256: o.stored
            for entry in (old.entries.values() if old is not None else ())
            for o in entry.outputs
            if o.stored
        }
        await store.flush_and_wait()
        records = await store.records()
        before = self.objects.uploaded
        try:
            found = await publish_outputs(self.objects, records.values(), out, known)
        except StorageError as exc:  # the reports are still written, then the run fails
            self.failed = exc
            return
        if keeper is not None:
            keeper.add_objects(found)
        fresh = self.objects.uploaded - before
        self.echo(
            f"flux-pipeline: published {len(found)} output(s) to {self.objects.settings.where}"
            f" ({fresh} new)"
        )

    async def publish_reports(self, out: Path, manifest: str, lock_path: Path | None) -> None:
        """The reports and the lock in the bucket; raises the outputs' failure first, if any
        (``StorageError``, exit 2: a rerun publishes what is missing)."""
        if self.failed is not None:
            raise self.failed
        await publish_reports(self.objects, out, manifest, lock_path)
