"""What the review decisions amount to, for ``plan``, ``report.json`` and ``report.md``
(docs/reports.md#review-counts): per step the tasks picked, rejected and undecided; per gated
step (``from.only``, plan/review_gate.py) the tasks its parents' decisions admit and the
parents held for review; the decisions for tasks the plan no longer has (orphaned: kept in the
file, never an error).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flux_pipeline.plan.plan import Plan
from flux_pipeline.plan.review_gate import PICKED, REJECTED
from flux_pipeline.plan.tasks import TaskSpec

UNDECIDED = "undecided"
MAX_SHOWN = 10


@dataclass(frozen=True, slots=True)
class ReviewSummary:
    steps: dict[str, dict[str, int]]  # step -> {picked, rejected, undecided, held?, admitted?}
    orphaned: tuple[str, ...]  # keys of decisions for tasks not planned, sorted
    sha256: str  # of the decisions: a report made with other decisions is not current
    reviewed: tuple[str, ...] = ()  # the steps whose decisions count in ``totals``

    def totals(self) -> dict[str, int]:
        """Over the steps gated steps chain from (``reviewed``), else every step."""
        steps = self.reviewed or tuple(self.steps)
        return {
            what: sum(self.steps[step][what] for step in steps if step in self.steps)
            for what in (PICKED, REJECTED, UNDECIDED)
        }

    def to_json(self) -> dict[str, object]:
        return {"steps": self.steps, "orphaned": len(self.orphaned), "sha256": self.sha256}


def decisions_sha256(decisions: Mapping[str, str]) -> str:
    text = json.dumps(dict(decisions), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def planned_keys(plan: Plan, outputs: Mapping[str, int]) -> set[str]:
    """Keys of the plan's tasks and of the chained tasks planned at run time for the other
    outputs of parents (``outputs``: key -> images the task returned)."""
    keys: set[str] = set()
    stack: list[TaskSpec] = [task for task in plan.tasks if task.parent_key is None]
    while stack:
        task = stack.pop()
        if task.key in keys:
            continue
        keys.add(task.key)
        for index in range(max(1, outputs.get(task.key, 0))):
            stack.extend(plan.children(task, index))
    return keys


def summarize(plan: Plan, tasks: Iterable[tuple[str, str]]) -> ReviewSummary | None:
    """The summary over ``tasks`` ((key, step) of every task planned), None without a review
    (``Plan.review``: no review file and no gated step)."""
    gate = plan.review
    if gate is None:
        return None
    steps = {step: {PICKED: 0, REJECTED: 0, UNDECIDED: 0} for step in plan.step_ids}
    seen: set[str] = set()
    for key, step in tasks:
        seen.add(key)
        counts = steps.setdefault(step, {PICKED: 0, REJECTED: 0, UNDECIDED: 0})
        counts[gate.decisions.get(key, UNDECIDED)] += 1
    for step in plan.gates:
        if step in steps:
            steps[step]["admitted"] = gate.admitted.get(step, 0)
            steps[step]["held"] = gate.held_count(step)
    orphaned = tuple(sorted(key for key in gate.decisions if key not in seen))
    return ReviewSummary(steps, orphaned, decisions_sha256(gate.decisions), gate.parent_steps)


def summary_lines(plan: Plan, summary: ReviewSummary, ids: Mapping[str, str]) -> list[str]:
    """The summary for a person: one line for the whole, one per gated step, one for the
    orphaned decisions (``ids``: key -> readable id, from the review file)."""
    totals = summary.totals()
    of = f" (step {', '.join(summary.reviewed)})" if summary.reviewed else ""
    lines = [
        f"review: {totals[PICKED]} picked, {totals[REJECTED]} rejected, "
        f"{totals[UNDECIDED]} undecided{of}"
    ]
    for step, only in plan.gates.items():
        counts = summary.steps.get(step, {})
        admitted, held = counts.get("admitted", 0), counts.get("held", 0)
        lines.append(
            f"review: step {step}: {admitted} task{'s' * (admitted != 1)} from {only} "
            f"parents, {held} parent{'s' * (held != 1)} held for review"
        )
    if summary.orphaned:
        n = len(summary.orphaned)
        shown = ", ".join(ids.get(key, key[:12]) for key in summary.orphaned[:MAX_SHOWN])
        more = f" and {n - MAX_SHOWN} more" if n > MAX_SHOWN else ""
        lines.append(
            f"review: {n} decision{'s' * (n != 1)} for tasks no longer planned (kept in the "
            f"file): {shown}{more}"
        )
    return lines
