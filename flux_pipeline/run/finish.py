"""A run's ending (``finish_run``): the run's row, the fingerprint, the reports, the store
closed, the annotations; also when the run was interrupted or broke.

Called shielded by ``runner``. Whatever fails here, the store is closed before the error
leaves (its worker thread would keep the process alive), and the error is one line: a state
DB that cannot be read is a ``StateError``, a report that cannot be written (a full disk, a
read-only directory) an ``OutputsNotWritableError`` naming the file (docs/exit-codes.md).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from flux_pipeline.errors import OutputsNotWritableError, StateError
from flux_pipeline.plan.expand import Plan
from flux_pipeline.report import github as workflow_commands
from flux_pipeline.report.files import RunInfo, keep_reports, report_is_current, write_reports
from flux_pipeline.report.review_summary import decisions_sha256
from flux_pipeline.run.lock_keeper import LockKeeper
from flux_pipeline.run.results import RunOutcome
from flux_pipeline.run.store import Store
from flux_pipeline.states import FAILED_STATES, TaskRecord


async def finish_run(
    store: Store,
    plan: Plan,
    out_dir: Path,
    run_id: int,
    outcome: RunOutcome | None,
    info: RunInfo,
    keeper: LockKeeper | None = None,
    shard: tuple[int, int] | None = None,
) -> None:
    """The run's ending, also when it was interrupted (``outcome`` None); called shielded.
    ``keeper``: the lock file's writer (None: no lock written by this run); ``shard``: the
    reports are the shard's own (``layout.report_name``)."""
    try:
        failed = await _report(store, plan, out_dir, run_id, outcome, info, keeper, shard)
    finally:
        # 6. the store, once nothing reads it any more (also when the report failed)
        await store.aclose()
    # 7. annotations last: they point at report files that now exist
    if failed is not None:
        workflow_commands.emit(workflow_commands.failure_annotations(plan, failed))


async def _report(
    store: Store,
    plan: Plan,
    out_dir: Path,
    run_id: int,
    outcome: RunOutcome | None,
    info: RunInfo,
    keeper: LockKeeper | None,
    shard: tuple[int, int] | None,
) -> list[TaskRecord] | None:
    """Steps 1 to 5; the failed tasks to annotate (None: no annotations)."""
    # 1. the run's row: end_run first commits every transition still queued, so everything
    #    read below sees the run's last state (an interrupted run keeps its row unfinished)
    if outcome is not None:
        await store.end_run(
            run_id,
            exit_code=outcome.exit_code,
            stop_reason=outcome.stop_reason,
            last_error=outcome.error,
        )
    try:
        # 2. the fingerprint of the state (flushes too): equal to the report's on disk, the
        #    report need not be written again (docs/reports.md)
        fingerprint = await store.fingerprint()
        info = dataclasses.replace(info, state_fingerprint=fingerprint)
        review = None if plan.review is None else decisions_sha256(plan.review.decisions)
        current = outcome is not None and report_is_current(
            out_dir, plan.manifest_sha256, fingerprint, shard, review
        )
        # 3. the records, unless nothing needs them: a current report with no annotations
        #    to make skips reading 100,000 rows
        annotate = workflow_commands.enabled()
        lock_current = keeper is None or (current and keeper.on_disk)
        records = {} if current and not annotate and lock_current else await store.records()
    except sqlite3.Error as exc:
        raise StateError(f"{store.path}: cannot read the state DB for the report: {exc}") from exc
    # 3b. the lock file (docs/lockfile.md), before the report consumes the records
    if not lock_current:
        assert keeper is not None
        await keeper.write_from(store, records)
    if keeper is not None:  # its text is not needed while the report is made
        keeper.forget()
    # 4. the failed tasks for the annotations, taken before the report consumes the records
    failed = [r for r in records.values() if r.state in FAILED_STATES]
    # 5. the report (and the step summary, which write_reports and keep_reports append)
    try:
        if current:  # nothing changed: the report on disk says exactly this
            keep_reports(out_dir, shard)
        else:  # consumes the records: a big report never holds them twice
            write_reports(plan, records, out_dir, info, consume=True, shard=shard)
    except OSError as exc:
        where = exc.filename or out_dir
        raise OutputsNotWritableError(
            f"cannot write the report {where}: {exc.strerror or exc}; the state DB keeps the "
            "run: fix that and run the same command again"
        ) from exc
    return failed if annotate else None
