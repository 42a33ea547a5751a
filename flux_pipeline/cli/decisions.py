"""What ``plan`` says would happen to each task: the resume rule (flux_pipeline/plan/resume.py)
over what the state DB knows of it, and whether its files are intact by the rule ``run`` uses
(flux_pipeline/run/verify.py). ``Decider`` takes the tasks one at a time, in plan order, so a
streamed plan (cli/plan_stream.py) and a materialised one (``decide_all``) decide alike."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from flux_pipeline.plan.plan import Plan
from flux_pipeline.plan.resume import Action, Decision, Policy, Reason, decide, urls_expired
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.verify import Verifier
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

PAY = (Action.SUBMIT, Action.WAIT)  # created by a run: new, and waiting for a parent


@dataclass(frozen=True, slots=True)
class StoredTask:
    """What the state DB knows of one task, as far as ``plan`` needs it."""

    state: TaskState
    outputs: tuple[OutputRecord, ...] = ()  # files written (paths relative to the output dir)
    finished_at: float | None = None  # result URLs expire 15 days after


def load_states(state_path: Path) -> Mapping[str, StoredTask]:
    """Stored task states by key, as the state DB has them; ``{}`` without a DB."""
    if not state_path.exists():
        return {}
    from flux_pipeline.run.store import read_records

    return stored_tasks(anyio.run(read_records, state_path))


def stored_tasks(records: Mapping[str, TaskRecord]) -> dict[str, StoredTask]:
    """What the resume rule needs of each record."""
    return {
        key: StoredTask(record.state, tuple(record.outputs), record.finished_at)
        for key, record in records.items()
    }


class Decider:
    """The resume decision of each task given to it, in plan order (parents first). A
    downloaded task is done by ``verifier``'s rule (its memos are never written). It keeps
    only the keys of the tasks the DB knows that are done or held, and of their held
    descendants."""

    def __init__(
        self,
        states: Mapping[str, StoredTask],
        out_dir: Path,
        *,
        verifier: Verifier | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.states = states
        self.verifier = verifier or Verifier(out_dir)
        self.policy = policy or Policy()
        self.now = time.time()
        self.done: set[str] = set()
        self.held: set[str] = set()  # held by the policy, or below one that is: blocked
        self.memo: dict[tuple[TaskState | None, bool, bool, bool, bool], Decision] = {}

    def __call__(self, task: TaskSpec) -> Decision:
        stored = self.states.get(task.key)
        state = stored.state if stored is not None else None
        intact = (
            self.verifier.task(task.key, stored.outputs)
            if stored is not None and state is TaskState.DOWNLOADED
            else True
        )
        ready = task.parent_key is None or task.parent_key in self.done
        blocked = task.parent_key is not None and task.parent_key in self.held
        gone = stored is not None and urls_expired(stored.finished_at, self.now)
        decision = self.memo.get((state, intact, ready, blocked, gone))
        if decision is None:
            decision = decide(
                state,
                outputs_intact=intact,
                parent_ready=ready,
                parent_held=blocked,
                policy=self.policy,
                urls_expired=gone,
            )
            self.memo[(state, intact, ready, blocked, gone)] = decision
        if decision.reason is Reason.DONE:
            self.done.add(task.key)
        elif decision.action is Action.HOLD:
            self.held.add(task.key)
        return decision


def decide_all(
    plan: Plan,
    states: Mapping[str, StoredTask],
    out_dir: Path,
    *,
    verifier: Verifier | None = None,
    policy: Policy | None = None,
) -> list[Decision]:
    """The resume decision of every task of ``plan``, in plan order (``Decider``)."""
    decider = Decider(states, out_dir, verifier=verifier, policy=policy)
    return [decider(task) for task in plan.tasks]
