"""The cost of tasks before they are sent (docs/manifest.md#pricing).

A task's mode is its request's ``input.mode`` (``pro`` when it has none: the API's default).
With the manifest's ``pricing`` section, a set of tasks costs the sum of its tasks' prices;
without it, the counts per mode are all there is to show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from flux_pipeline.manifest.models import Pricing
from flux_pipeline.plan.plan import Plan
from flux_pipeline.plan.resume import Action, Policy, decide, urls_expired
from flux_pipeline.plan.steps import CompiledStep
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.states import TaskRecord

DEFAULT_MODE = "pro"


def mode_of(task: TaskSpec) -> str:
    """``input.mode`` of ``task``'s request, ``pro`` when unset."""
    return _mode(task.request.get("input", {}).get("mode"))


def _mode(value: object) -> str:
    return value if isinstance(value, str) and value else DEFAULT_MODE


def step_mode(step: CompiledStep) -> str | None:
    """The ``mode_of`` every task of ``step`` has, without parsing a request: None when a
    template gives ``mode`` per task (plan/render.py starts each task's input from the step's
    ``static_input`` and renders only the templated fields over it)."""
    if any(key == "mode" for key, _, _ in step.templated_input):
        return None
    return _mode(step.static_input.get("mode"))


def by_mode(tasks: Iterable[TaskSpec]) -> dict[str, int]:
    """Tasks per mode, modes sorted."""
    counts = Counter(mode_of(task) for task in tasks)
    return dict(sorted(counts.items()))


def price_of(pricing: Pricing, mode: str) -> float:
    """One task of ``mode``; a mode the section does not price costs 0."""
    prices = {str(m): float(p) for m, p in pricing.per_task.items()}
    return prices.get(mode, 0.0)


def total(pricing: Pricing, counts: Mapping[str, int]) -> float:
    return sum(price_of(pricing, mode) * count for mode, count in counts.items())


def money(amount: float, pricing: Pricing) -> str:
    return f"{amount:.4f}".rstrip("0").rstrip(".") + f" {pricing.currency}"


def describe(counts: Mapping[str, int], pricing: Pricing | None) -> str:
    """``"3 task(s) (pro 2, max 1): 0.16 USD"``, or without pricing ``"3 task(s) (pro 2,
    max 1; no pricing in the manifest)"``."""
    count = sum(counts.values())
    modes = ", ".join(f"{mode} {n}" for mode, n in counts.items())
    if pricing is None:
        return f"{count} task(s)" + (f" ({modes}; no pricing in the manifest)" if modes else "")
    return (
        f"{count} task(s)"
        + (f" ({modes})" if modes else "")
        + ": "
        + money(total(pricing, counts), pricing)
    )


def cost_json(counts: Mapping[str, int], pricing: Pricing | None) -> dict[str, object]:
    """``{"tasks": 3, "by_mode": {...}, "currency": ..., "total": ...}`` (no pricing: the
    counts only, ``currency`` and ``total`` null)."""
    return {
        "tasks": sum(counts.values()),
        "by_mode": dict(counts),
        "currency": pricing.currency if pricing else None,
        "total": round(total(pricing, counts), 6) if pricing else None,
    }


def would_create(
    plan: Plan, records: Mapping[str, TaskRecord], policy: Policy, now: float
) -> dict[str, int]:
    """Per mode, the tasks of ``plan`` a run would create (new, or waiting for a parent) by
    the resume rule (plan/resume.py), taking downloaded outputs as intact; the chained tasks
    of a held parent (failed, ambiguous, expired, left by the policy) are blocked, not created."""
    paying = []
    held: set[str] = set()  # the policy leaves them: their chained tasks are blocked
    for task in plan.tasks:
        record = records.get(task.key)
        decision = decide(
            record.state if record else None,
            parent_held=task.parent_key is not None and task.parent_key in held,
            policy=policy,
            urls_expired=record is not None and urls_expired(record.finished_at, now),
        )
        if decision.action in (Action.SUBMIT, Action.WAIT):
            paying.append(task)
        elif decision.action is Action.HOLD:
            held.add(task.key)
    return by_mode(paying)


class CostCap:
    """``run --max-cost``: the prices by mode and the cap (``pricing``'s currency)."""

    def __init__(self, pricing: Pricing, cap: float) -> None:
        self.pricing = pricing
        self.cap = cap

    def price(self, task: TaskSpec) -> float:
        return price_of(self.pricing, mode_of(task))

    def stop_line(self, spent: float, task: TaskSpec) -> str:
        return (
            f"--max-cost {money(self.cap, self.pricing)} reached: "
            f"{money(spent, self.pricing)} created so far, the next task "
            f"({task.readable_id}) costs {money(self.price(task), self.pricing)}"
        )
