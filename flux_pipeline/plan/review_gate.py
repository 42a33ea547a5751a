"""The review gate (docs/manifest.md#from-only): which chained tasks the review decisions admit.

A chained step with ``from: {step: P, only: picked}`` gets tasks only for the parents whose
decision (in the review file, ``report/reviewfile.py``) is ``picked``; with
``only: not-rejected`` for every parent but the rejected ones. The other parents are *held
for review*: their chained tasks of that step are not planned at all (neither failed nor
counted in the outcome buckets) until a decision admits them, and a held task's own chains go
with it. ``apply_review`` filters the plan's tasks and adds a ``keep`` to the plan, so the
chained tasks planned at run time (a parent's second image, ``Plan.children``) follow the same
rule. The gate is a pure function of the manifest and the decisions: ``plan`` and ``run`` see
the same tasks.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from flux_pipeline.plan.tasks import TaskSpec

if TYPE_CHECKING:
    from flux_pipeline.plan.plan import Plan

PICKED, REJECTED = "picked", "rejected"
DECISIONS = (PICKED, REJECTED)  # what a review file records for a task


def admits(only: str, decision: str | None) -> bool:
    """Does a parent with ``decision`` (None: undecided) get the chained tasks of a step
    with ``from.only`` = ``only``?"""
    if only == PICKED:
        return decision == PICKED
    return decision != REJECTED  # not-rejected: undecided parents are chained too


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewGate:
    """The decisions a plan was made with, and what they held back."""

    decisions: Mapping[str, str] = field(default_factory=dict)  # task key -> picked|rejected
    held: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # step -> parent keys
    admitted: Mapping[str, int] = field(default_factory=dict)  # step -> tasks planned
    parent_steps: tuple[str, ...] = ()  # the steps gated steps chain from

    def held_count(self, step: str, done: set[str] | None = None) -> int:
        """Parents whose chained tasks of ``step`` are held (only those in ``done``)."""
        parents = self.held.get(step, ())
        return len(parents) if done is None else sum(1 for key in parents if key in done)


def apply_review(plan: Plan, decisions: Mapping[str, str]) -> Plan:
    """``plan`` with the chained tasks of gated steps (``Plan.gates``) that ``decisions``
    do not admit left out, and the gate recorded (``Plan.review``)."""
    gates = dict(plan.gates)
    decided = MappingProxyType(dict(decisions))
    dropped: set[str] = set()
    held: dict[str, dict[str, None]] = {}
    admitted: Counter[str] = Counter()
    kept: list[TaskSpec] = []
    step_of: dict[str, str] = {}
    parent_steps: dict[str, None] = {}
    for task in plan.tasks:
        step_of[task.key] = task.step
        parent = task.parent_key
        if parent is not None and parent in dropped:
            dropped.add(task.key)
            continue
        only = gates.get(task.step)
        if only is not None and parent is not None:
            parent_steps[step_of.get(parent, "")] = None
            if not admits(only, decided.get(parent)):
                dropped.add(task.key)
                held.setdefault(task.step, {})[parent] = None
                continue
            admitted[task.step] += 1
        kept.append(task)
    gate = ReviewGate(
        decisions=decided,
        held=MappingProxyType({step: tuple(keys) for step, keys in held.items()}),
        admitted=MappingProxyType(dict(admitted)),
        parent_steps=tuple(step for step in plan.step_ids if step in parent_steps),
    )

    def keep(child: TaskSpec) -> bool:
        only = gates.get(child.step)
        return only is None or admits(only, decided.get(child.parent_key or ""))

    gated = plan.with_tasks(kept, keep if gates else None)
    return dataclasses.replace(gated, review=gate)
