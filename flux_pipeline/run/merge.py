"""``flux-pipeline merge``: shard runs (state DBs, reports, output files) -> one state DB, one
output directory, one report.

What a merge job of a sharded workflow has is the shards' artifacts: each an output directory
(images, ``report.json``) and a state DB. A source is a state DB file, a ``report.json`` or a
directory searched for both (``**/*.sqlite3``, ``**/report.json`` and a shard's own
``**/report.shard-IofN.json``); output files are looked up in every directory that holds a
``report.json`` or a ``.flux-pipeline/`` state DB.

Rows are combined by task key. The same key from several sources (a shard merged twice, or a
shard that started from an earlier merged DB) keeps the more advanced row: downloaded, then
succeeded/expired, then in flight/failed, then planned; ties go to the newest ``updated_at``.
The destination DB takes part with its own rows, so merging is idempotent. A ``report.json``
is used only for keys no state DB knows (it lacks result URLs of undownloaded tasks: such a
task comes back as ``submitted`` and is polled again on the next run, never resubmitted).

Output files are copied (atomically, checked against their recorded size and sha256) into the
output directory; a file found nowhere is counted as missing (the next ``run`` downloads it
again from its result URL without creating anything).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from flux_pipeline.errors import UsageError
from flux_pipeline.layout import STATE_DIR, inside
from flux_pipeline.media import copy_atomic
from flux_pipeline.outcome import STATE_BUCKET, Bucket, Buckets, exit_code_for
from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.generations import latest, of_records, with_generations
from flux_pipeline.plan.review_gate import apply_review
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.report.files import RunInfo, task_entries, write_reports
from flux_pipeline.report.reportfile import load_report
from flux_pipeline.run.lease import hold_lease
from flux_pipeline.run.lock_keeper import LockKeeper
from flux_pipeline.run.merge_inputs import check_records
from flux_pipeline.run.spec_record import spec_record
from flux_pipeline.run.store import Store, import_records
from flux_pipeline.run.verify import Verifier
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

_RANK = {
    TaskState.PLANNED: 0,
    TaskState.SUBMITTING: 1,
    TaskState.SUBMITTED: 1,
    TaskState.FAILED: 1,
    TaskState.SUCCEEDED: 2,
    TaskState.EXPIRED: 2,
    TaskState.DOWNLOADED: 3,
}


@dataclass(frozen=True, kw_only=True)
class Sources:
    databases: list[Path]
    reports: list[Path]
    out_dirs: list[Path]  # where output files may be found


@dataclass(frozen=True, kw_only=True)
class MergeResult:
    out_dir: Path
    state_path: Path
    databases: int
    reports: int
    rows: int  # task rows in the merged DB
    copied: int  # output files copied into out_dir
    present: int  # output files already there
    missing: list[str]  # output files of downloaded tasks found nowhere
    ignored: int  # report entries whose key is not in the plan
    shards: list[str]  # the --shard values the sources were run with
    counts: dict[str, int]
    exit_code: int


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def discover(paths: Sequence[Path], *, exclude: Path) -> Sources:
    """State DBs, reports and output directories under ``paths`` (``exclude``: the target DB)."""
    databases: list[Path] = []
    reports: list[Path] = []
    out_dirs: list[Path] = []
    for path in paths:
        if path.is_dir():
            found_dbs = sorted(path.rglob("*.sqlite3"))
            found_reports = sorted({*path.rglob("report.json"), *path.rglob("report.shard-*.json")})
            out_dirs.append(path)
        elif path.is_file():
            found_dbs, found_reports = ([path], []) if path.suffix != ".json" else ([], [path])
        else:
            raise UsageError(f"--from {path}: no such file or directory")
        if not found_dbs and not found_reports:
            raise UsageError(f"--from {path}: no state DB (*.sqlite3) and no report.json in it")
        databases += [db for db in found_dbs if not _same(db, exclude)]
        reports += found_reports
        out_dirs += [r.parent for r in found_reports]
        out_dirs += [db.parent.parent for db in found_dbs if db.parent.name == STATE_DIR]
    unique_dirs: list[Path] = []
    for directory in out_dirs:
        if not any(_same(directory, seen) for seen in unique_dirs):
            unique_dirs.append(directory)
    return Sources(databases=databases, reports=reports, out_dirs=unique_dirs)


def _better(new: TaskRecord, old: TaskRecord) -> bool:
    rank_new = (_RANK[new.state], new.updated_at, new.attempts)
    rank_old = (_RANK[old.state], old.updated_at, old.attempts)
    return rank_new > rank_old


def combine(batches: Iterable[dict[str, TaskRecord]]) -> dict[str, TaskRecord]:
    """One record per key: the most advanced (then newest) of every batch."""
    merged: dict[str, TaskRecord] = {}
    for batch in batches:
        for key, record in batch.items():
            current = merged.get(key)
            if current is None or _better(record, current):
                merged[key] = record
    return merged


def _specs_by_key(plan: Plan, entries: Iterable[TaskEntry]) -> dict[str, TaskSpec]:
    """The plan's tasks, plus the run-time chained tasks the report entries name."""
    by_key = {task.key: task for task in plan.tasks}
    by_rid = {task.readable_id: task for task in plan.tasks}
    for entry in sorted(entries, key=lambda e: e.readable_id):
        index = entry.parent_output_index
        parent = by_rid.get(entry.parent) if entry.parent is not None else None
        if entry.key in by_key or not index or parent is None:
            continue
        for child in plan.children(parent, index):
            by_key[child.key] = child
            by_rid[child.readable_id] = child
    return by_key


def records_from_report(plan: Plan, path: Path) -> tuple[dict[str, TaskRecord], int]:
    """Task records rebuilt from a ``report.json``; and how many entries the plan lacks."""
    entries = load_report(path).tasks
    specs = _specs_by_key(plan, entries)
    records: dict[str, TaskRecord] = {}
    ignored = 0
    for entry in entries:
        spec = specs.get(entry.key)
        if spec is None:
            ignored += 1
            continue
        state = entry.state
        outputs = [
            OutputRecord(index=i, path=o.path, url=o.url, bytes=o.bytes, sha256=o.sha256)
            for i, o in enumerate(entry.outputs)
        ]
        if state is TaskState.SUCCEEDED and not outputs:
            state = TaskState.SUBMITTED  # result URLs are not in a report: poll them again
        if state is TaskState.PLANNED or (state is TaskState.SUBMITTED and not entry.task_id):
            continue
        stamps = entry.timestamps
        records[spec.key] = spec_record(
            spec,
            state,
            updated_at=max(stamps.values(), default=0.0),
            task_id=entry.task_id,
            result_urls=tuple(o.url for o in outputs),
            fail_code=entry.fail_code,
            fail_msg=entry.fail_msg,
            attempts=entry.attempts,
            api_create_time=stamps.api_create,
            api_complete_time=stamps.api_complete,
            cost_time=entry.cost_time,
            first_submitted_at=stamps.first_submitted,
            submitted_at=stamps.submitted,
            finished_at=stamps.finished,
            downloaded_at=stamps.downloaded,
            outputs=outputs,
        )
    return records, ignored


async def _read_db(path: Path, manifest: str) -> tuple[dict[str, TaskRecord], str | None]:
    store = await Store.open(path)
    try:
        last = await store.last_run()
        records = await store.records()
    finally:
        await store.aclose()
    if last is not None and last["manifest"] != manifest:
        raise UsageError(
            f"{path}: this state DB is of manifest {last['manifest']!r}, not {manifest!r}"
        )
    shard = last["settings"].get("shard") if last is not None else None
    return records, shard if isinstance(shard, str) else None


def _inside(base: Path, relative: str) -> Path | None:
    try:
        return inside(base, relative)
    except ValueError:
        return None


def gather_files(
    records: Iterable[TaskRecord], out_dir: Path, out_dirs: Sequence[Path]
) -> tuple[int, int, list[str]]:
    """Copy every downloaded output into ``out_dir``: (copied, already present, missing).
    A file counts when it passes the done rule (flux_pipeline/run/verify.py), always hashed:
    a merged row's memo may describe a file of another directory."""
    verifier = Verifier(out_dir, use_memo=False)
    copied = present = 0
    missing: list[str] = []
    for record in records:
        if record.state is not TaskState.DOWNLOADED:
            continue
        for output in record.outputs:
            target = _inside(out_dir, output.path)
            if target is None:
                missing.append(output.path)
                continue
            if verifier.output(target, record.key, output):
                present += 1
                continue
            for directory in out_dirs:
                source = _inside(directory, output.path)
                if (
                    source is not None
                    and source != target
                    and verifier.output(source, record.key, output)
                ):
                    copy_atomic(source, target)
                    copied += 1
                    break
            else:
                missing.append(output.path)
    return copied, present, sorted(missing)


def buckets_of(states: Iterable[TaskState]) -> Buckets:
    """The merged tasks' buckets. A planned task counts as not started even behind a failed
    parent (where ``run`` would say blocked): merge reads no lineage, it exits 3 for it."""
    return Buckets.of(Counter(STATE_BUCKET.get(state, Bucket.NOT_STARTED) for state in states))


async def merge(
    plan: Plan,
    sources: Sequence[Path],
    *,
    out_dir: Path,
    state_path: Path,
    decisions: Mapping[str, str] | None = None,
) -> MergeResult:
    """Merge ``sources`` into the state DB at ``state_path`` and ``out_dir``; write the report.
    Holds the lease of both (``run/lease.py``): not while a run or another merge uses them.
    ``decisions``: the review file's (plan/review_gate.py), applied as ``run`` applies them."""
    with hold_lease(state_path, out_dir, command=f"flux-pipeline merge --out {out_dir}"):
        return await _merge(plan, sources, out_dir, state_path, decisions)


async def _merge(
    plan: Plan,
    sources: Sequence[Path],
    out_dir: Path,
    state_path: Path,
    decisions: Mapping[str, str] | None,
) -> MergeResult:
    started = time.time()
    lock = LockKeeper.next_to_manifest(plan, out_dir)  # the merged runs' lock (docs/lockfile.md)
    found = discover(sources, exclude=state_path)
    batches: list[dict[str, TaskRecord]] = []
    shards: set[str] = set()
    if state_path.exists():
        own = (await _read_db(state_path, plan.name))[0]
        check_records(state_path, own.values(), out_dir)
        batches.append(own)
    for database in found.databases:
        records, shard = await _read_db(database, plan.name)
        check_records(database, records.values(), out_dir)  # untrusted: checked before use
        batches.append(records)
        if shard:
            shards.add(shard)
    merged = combine(batches)
    # the tasks at the generations the shards ran (plan/generations.py)
    known = [*of_records(merged.values()).items(), *(lock.old.generations() if lock.old else [])]
    plan = with_generations(plan, latest(known))
    if decisions is not None or plan.gates:  # on the final keys, as run/runner.py does
        plan = apply_review(plan, decisions or {})
    ignored = 0
    for report in found.reports:
        from_report, skipped = records_from_report(plan, report)
        check_records(report, from_report.values(), out_dir)
        ignored += skipped
        merged.update({k: r for k, r in from_report.items() if k not in merged})
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = await anyio.to_thread.run_sync(import_records, state_path, list(merged.values()))
    copied, present, missing = await anyio.to_thread.run_sync(
        gather_files, list(merged.values()), out_dir, found.out_dirs
    )
    states = [entry.state for entry in task_entries(plan, merged)]
    counts = dict(Counter(state.value for state in states))
    # a file found nowhere is downloaded again by the next run: resumable, like a stop
    exit_code = exit_code_for(buckets_of(states), stopped=bool(missing))
    settings: dict[str, Any] = {
        "merged_from": [str(p) for p in sources],
        "state_dbs": len(found.databases),
        "reports": len(found.reports),
        "shards": sorted(shards),
    }
    store = await Store.open(state_path)
    try:
        run_id = await store.begin_run(
            manifest=plan.name,
            manifest_sha256=plan.manifest_sha256,
            settings=settings,
            planned=len(plan.tasks),
        )
        stop = f"{len(missing)} output file(s) missing: rerun to download them" if missing else None
        await store.end_run(run_id, exit_code=exit_code, stop_reason=stop, last_error=None)
    finally:
        await store.aclose()
    info = RunInfo(
        settings=settings,
        started_at=started,
        finished_at=time.time(),
        exit_code=exit_code,
        stop_reason=stop,
    )
    await anyio.to_thread.run_sync(lock.write, merged)
    write_reports(plan, merged, out_dir, info)
    return MergeResult(
        out_dir=out_dir,
        state_path=state_path,
        databases=len(found.databases),
        reports=len(found.reports),
        rows=rows,
        copied=copied,
        present=present,
        missing=missing,
        ignored=ignored,
        shards=sorted(shards),
        counts=counts,
        exit_code=exit_code,
    )
