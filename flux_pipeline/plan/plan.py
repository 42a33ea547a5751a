"""``Plan``: the expanded manifest, what ``plan`` shows and ``run`` executes. Immutable.

A plan lists its tasks parents first: every root task, and the chained tasks of output 0 of
every parent (docs/keys.md). The chained tasks of a parent's other outputs are planned at run
time by its ``ChildPlanner`` (``Plan.children``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from flux_pipeline.errors import Diagnostic, ManifestError
from flux_pipeline.layout import read_inside
from flux_pipeline.manifest.models import Pricing, Storage
from flux_pipeline.media import sha256_bytes
from flux_pipeline.plan.children import ChildPlanner
from flux_pipeline.plan.imagesets import MAX_IMAGE_BYTES, LocalImage
from flux_pipeline.plan.review_gate import ReviewGate
from flux_pipeline.plan.tasks import TaskSpec, data_uri


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The tasks of a manifest and what is needed to run and report them."""

    name: str  # the manifest's ``name``
    manifest_path: Path
    manifest_sha256: str
    tasks: tuple[TaskSpec, ...]  # parents before their children
    step_order: tuple[str, ...]  # step ids in manifest order
    step_locations: Mapping[str, tuple[int, int]]  # step id -> (line, column) in the manifest
    local_images: Mapping[str, LocalImage]  # sha256 -> a reference file sent inline
    planner: ChildPlanner = dataclasses.field(repr=False, compare=False)
    # located warnings (values outside the API values table); errors with --strict
    warnings: tuple[Diagnostic, ...] = ()
    # a selection (plan/selection.py): which chained tasks planned at run time stay in
    keep: Callable[[TaskSpec], bool] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )
    pricing: Pricing | None = None  # the manifest's pricing section (plan/cost.py)
    # base key -> generation of the tasks deliberately regenerated (plan/generations.py)
    generations: Mapping[str, int] = dataclasses.field(default_factory=dict)
    storage: Storage | None = None  # the manifest's storage section (docs/storage.md)
    # chained step id -> its ``from.only`` (plan/review_gate.py); steps without it absent
    gates: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # the review file's decisions applied (plan/review_gate.py); None: no review file
    review: ReviewGate | None = None

    @property
    def step_ids(self) -> list[str]:
        """Step ids in manifest order."""
        return list(self.step_order)

    def step_location(self, step_id: str) -> tuple[int, int]:
        """(line, column) of the step in the manifest, for annotations."""
        return self.step_locations[step_id]

    def data_uri(self, sha256: str) -> str:
        """The ``data:`` URI of a local reference image (checked against its hash)."""
        return _data_uri(self.local_images[sha256])

    def children(self, parent: TaskSpec, output_index: int) -> list[TaskSpec]:
        """Chained tasks editing output ``output_index`` of ``parent`` (``ChildPlanner``)."""
        children = self.planner.children(parent, output_index)
        return children if self.keep is None else [c for c in children if self.keep(c)]

    def with_tasks(
        self, tasks: Iterable[TaskSpec], keep: Callable[[TaskSpec], bool] | None = None
    ) -> Plan:
        """The same plan with only ``tasks`` (a shard, a selection); children are planned as
        before, those ``keep`` refuses left out."""
        if keep is None:
            return dataclasses.replace(self, tasks=tuple(tasks))
        old = self.keep
        both = keep if old is None else (lambda task: old(task) and keep(task))
        return dataclasses.replace(self, tasks=tuple(tasks), keep=both)


@functools.lru_cache(maxsize=8)
def _data_uri(image: LocalImage) -> str:
    content = read_inside(image.root, image.path, MAX_IMAGE_BYTES)
    if isinstance(content, str):
        message = f"cannot read the reference image: {content}"
        diagnostic = Diagnostic(file=str(image.path), line=0, column=0, message=message)
        raise ManifestError([diagnostic])
    if sha256_bytes(content) != image.sha256:
        message = "the reference image changed since the plan was made; plan again"
        raise ManifestError([Diagnostic(file=str(image.path), line=0, column=0, message=message)])
    return data_uri(content, image.mime)
