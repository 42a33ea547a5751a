"""``status`` and ``report``: read the state DB, send nothing (docs/cli.md). With a manifest,
``status`` also reads its lock file (docs/lockfile.md), as ``run`` and ``plan`` do."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import anyio
import click

from flux_pipeline.cli.options import (
    lock_options,
    lock_path_of,
    out_option,
    review_options,
    review_path_of,
    state_option,
)
from flux_pipeline.errors import ExitCode, UsageError
from flux_pipeline.outcome import ambiguous_message, exit_code_for, verdict
from flux_pipeline.report.reportfile import buckets_json
from flux_pipeline.run.caps import one_line
from flux_pipeline.run.lease import hold_lease
from flux_pipeline.run.merge import buckets_of
from flux_pipeline.run.store import Store, read_records
from flux_pipeline.states import TaskRecord, TaskState


def _state_path(manifest: Path | None, out_dir: Path | None, state: Path | None) -> Path:
    from flux_pipeline.layout import default_out_dir, default_state_path
    from flux_pipeline.plan.expand import load_plan

    if state is not None:
        return state
    if out_dir is not None:
        return default_state_path(out_dir)
    if manifest is not None:
        return default_state_path(default_out_dir(load_plan(manifest).name))
    raise UsageError("give a MANIFEST, --out or --state to find the state DB")


async def _read(path: Path) -> tuple[dict[str, TaskRecord], dict[str, object] | None]:
    store = await Store.open(path)
    try:
        return await store.records(), await store.last_run()
    finally:
        await store.aclose()


def _known(
    manifest: Path,
    out_dir: Path | None,
    state: Path,
    lock_file: Path | None,
    records: dict[str, TaskRecord],
) -> dict[str, TaskRecord]:
    """The state DB's ``records`` with what the lock (or, with neither, ``report.json``)
    adds (``run/adopt.py``, in memory)."""
    from flux_pipeline.layout import default_out_dir
    from flux_pipeline.plan.expand import load_plan
    from flux_pipeline.report.lockfile import load_lock
    from flux_pipeline.run.adopt import known_records

    plan = load_plan(manifest)
    out = out_dir or default_out_dir(plan.name)
    lock = load_lock(lock_file, plan=plan, out_dir=out) if lock_file is not None else None
    if lock is None and state.exists():
        return records
    return anyio.run(known_records, plan, state, lock, out)[0]


@click.command()
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@out_option(help="Output directory whose state DB to read [default: out/<manifest name>].")
@state_option(help="State DB to read [default: <out>/.flux-pipeline/state.sqlite3].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@lock_options
@review_options
def status(
    manifest: Path | None,
    out_dir: Path | None,
    state_path: Path | None,
    as_json: bool,
    lock_path: Path | None,
    no_lock: bool,
    review_path: Path | None,
    no_review: bool,
) -> int:
    """Buckets and verdict, counts by state from the state DB (and, with MANIFEST, its lock
    file), ambiguous tasks, and the last error."""
    path = _state_path(manifest, out_dir, state_path)
    lock_file = lock_path_of(manifest, lock_path, no_lock) if manifest is not None else None
    records, last_run = anyio.run(_read, path) if path.exists() else ({}, None)
    if manifest is not None:
        records = _known(manifest, out_dir, path, lock_file, records)
    if not path.exists() and not records:
        raise UsageError(f"no state DB at {path}: nothing has run yet")
    counts = Counter(r.state.value for r in records.values())
    planned_total = None
    if manifest is not None:
        from flux_pipeline.plan.expand import load_plan
        from flux_pipeline.report.files import task_entries
        from flux_pipeline.report.reportfile import entry_buckets
        from flux_pipeline.report.reviewfile import reviewed_plan

        plan = load_plan(manifest)
        plan, _ = reviewed_plan(plan, review_path_of(manifest, review_path, no_review))
        planned_total = len(plan.tasks)
        counts[TaskState.PLANNED.value] += sum(1 for t in plan.tasks if t.key not in records)
        buckets = entry_buckets(task_entries(plan, records))
    else:  # no plan, no lineage: a planned row counts as not started
        buckets = buckets_of(r.state for r in records.values())
    ambiguous = sorted(r.readable_id for r in records.values() if r.state is TaskState.SUBMITTING)
    code = exit_code_for(buckets)
    last_error = last_run.get("last_error") if last_run else None
    if as_json:
        click.echo(
            json.dumps(
                {
                    "state_db": str(path),
                    "counts": {s.value: counts.get(s.value, 0) for s in TaskState},
                    "buckets": buckets_json(buckets),
                    "verdict": {"exit_code": int(code), "text": verdict(code)},
                    "planned_total": planned_total,
                    "ambiguous": ambiguous,
                    "last_run": last_run,
                },
                indent=2,
                sort_keys=True,
            )
        )
        return ExitCode.OK
    click.echo(f"state DB: {path}" + ("" if path.exists() else " (none: adopted)"))
    click.echo(f"{verdict(code)} (exit {int(code)}): {buckets.summary()}")
    for state in TaskState:
        if counts.get(state.value):
            click.echo(f"  {state.value:<11} {counts[state.value]}")
    if ambiguous:
        click.echo(ambiguous_message(ambiguous))
        for readable in ambiguous[:20]:
            click.echo(f"  {readable}")
    if last_run:
        click.echo(
            f"last run: exit {last_run.get('exit_code')}, "
            f"stop reason: {one_line(str(last_run.get('stop_reason') or '-'), 2000)}"
        )
    if last_error:
        click.echo(f"last error: {one_line(str(last_error), 2000)}")
    return ExitCode.OK


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@out_option(help="Output directory to write the reports to [default: out/<manifest name>].")
@state_option(help="State DB to read [default: <out>/.flux-pipeline/state.sqlite3].")
@review_options
def report(
    manifest: Path,
    out_dir: Path | None,
    state_path: Path | None,
    review_path: Path | None,
    no_review: bool,
) -> int:
    """Rewrite the report files of MANIFEST from the state DB."""
    from flux_pipeline.layout import default_out_dir, default_state_path
    from flux_pipeline.plan.expand import load_plan
    from flux_pipeline.report.files import RunInfo, write_reports
    from flux_pipeline.report.reviewfile import reviewed_plan

    plan = load_plan(manifest)
    plan, _ = reviewed_plan(plan, review_path_of(manifest, review_path, no_review))
    out = out_dir or default_out_dir(plan.name)
    path = state_path or default_state_path(out)
    with hold_lease(path, out, command=f"flux-pipeline report {manifest}"):  # not mid-run
        records = anyio.run(read_records, path)
        written = write_reports(plan, records, out, RunInfo(settings={}))
    for file in written:
        click.echo(str(file))
    return ExitCode.OK


COMMANDS: list[click.Command] = [status, report]
