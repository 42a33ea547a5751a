"""``status`` and ``report``: read the state DB, send nothing (docs/cli.md). With a manifest,
``status`` also reads its lock file (docs/lockfile.md), as ``run`` and ``plan`` do."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio
import click

from flux_pipeline.cli.options import (
    F,
    Shard,
    lock_options,
    lock_path_of,
    out_option,
    review_options,
    review_path_of,
    state_option,
)
from flux_pipeline.errors import ExitCode, UsageError
from flux_pipeline.outcome import ambiguous_message, exit_code_for, verdict
from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.generations import of_records, superseded, with_generations
from flux_pipeline.report.reportfile import buckets_json
from flux_pipeline.run.caps import one_line
from flux_pipeline.run.lease import hold_lease
from flux_pipeline.run.merge import buckets_of
from flux_pipeline.run.store import Store, read_records
from flux_pipeline.states import TaskRecord, TaskState

ShardValue = tuple[int, int] | None


def _shard_option(what: str) -> Callable[[F], F]:
    return click.option(
        "--shard",
        type=Shard(),
        help=f"{what} shard I of N (as `run --shard I/N` ran it): its state DB "
        "[<out>/.flux-pipeline/state-IofN.sqlite3] and its tasks only.",
    )


def _plan(manifest: Path, shard: ShardValue) -> Plan:
    """The manifest's plan; with ``shard``, that shard's tasks (as ``run --shard`` plans)."""
    from flux_pipeline.plan.expand import load_plan
    from flux_pipeline.plan.shard import select

    plan = load_plan(manifest)
    return select(plan, *shard) if shard is not None else plan


def _state_path(
    manifest: Path | None, out_dir: Path | None, state: Path | None, shard: ShardValue
) -> Path:
    from flux_pipeline.layout import default_out_dir, default_state_path
    from flux_pipeline.plan.expand import load_plan

    if state is not None:
        return state
    if out_dir is not None:
        return default_state_path(out_dir, shard)
    if manifest is not None:
        return default_state_path(default_out_dir(load_plan(manifest).name), shard)
    raise UsageError("give a MANIFEST, --out or --state to find the state DB")


def _nothing_ran(path: Path) -> UsageError:
    """No state DB at ``path``; shard DBs beside it are named, with how to read them."""
    shards = sorted(p.name for p in path.parent.glob("state-*of*.sqlite3"))
    if not shards or path.name != "state.sqlite3":
        return UsageError(f"no state DB at {path}: nothing has run yet")
    return UsageError(
        f"no state DB at {path}, but shard runs left {', '.join(shards)}: give --shard I/N "
        "for one of them, or `flux-pipeline merge` them first"
    )


async def _read(path: Path) -> tuple[dict[str, TaskRecord], dict[str, object] | None]:
    store = await Store.open(path)
    try:
        return await store.records(), await store.last_run()
    finally:
        await store.aclose()


def _known(
    plan: Plan,
    out_dir: Path | None,
    state: Path,
    lock_file: Path | None,
    records: dict[str, TaskRecord],
) -> tuple[Plan, dict[str, TaskRecord]]:
    """The manifest's plan at its recorded generations (plan/generations.py), and the state
    DB's ``records`` with what the lock (or, with neither, ``report.json``) adds
    (``run/adopt.py``, in memory)."""
    from flux_pipeline.layout import default_out_dir
    from flux_pipeline.report.lockfile import load_lock
    from flux_pipeline.run.adopt import known_state

    out = out_dir or default_out_dir(plan.name)
    lock = load_lock(lock_file, plan=plan, out_dir=out) if lock_file is not None else None
    if lock is None and state.exists():
        return with_generations(plan, of_records(records.values())), records
    known = anyio.run(known_state, plan, state, lock, out)
    return known.plan, known.records


@click.command()
@click.argument("manifest", required=False, type=click.Path(dir_okay=False, path_type=Path))
@out_option(help="Output directory whose state DB to read [default: out/<manifest name>].")
@state_option(help="State DB to read [default: <out>/.flux-pipeline/state.sqlite3].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@lock_options
@_shard_option("Status of")
@review_options
def status(
    manifest: Path | None,
    out_dir: Path | None,
    state_path: Path | None,
    as_json: bool,
    lock_path: Path | None,
    no_lock: bool,
    shard: ShardValue,
    review_path: Path | None,
    no_review: bool,
) -> int:
    """Buckets and verdict, counts by state from the state DB (and, with MANIFEST, its lock
    file), ambiguous tasks, and the last error."""
    path = _state_path(manifest, out_dir, state_path, shard)
    lock_file = lock_path_of(manifest, lock_path, no_lock) if manifest is not None else None
    records, last_run = anyio.run(_read, path) if path.exists() else ({}, None)
    plan = _plan(manifest, shard) if manifest is not None else None
    if plan is not None:
        plan, records = _known(plan, out_dir, path, lock_file, records)
    if not path.exists() and not records:
        raise _nothing_ran(path)
    counts = Counter(r.state.value for r in records.values())
    planned_total = None
    if plan is not None:
        from flux_pipeline.report.files import task_entries
        from flux_pipeline.report.reportfile import entry_buckets
        from flux_pipeline.report.reviewfile import reviewed_plan

        assert manifest is not None  # a plan comes from a manifest
        plan, _ = reviewed_plan(plan, review_path_of(manifest, review_path, no_review))
        planned_total = len(plan.tasks)
        counts[TaskState.PLANNED.value] += sum(1 for t in plan.tasks if t.key not in records)
        buckets = entry_buckets(task_entries(plan, records))
    else:  # no plan, no lineage: a planned row counts as not started; older generations
        # of regenerated tasks are kept rows, not tasks (plan/generations.py)
        older = superseded(records)
        buckets = buckets_of(r.state for k, r in records.items() if k not in older)
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
@_shard_option("Rewrite the reports (report.shard-IofN.json, ...) of")
@review_options
def report(
    manifest: Path,
    out_dir: Path | None,
    state_path: Path | None,
    shard: ShardValue,
    review_path: Path | None,
    no_review: bool,
) -> int:
    """Rewrite the report files of MANIFEST from the state DB."""
    from flux_pipeline.layout import default_out_dir, default_state_path
    from flux_pipeline.report.files import RunInfo, write_reports
    from flux_pipeline.report.reviewfile import reviewed_plan

    plan = _plan(manifest, shard)
    review_at = review_path_of(manifest, review_path, no_review)
    reviewed_plan(plan, review_at)  # a bad review file: exit 2 before the lease
    out = out_dir or default_out_dir(plan.name)
    path = state_path or default_state_path(out, shard)
    with hold_lease(path, out, command=f"flux-pipeline report {manifest}"):  # not mid-run
        records = anyio.run(read_records, path)
        # at the generations the DB records, then gated (plan/generations.py, review_gate.py)
        plan = with_generations(plan, of_records(records.values()))
        plan, _ = reviewed_plan(plan, review_at)
        settings = {"shard": f"{shard[0]}/{shard[1]}"} if shard else {}
        written = write_reports(plan, records, out, RunInfo(settings=settings), shard=shard)
    for file in written:
        click.echo(str(file))
    return ExitCode.OK


COMMANDS: list[click.Command] = [status, report]
