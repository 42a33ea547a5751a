"""Adoption (docs/lockfile.md): what the lock file, or else a ``report.json``, knows that the
state DB does not, so a key already paid for is never created again when the DB is missing,
older, or from another machine.

``run`` imports the adopted rows into its state DB before the engine decides anything
(``adopt_into``, through ``store_import.import_records``, as ``merge`` writes); ``plan`` and
``status`` apply the same rows in memory (``known_records``) and write nothing. Then the
resume rules are the usual ones (flux_pipeline/plan/resume.py, flux_pipeline/run/verify.py).

A lock entry is taken over a DB row when the DB has no row for its key, or when the row is
behind it: fewer attempts, or the same attempt at an earlier stage (ambiguous < planned again
because the create provably never left < submitted < succeeded < failed, expired < done). A
row with more attempts is newer (a retry this machine made since the lock was written) and
stays.

With storage (docs/storage.md), ``restore_outputs`` then fetches from the bucket the outputs
the lock names there and the output directory lacks: a lost output directory costs no create
and no download from the API, even past its result URLs' expiry.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from flux_pipeline.errors import UsageError
from flux_pipeline.layout import inside
from flux_pipeline.media import atomic_target, sha256_bytes
from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.generations import latest, of_records, with_generations
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.report.lockfile import Lock, LockEntry
from flux_pipeline.run.lock_memo import RECORD_SQL, behind, covers
from flux_pipeline.run.merge import records_from_report
from flux_pipeline.run.spec_record import spec_record
from flux_pipeline.run.storage import ObjectStore, StorageError
from flux_pipeline.run.store import Store, import_records, read_records
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

REPORT_NAME = "report.json"


def at_generations(plan: Plan, db: Iterable[tuple[str | None, int]], lock: Lock | None) -> Plan:
    """``plan`` at the generations the state DB (``db``: ``(base key, generation)`` pairs)
    and the lock record (plan/generations.py): the highest of either, so a regeneration the
    lock knows is not lost with the DB."""
    recorded = latest(db)
    claimed = latest(lock.generations()) if lock is not None else {}
    moved = with_generations(plan, latest([*recorded.items(), *claimed.items()]))
    for task in moved.tasks if claimed else ():
        base = task.base_key
        lock_only = task.generation and claimed.get(base) == task.generation > recorded.get(base, 0)
        if lock_only and lock is not None and task.key not in lock.entries:
            raise UsageError(  # it would create (and bill) a key nobody asked for
                f"{lock.path}: not a valid flux-pipeline lock file: generation "
                f"{task.generation} of task {task.readable_id} is recorded under another key "
                "than this manifest makes for it (was the lock edited?)"
            )
    return moved


def _specs(plan: Plan, entries: Mapping[str, LockEntry]) -> dict[str, TaskSpec]:
    """The plan's tasks by key, plus the run-time chained tasks the lock's entries name."""
    by_key = {task.key: task for task in plan.tasks}
    for entry in sorted(entries.values(), key=lambda e: e.readable_id):  # parents first
        parent = by_key.get(entry.parent_key) if entry.parent_key else None
        index = entry.parent_output_index
        if entry.key in by_key or parent is None or not index:
            continue
        for child in plan.children(parent, index):
            by_key.setdefault(child.key, child)
    return by_key


def record_of(spec: TaskSpec, entry: LockEntry, now: float) -> TaskRecord:
    urls = entry.result_urls
    return spec_record(
        spec,
        entry.state,
        updated_at=now,
        task_id=entry.task_id,
        result_urls=urls,
        fail_code=entry.fail_code,
        fail_msg="adopted from the lock file" if entry.fail_code else None,
        attempts=entry.attempts,
        finished_at=entry.finished_at,
        outputs=[
            OutputRecord(
                index=i,
                path=o.path,
                url=urls[i] if i < len(urls) else "",
                bytes=o.bytes,
                sha256=o.sha256,
            )
            for i, o in enumerate(entry.outputs)
        ],
    )


def records_from_lock(plan: Plan, lock: Lock) -> dict[str, TaskRecord]:
    """State DB rows rebuilt from the lock, for the keys ``plan`` makes."""
    specs = _specs(plan, lock.entries)
    now = time.time()
    return {
        key: record_of(specs[key], entry, now)
        for key, entry in lock.entries.items()
        if key in specs
    }


@dataclass(frozen=True, slots=True)
class Adoption:
    source: str  # "lock", "report" or "" (nothing adopted)
    records: dict[str, TaskRecord]  # the rows to take over the DB's


def adoption(
    plan: Plan,
    db: Mapping[str, TaskRecord],
    lock: Lock | None,
    out_dir: Path,
    *,
    had_db: bool,
) -> Adoption:
    """The rows the lock (or, without a DB and a lock, ``OUT/report.json``) has that the DB
    ``db`` lacks or is behind on."""
    if lock is not None:
        # a row rebuilt only for the entries the DB is behind on (a rerun: none of 100,000)
        specs = _specs(plan, lock.entries)
        now = time.time()
        chosen = {
            key: record_of(specs[key], entry, now)
            for key, entry in lock.entries.items()
            if key in specs and behind(db.get(key), entry)
        }
        return Adoption("lock" if chosen else "", chosen)
    if not had_db and (out_dir / REPORT_NAME).is_file():
        source, known = "report", records_from_report(plan, out_dir / REPORT_NAME)[0]
    else:
        return Adoption("", {})
    chosen = {key: record for key, record in known.items() if behind(db.get(key), record)}
    return Adoption(source if chosen else "", chosen)


async def adopt_into(
    store: Store, plan: Plan, lock: Lock | None, out_dir: Path, *, had_db: bool
) -> tuple[str, int, dict[str, TaskRecord]]:
    """Import the adopted rows into ``store``'s DB (before its writer starts). Returns where
    they came from (``Adoption.source``), how many, and every row of the DB afterwards: read
    once when nothing was adopted (a rerun: 100,000 rows are not read twice)."""
    db = await store.records()
    if lock is None and had_db:
        return "", 0, db
    adopted = adoption(plan, db, lock, out_dir, had_db=had_db)
    if adopted.records:
        del db  # not held beside the rows read again below
        rows = list(adopted.records.values())
        source, count = adopted.source, len(rows)
        del adopted
        await anyio.to_thread.run_sync(import_records, store.path, rows)
        del rows
        db = await store.records()
    else:
        source, count = "", 0
    if lock is not None and lock.sha256 and covers(db, lock):
        await store.write(RECORD_SQL, (lock.sha256, lock.manifest), what="the lock memo")
    return source, count, db


async def known_records(
    plan: Plan, state_path: Path, lock: Lock | None, out_dir: Path
) -> tuple[dict[str, TaskRecord], Adoption]:
    """What ``plan`` and ``status`` know of each task: the state DB's rows with the adopted
    ones applied (nothing is written)."""
    known = await known_state(plan, state_path, lock, out_dir)
    return known.records, known.adopted


@dataclass(frozen=True, slots=True)
class Known:
    plan: Plan  # at the recorded generations
    records: dict[str, TaskRecord]  # the DB's rows with the adopted ones applied
    adopted: Adoption


async def known_state(plan: Plan, state_path: Path, lock: Lock | None, out_dir: Path) -> Known:
    """``known_records``, with ``plan`` at the generations the DB and the lock record."""
    had_db = state_path.exists()
    db = await read_records(state_path) if had_db else {}
    plan = at_generations(plan, of_records(db.values()).items(), lock)
    adopted = adoption(plan, db, lock, out_dir, had_db=had_db)
    return Known(plan, db | adopted.records, adopted)


RESTORE_MAX_BYTES = 64 * 1024 * 1024  # an output fetched back from the bucket, at most


def _to_restore(
    records: Mapping[str, TaskRecord], stored: Mapping[str, str], out_dir: Path
) -> list[tuple[OutputRecord, str]]:
    """The outputs of downloaded tasks that are missing (or of another size) and stored."""
    found = []
    for record in records.values():
        if record.state is not TaskState.DOWNLOADED:
            continue
        for output in record.outputs:
            key = stored.get(output.sha256)
            if key is None:
                continue
            try:
                if (out_dir / output.path).stat().st_size == output.bytes:
                    continue
            except OSError:
                pass
            found.append((output, key))
    return found


def _restore_one(objects: ObjectStore, output: OutputRecord, key: str, out_dir: Path) -> bool:
    content = objects.get(key, min(output.bytes, RESTORE_MAX_BYTES))
    if len(content) != output.bytes or sha256_bytes(content) != output.sha256:
        raise StorageError(f"storage: {key} is not the output {output.path} the lock records")
    try:
        target = inside(out_dir, output.path)
    except ValueError as exc:
        raise StorageError(str(exc)) from None
    with atomic_target(target) as temp:
        temp.write_bytes(content)
    return True


async def restore_outputs(
    objects: ObjectStore, records: Mapping[str, TaskRecord], lock: Lock | None, out_dir: Path
) -> int:
    """Fetch from the bucket every output of a downloaded task in ``records`` that
    ``out_dir`` lacks and ``lock`` names an object of; the number restored. Each is checked
    (size, SHA-256) before it is renamed into place."""
    if lock is None:
        return 0
    stored = {o.sha256: o.stored for e in lock.entries.values() for o in e.outputs if o.stored}
    if not stored:
        return 0
    todo = await anyio.to_thread.run_sync(_to_restore, records, stored, out_dir)
    restored = 0

    async def one(output: OutputRecord, key: str) -> None:
        nonlocal restored
        # one that cannot be had is downloaded from its result URL as before
        with contextlib.suppress(StorageError, OSError):
            done = await objects.call(_restore_one, objects, output, key, out_dir)
            restored += done  # after the await: the other restores add theirs meanwhile

    async with anyio.create_task_group() as tg:
        for output, key in todo:
            tg.start_soon(one, output, key)
    return restored
