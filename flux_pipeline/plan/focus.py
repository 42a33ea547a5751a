"""What one ``plan`` or ``run`` works on, once the recorded state is known: the tasks at
their recorded generations, ``--regenerate`` applied (plan/generations.py), then ``--only``
and ``--limit`` (plan/selection.py), then the review gate (plan/review_gate.py). ``run``
(run/runner.py) and ``plan`` (cli/manifest_cmds.py) call the same ``focus``, so the plan shows
what the run will do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from flux_pipeline.plan import generations, selection
from flux_pipeline.plan.plan import Plan
from flux_pipeline.plan.review_gate import REJECTED, apply_review
from flux_pipeline.states import TaskRecord

SHOWN = 10  # tasks named in a note; the rest are counted


@dataclass(frozen=True, slots=True)
class Focus:
    plan: Plan
    notes: tuple[str, ...]  # for a person: what --regenerate, --only, --limit did


def _named(tasks: Sequence[str]) -> str:
    shown = ", ".join(tasks[:SHOWN])
    return shown + (f" and {len(tasks) - SHOWN} more" if len(tasks) > SHOWN else "")


def regeneration_notes(r: generations.Regeneration) -> list[str]:
    notes = []
    if r.started:
        named = _named([f"{t.readable_id} (generation {t.generation})" for t in r.started])
        notes.append(
            f"--regenerate: {len(r.started)} task(s) to a new generation, their chained tasks "
            f"with them; each old image stays until its new one is downloaded: {named}"
        )
    if r.resumed:
        named = _named([f"{t.readable_id} (generation {t.generation})" for t in r.resumed])
        notes.append(
            f"--regenerate: {len(r.resumed)} regeneration(s) already started and not "
            f"finished: resumed, not started again: {named}"
        )
    if r.unfinished:
        named = _named([t.readable_id for t in r.unfinished])
        notes.append(
            f"--regenerate: {len(r.unfinished)} task(s) never finished a first generation: "
            f"they run as planned: {named}"
        )
    return notes


def focus(
    plan: Plan,
    records: Mapping[str, TaskRecord],
    *,
    regenerate: Sequence[str] = (),
    only: Sequence[str] = (),
    limit: int | None = None,
    decisions: Mapping[str, str] | None = None,
    regenerate_rejected: bool = False,
) -> Focus:
    """``plan`` (at its recorded generations: ``generations.with_generations``) with
    ``--regenerate``, then ``--only``/``--limit``, then the review file's ``decisions`` (task
    key -> picked/rejected; None: no review file) applied to the steps with ``from.only``
    (plan/review_gate.py); ``regenerate_rejected``: the tasks the decisions reject are
    regenerated too (a new key: the new image is undecided). ``UsageError`` for a pattern that
    matches nothing."""
    notes: list[str] = []
    rejected = {k for k, d in (decisions or {}).items() if d == REJECTED}
    if regenerate_rejected and not rejected:
        notes.append("--regenerate-rejected: the review file rejects no task")
    if regenerate or (regenerate_rejected and rejected):
        moved = generations.regenerate(
            plan, regenerate, records, rejected if regenerate_rejected else ()
        )
        plan = moved.plan
        notes += regeneration_notes(moved)
    whole = plan
    plan = selection.select(plan, only, limit)
    if note := selection.selection_note(whole, plan):
        notes.append(note)
    if decisions is not None or plan.gates:  # on the final keys: a decision names a key
        plan = apply_review(plan, decisions or {})
    return Focus(plan, tuple(notes))
