"""``--only`` and ``--limit``: a part of a plan, chosen before the engine (docs/cli.md).

Like a shard (``plan/shard.py``), a selection is a view of the plan: the tasks not selected are
outside the plan for this run, neither created nor counted in any bucket (their rows in the
state DB and their entries in the lock file stay as they are).

``--only PATTERN`` (repeatable, or comma-separated): a pattern is a step id or an ``fnmatch``
glob of readable ids (``hero@product=mug*``; case-sensitive). A task is selected when a
pattern matches it or its parent is selected (a chain follows its parent); the ancestors of a
selected chained task come along too, since it edits their images (done ones are skipped, as
always), but not their other chained tasks. A pattern that matches nothing is refused (exit 2).

``--limit N``: the first N tasks in plan order (parents before children); a chained task only
when its parent is in. Chained tasks planned at run time (a parent's second image) follow the
same rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase

from flux_pipeline.errors import UsageError, did_you_mean
from flux_pipeline.plan.plan import Plan
from flux_pipeline.plan.tasks import TaskSpec


def parse_only(values: Iterable[str]) -> tuple[str, ...]:
    """``("a,b", "c")`` -> ``("a", "b", "c")``: every pattern once, in order. A readable id's
    own commas (``hero@product=mug,style=ink#1``) do not split it: a piece with ``=`` and no
    ``@`` continues the pattern before it (a step id has neither)."""
    found: list[str] = []
    for value in values:
        pieces: list[str] = []
        for part in value.split(","):
            piece = part.strip()
            if pieces and "=" in piece and "@" not in piece:
                pieces[-1] += "," + piece
            elif piece:
                pieces.append(piece)
        found += [p for p in pieces if p not in found]
    return tuple(dict.fromkeys(found))


class Matcher:
    """Step ids and readable-id globs; ``used`` records the patterns that matched."""

    def __init__(self, patterns: Sequence[str], steps: Sequence[str]) -> None:
        self.all_steps = list(steps)
        self.steps = {p for p in patterns if p in steps}
        self.globs = [p for p in patterns if p not in self.steps]
        self.used: set[str] = set(self.steps)

    def check(self, patterns: Sequence[str], flag: str) -> None:
        """``UsageError`` (exit 2) for the first of ``patterns`` that matched nothing."""
        unused = [p for p in patterns if p not in self.used]
        if unused:
            hint = did_you_mean(unused[0], self.all_steps)
            raise UsageError(
                f"{flag} {unused[0]!r} matches no step id and no task's readable id{hint} "
                f"(steps: {', '.join(self.all_steps)})"
            )

    def __call__(self, task: TaskSpec) -> bool:
        hit = task.step in self.steps
        for glob in self.globs:
            if fnmatchcase(task.readable_id, glob):
                self.used.add(glob)
                hit = True
        return hit


def check_patterns(plan: Plan, patterns: Sequence[str], flag: str) -> None:
    """``UsageError`` (exit 2) unless each of ``patterns`` matches a step or a planned task
    (the message ``select_only`` gives), without making the selection."""
    if not patterns:
        return
    matches = Matcher(patterns, plan.step_ids)
    for task in plan.tasks:
        matches(task)
    matches.check(patterns, flag)


def select_only(plan: Plan, patterns: Sequence[str]) -> Plan:
    """The tasks of ``plan`` that ``patterns`` select (module docstring). ``UsageError`` for a
    pattern that matches no step and no task."""
    if not patterns:
        return plan
    matches = Matcher(patterns, plan.step_ids)
    chosen: set[str] = set()  # matched, or a chained task of a chosen one
    parents: dict[str, str | None] = {}
    for task in plan.tasks:
        parents[task.key] = task.parent_key
        if matches(task) or (task.parent_key is not None and task.parent_key in chosen):
            chosen.add(task.key)
    matches.check(patterns, "--only")
    needed = set(chosen)
    for key in chosen:  # the ancestors a chosen chained task edits the images of
        parent = parents.get(key)
        while parent is not None and parent not in needed:
            needed.add(parent)
            parent = parents.get(parent)

    def keep(task: TaskSpec) -> bool:  # chained tasks planned at run time
        if task.key in needed:
            return True
        if matches(task) or (task.parent_key is not None and task.parent_key in chosen):
            chosen.add(task.key)
            needed.add(task.key)
            return True
        return False

    return plan.with_tasks((t for t in plan.tasks if t.key in needed), keep)


def select_limit(plan: Plan, limit: int | None) -> Plan:
    """The first ``limit`` tasks of ``plan`` in its order, a chained task only with its parent."""
    if limit is None:
        return plan
    kept: set[str] = set()
    for task in plan.tasks:
        if len(kept) >= limit:
            break
        if task.parent_key is None or task.parent_key in kept:
            kept.add(task.key)
    return plan.with_tasks((t for t in plan.tasks if t.key in kept), lambda t: t.key in kept)


def select(plan: Plan, only: Sequence[str] = (), limit: int | None = None) -> Plan:
    """``--only`` then ``--limit``; ``plan`` itself when neither is given."""
    return select_limit(select_only(plan, only), limit)


def selection_note(whole: Plan, part: Plan) -> str | None:
    """``"3 of 12 tasks selected"`` (None: everything is)."""
    if part is whole or len(part.tasks) == len(whole.tasks):
        return None
    return f"{len(part.tasks)} of {len(whole.tasks)} task(s) selected (--only/--limit)"
