"""``plan --json`` streamed (docs/cli.md): the document of a plan no pass keeps in memory.

It is made when the command needs nothing of the whole plan (``streamable``): no ``--shard``,
``--only``, ``--limit``, ``--regenerate`` or ``--regenerate-rejected``, no lock file and no
review file (none given, none next to the manifest), no step gated by ``from.only``, and a
state DB that records no regeneration (or no DB and no ``OUT/report.json`` to adopt from).
Then ``known_state`` and ``focus`` (cli/manifest_cmds.py) leave the plan as it is, and each
task's decision is ``Decider``'s per-task rule against the DB's rows. Otherwise ``plan``
expands the whole plan as before.

Pass 1 (``PlanStream.watch``) checks the manifest and decides every task: the counts by step
and by reason, the cost (plan/cost.py), and each task's line of the document, kept in a
temporary file (``_Spool``). Any problem raises before anything is written. Then the head and
the spooled lines are written: the document is the one the materialised plan gives
(``plan_output.write_document``). Pass 1 also keeps one byte per task for its decision:
where the temporary file cannot be written, pass 2 renders the tasks again and writes them.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import anyio

from flux_pipeline.cli.decisions import PAY, Decider, StoredTask, stored_tasks
from flux_pipeline.cli.options import echo_warnings
from flux_pipeline.cli.plan_output import (
    CHUNK,
    DOCUMENT_END,
    document_start,
    json_head,
    reason_counts,
    steps_json,
    task_json,
    write_document,
)
from flux_pipeline.errors import ExitCode
from flux_pipeline.layout import default_out_dir, default_state_path
from flux_pipeline.plan.cost import cost_json, mode_of
from flux_pipeline.plan.generations import of_records
from flux_pipeline.plan.resume import Decision, Policy, Reason
from flux_pipeline.plan.stream import PlanStream, open_stream
from flux_pipeline.plan.tasks import TaskSpec


def absent(path: Path | None) -> bool:
    """Is there no file at ``path`` for the lock or review reader to read (None: not asked)?"""
    if path is None:
        return True
    try:
        path.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False  # the reader reports it
    return False


def streamable(
    *,
    shard: object,
    only: tuple[str, ...],
    limit: int | None,
    regenerate: tuple[str, ...],
    regenerate_rejected: bool,
    lock: Path | None,
    review: Path | None,
) -> bool:
    """May ``plan --json`` be streamed, as far as its options and files tell (the manifest's
    gates and the state DB are looked at by ``plan_json``)?"""
    flags = shard is None and not only and limit is None and not regenerate
    return flags and not regenerate_rejected and absent(lock) and absent(review)


SPOOL_BLOCK = 1 << 20  # characters read back from the spool at a time


class _Spool:
    """The document's task lines as pass 1 makes them, in a temporary file, so that they are
    not rendered a second time (some 640 bytes a task on disk, none in memory). Given up, and
    closed, when the file cannot be made or written (no temporary directory, a full disk)."""

    def __init__(self, step_ids: Sequence[str]) -> None:
        self._step_json = steps_json(step_ids)
        self._chunk: list[str] = []
        self._count = 0
        self._file: IO[str] | None
        try:  # closed by ``close`` (plan_json closes every spool it made)
            self._file = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError:
            self._file = None

    def add(self, task: TaskSpec, decision: Decision) -> None:
        if self._file is None:
            return
        line = task_json(task, decision, self._step_json)
        self._chunk.append(("\n" if self._count == 0 else ",\n") + line)
        self._count += 1
        if len(self._chunk) >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._file is not None and self._chunk:
            try:
                self._file.write("".join(self._chunk))
            except OSError:
                self.close()
        self._chunk.clear()

    def ready(self) -> bool:
        """Every line written and the file back at its start; False: given up."""
        self._flush()
        if self._file is None:
            return False
        try:
            self._file.flush()
            self._file.seek(0)
        except OSError:
            self.close()
            return False
        return True

    def copy_to(self, stream: IO[str]) -> None:
        """After ``ready``: the lines, in blocks."""
        assert self._file is not None
        while block := self._file.read(SPOOL_BLOCK):
            stream.write(block)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Tally:
    """Pass 1's view of the tasks: each one decided, counted by reason and, when a run would
    create it, by mode (plan/cost.py ``by_mode``), and its line spooled; one byte per task for
    its decision, in case the spool is given up and pass 2 must render the tasks again."""

    def __init__(
        self, decide: Decider, spool: _Spool, step_modes: Mapping[str, str | None]
    ) -> None:
        self.decide = decide
        self.spool = spool
        self.step_modes = step_modes
        self.codes = bytearray()  # per task, in plan order: its decision in ``kinds``
        self.kinds: list[Decision] = []
        self._index: dict[Decision, int] = {}
        self.reasons: Counter[Reason] = Counter()
        self.paying: Counter[str] = Counter()

    def __call__(self, task: TaskSpec) -> None:
        decision = self.decide(task)
        index = self._index.get(decision)
        if index is None:
            index = self._index[decision] = len(self.kinds)
            self.kinds.append(decision)
        self.codes.append(index)
        self.spool.add(task, decision)
        self.reasons[decision.reason] += 1
        if decision.action in PAY:
            self.paying[self.step_modes.get(task.step) or mode_of(task)] += 1

    def decided(self, tasks: Iterator[TaskSpec]) -> Iterator[tuple[TaskSpec, Decision]]:
        """``tasks`` (pass 2, the same tasks in the same order) with their decisions."""
        codes, kinds = self.codes, self.kinds
        count = 0
        for i, task in enumerate(tasks):
            count = i + 1
            yield task, kinds[codes[i]]
        if count != len(codes):
            raise RuntimeError(f"pass 2 of the plan gave {count} tasks, pass 1 {len(codes)}")


def _states(stream: PlanStream, state: Path, out_dir: Path) -> Mapping[str, StoredTask] | None:
    """The DB's rows as the resume rule needs them; None when the plan must be made whole: a
    regeneration recorded, a ``report.json`` to adopt from, a DB that cannot be read here
    (``plan`` reports it as before)."""
    from flux_pipeline.run.adopt import REPORT_NAME
    from flux_pipeline.run.store import read_records

    if not state.exists():
        return None if (out_dir / REPORT_NAME).is_file() else {}
    try:
        records = anyio.run(read_records, state)
    except Exception:
        return None
    if of_records(records.values()):
        return None
    return stored_tasks(records)


def plan_json(
    manifest: Path,
    *,
    out_dir: Path | None,
    state_path: Path | None,
    policy: Policy,
    strict: bool,
    stream: IO[str],
) -> int | None:
    """Write the plan's JSON document streamed; None (nothing written) when the plan must be
    made whole after all (``_states``, a gated step)."""
    plan = open_stream(manifest, file=str(manifest))
    if plan.gates:
        return None
    out_dir = out_dir or default_out_dir(plan.name)
    states = _states(plan, state_path or default_state_path(out_dir, None), out_dir)
    if states is None:
        return None
    spools: list[_Spool] = []

    def tally_of_a_pass() -> _Tally:
        for earlier in spools:  # a pass again (plan/unique.py suspects): its lines are not used
            earlier.close()
        spools.append(_Spool(plan.step_ids))
        return _Tally(Decider(states, out_dir, policy=policy), spools[-1], plan.step_modes)

    try:
        tally = plan.watch(tally_of_a_pass, strict=strict)
        _write(plan, tally, stream)
    finally:
        for spool in spools:
            spool.close()
    return ExitCode.OK


def _write(plan: PlanStream, tally: _Tally, stream: IO[str]) -> None:
    echo_warnings(plan.warnings)
    paying = dict(sorted(tally.paying.items()))  # as plan/cost.py by_mode
    head = json_head(
        plan,
        reason_counts(tally.reasons),
        dict(plan.counts),
        cost=cost_json(paying, plan.pricing),
    )
    if tally.spool.ready():
        stream.write(document_start(head))
        tally.spool.copy_to(stream)
        stream.write(DOCUMENT_END)
    else:  # no spool: pass 2 renders the tasks again
        write_document(head, plan.step_ids, tally.decided(plan.tasks()), stream)
    stream.flush()
