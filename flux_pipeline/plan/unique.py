"""What must be unique across a plan's tasks: readable ids, keys, outputs (case-folded), the
output tree (plan/outputs.py), and the plan's size (``MAX_PLAN_CHARS`` in plan/expand.py).

``Uniqueness.admit`` is the one rule both planning paths apply, task by task in plan order;
the first task with a value wins and the messages name it. The materialised plan
(``load_plan``) checks exactly: every value is kept. The streamed plan (plan/stream.py) keeps
exact values only for the ``suspects``: the 8-byte digests (``digest``) that a previous pass
saw more than once; any other value is unique by its digest alone, and its digest is all that
is kept (``Digests``). A pass is exact when the digests it saw repeat only among its suspects
(``Digests.repeated``): otherwise the stream checks again with the new suspects, so a digest
that repeats for different values never makes an error, and a real repeat always does.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from itertools import pairwise

from flux_pipeline.manifest.yamlload import Path_
from flux_pipeline.plan.outputs import OutputTree
from flux_pipeline.plan.problems import Failed, Problems
from flux_pipeline.plan.steps import CompiledStep
from flux_pipeline.plan.tasks import TaskSpec

KINDS = ("id", "key", "output", "file", "dir")
"""What is digested: readable ids, keys, case-folded outputs, and the output tree's files and
directories (a file named like a directory is a clash, plan/outputs.py)."""

Suspects = Mapping[str, frozenset[int]]
NO_SUSPECTS: Suspects = {kind: frozenset() for kind in KINDS}


def digest(text: str) -> int:
    """An 8-byte digest of ``text``: equal texts have equal digests within one process."""
    return hash(text)


class Digests:
    """The digests of every value one pass checked, by kind: 8 bytes each, and directories
    once each (many outputs share one)."""

    def __init__(self) -> None:
        self.seen: dict[str, array[int]] = {kind: array("q") for kind in KINDS[:4]}
        self.dirs: set[int] = set()

    def add(self, kind: str, value: int) -> None:
        if kind == "dir":
            self.dirs.add(value)
        else:
            self.seen[kind].append(value)

    def repeated(self) -> dict[str, frozenset[int]]:
        """The digests that may stand for one value checked twice: seen twice for ids, keys and
        outputs; seen both as a file and as a directory for the output tree."""
        found = {kind: _twice(self.seen[kind]) for kind in ("id", "key", "output")}
        dirs = self.dirs
        both = frozenset(d for d in self.seen["file"] if d in dirs)
        return {**found, "file": both, "dir": both}


def _twice(values: array[int]) -> frozenset[int]:
    ordered = sorted(values)
    return frozenset(a for a, b in pairwise(ordered) if a == b)


def covered(found: Suspects, suspects: Suspects) -> bool:
    """Are all the repeated digests ``found`` among ``suspects``?"""
    return all(found[kind] <= suspects[kind] for kind in KINDS)


def union(a: Suspects, b: Suspects) -> dict[str, frozenset[int]]:
    return {kind: a[kind] | b[kind] for kind in KINDS}


class Uniqueness:
    """The uniqueness checks of one planning pass (``admit``: the renderer's callback).

    ``key_owner(key)``: the readable id of the task admitted with ``key`` (the materialised
    plan looks it up in its records); without it, the keys are kept here. ``suspects``: check
    with digests (``digests`` collects them), keeping exact values only for these; None:
    exact."""

    def __init__(
        self,
        problems: Problems,
        *,
        max_chars: int,
        key_owner: Callable[[str], str | None] | None = None,
        suspects: Suspects | None = None,
    ) -> None:
        self.problems = problems
        self.max_chars = max_chars
        self.chars = 0  # the size of the plan so far (MAX_PLAN_CHARS)
        self.suspects = suspects
        self.digests = Digests()
        self._key_owner = key_owner
        self.rids: set[str] = set()
        self.keys: dict[str, str] = {}  # key -> readable id (without ``key_owner``)
        self.outputs: dict[str, str] = {}  # casefolded output -> readable id
        self.tree = OutputTree(keep=self._keep if suspects is not None else None)
        self._collisions: set[tuple[str, str]] = set()

    def _keep(self, kind: str, value: str) -> bool:
        """Must ``value`` be kept exactly? Always when exact; else when its digest is suspect
        (and its digest is collected)."""
        if self.suspects is None:
            return True
        d = digest(value)
        self.digests.add(kind, d)
        return d in self.suspects[kind]

    def _collision(self, step: CompiledStep, kind: str, at: Path_, message: str) -> Failed:
        if (step.id, kind) not in self._collisions:
            self._collisions.add((step.id, kind))
            self.problems.report(at, message)
        return Failed()

    def admit(self, step: CompiledStep, spec: TaskSpec) -> TaskSpec:
        """``spec`` if its readable id, key and output (case-folded) are new; else ``Failed``."""
        readable_id, key = spec.readable_id, spec.key
        self.chars += len(spec.request_json) + len(readable_id) + len(spec.output)
        if self.chars > self.max_chars:
            raise self._collision(
                step,
                "size",
                step.at,
                f"the plan would hold more than {self.max_chars} characters of requests "
                f"(at task {readable_id!r}): fewer tasks or shorter prompts",
            )
        if self._keep("id", readable_id):
            if readable_id in self.rids:
                raise self._collision(
                    step, "id", step.at, f"two tasks have the readable id {readable_id!r}"
                )
            self.rids.add(readable_id)
        keep_key = self._keep("key", key)
        if keep_key:
            other = self._key_owner(key) if self._key_owner else self.keys.get(key)
            if other is not None:
                raise self._collision(
                    step,
                    "key",
                    step.at,
                    f"tasks {other!r} and {readable_id!r} would send the same "
                    "request (does the prompt use every matrix axis?)",
                )
        folded = spec.output.casefold()
        keep_output = self._keep("output", folded)
        first = self.outputs.get(folded) if keep_output else None
        if first is not None:
            at = step.output.at if step.output is not None else step.at
            raise self._collision(
                step,
                "output",
                at,
                f"output path {spec.output!r} of task {readable_id!r} collides with task {first!r}",
            )
        clash = self.tree.add(spec.output, spec.extension, readable_id)
        if clash is not None:
            at = step.output.at if step.output is not None else step.at
            raise self._collision(step, "tree", at, clash)
        if keep_output:
            self.outputs[folded] = readable_id
        if keep_key and self._key_owner is None:
            self.keys[key] = readable_id
        return spec
