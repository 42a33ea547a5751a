"""``--shard I/N``: a deterministic partition of a plan, by the key of each chain's root task.

A root task (no parent) belongs to shard ``int(key[:16], 16) % N + 1``; every chained task
belongs to its root's shard, so a chain never spans two shards and a parent's outputs are on
the machine that edits them. The shard of a task depends only on its root's key: adding tasks
to a manifest never moves the existing ones (as long as N stays the same), shards are disjoint,
and together they are the whole plan. Chained tasks planned at run time (a parent that returned
several images, ``Plan.children(parent, i)``) follow their parent, which is in the shard.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.tasks import TaskSpec

GITHUB_MAX_JOBS = 256  # jobs a GitHub Actions matrix may generate
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``: shard 2 of 3, 1-based. Raises ``ValueError`` (one line)."""
    match = _SHARD.match(text)
    if match is None:
        raise ValueError(f"a shard is I/N, e.g. 2/3 (shard 2 of 3), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ValueError(f"the shard count must be at least 1, got {text!r}")
    if not 1 <= index <= count:
        raise ValueError(f"the shard index must be within 1..{count}, got {text!r}")
    return index, count


def shard_label(shard: tuple[int, int]) -> str:
    """``(2, 3)`` -> ``"2of3"``: usable in file, artifact and cache key names."""
    return f"{shard[0]}of{shard[1]}"


def shard_of(root_key: str, count: int) -> int:
    """The 1-based shard of a chain whose root task has ``root_key`` (a SHA-256 hex digest)."""
    return int(root_key[:16], 16) % count + 1


def partition(tasks: Iterable[TaskSpec], index: int, count: int) -> Iterator[TaskSpec]:
    """The tasks of shard ``index`` of ``count``, in their order. ``tasks`` lists parents
    before their children (as ``Plan.tasks`` does); a child whose parent is not listed is
    kept with nobody."""
    kept: set[str] = set()
    for task in tasks:
        if task.parent_key is None:
            keep = shard_of(task.key, count) == index
        else:
            keep = task.parent_key in kept
        if keep:
            kept.add(task.key)
            yield task


def select(plan: Plan, index: int, count: int) -> Plan:
    """A view of ``plan`` with only shard ``index`` of ``count``; ``plan`` is not changed."""
    if count == 1:
        return plan
    return plan.with_tasks(partition(plan.tasks, index, count))


def root_count(plan: Plan) -> int:
    return sum(1 for task in plan.tasks if task.parent_key is None)


def gha_matrix(plan: Plan, max_shards: int) -> dict[str, Any]:
    """The ``strategy.matrix`` a workflow feeds to ``fromJSON()``: one job per shard.

    N = min(max_shards, number of root tasks, 256), at least 1. Each entry has ``shard``
    (for ``--shard``) and ``label`` (``1of3``: artifact and cache key names cannot hold ``/``).
    """
    count = max(1, min(max_shards, root_count(plan), GITHUB_MAX_JOBS))
    return {
        "include": [
            {"shard": f"{i}/{count}", "label": shard_label((i, count))} for i in range(1, count + 1)
        ]
    }
