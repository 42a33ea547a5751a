"""``flux-pipeline run``: the thin click layer over ``runner.execute``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import click

from flux_pipeline.cli.options import (
    Duration,
    FiniteFloatRange,
    echo_warnings,
    lock_options,
    lock_path_of,
    out_option,
    review_options,
    review_path_of,
    selection_options,
    shard_limits,
    state_option,
    strict_option,
)
from flux_pipeline.cli.review_cmds import Shard
from flux_pipeline.manifest.apivalues import values_of

if TYPE_CHECKING:
    from flux_pipeline.manifest.models import Pricing
    from flux_pipeline.run.engine import RunOutcome
    from flux_pipeline.run.runner import Endpoint, RunResult


LINE_CHARS = 2000  # a printed error, at most (longer is cut, ending in "...")


def _echo(line: str) -> None:
    click.echo(line, err=True)


def _summary(
    outcome: RunOutcome,
    out_dir: str,
    pricing: Pricing | None = None,
    shard: tuple[int, int] | None = None,
) -> str:
    """The run's last lines: the verdict and the buckets (as report.md and ``status`` count
    them), the tasks created (billed: taskIds the API returned), and held ambiguous tasks."""
    from flux_pipeline.outcome import ambiguous_message, verdict
    from flux_pipeline.plan.cost import describe
    from flux_pipeline.run.caps import one_line  # API text: one line each, escaped

    text = f"flux-pipeline: {verdict(outcome.exit_code)}: {outcome.buckets.summary()}"
    text += f"; {outcome.created} task(s) created (billed) in {outcome.elapsed:.1f}s"
    text += f"\nflux-pipeline: created {describe(outcome.created_modes, pricing)}"
    if outcome.stop_reason:
        text += f"\nflux-pipeline: stop reason: {one_line(outcome.stop_reason, LINE_CHARS)}"
    if outcome.error:
        text += f"\nflux-pipeline: last error: {one_line(outcome.error, LINE_CHARS)}"
    if outcome.ambiguous:
        text += f"\nflux-pipeline: {ambiguous_message(outcome.ambiguous)}"
    if shard is None:
        text += (
            f"\nflux-pipeline: images and report in {out_dir}/"
            " (index.html to browse, report.md, report.json, junit.xml)"
        )
    else:
        files = ", ".join(name for name in report_files(shard).values() if name)
        text += (
            f"\nflux-pipeline: images and this shard's report in {out_dir}/ ({files}); "
            "`flux-pipeline merge` combines the shards into one report and gallery"
        )
    return text


def report_files(shard: tuple[int, int] | None) -> dict[str, str | None]:
    """The report files a run writes, by kind (a shard's own names, and no gallery)."""
    from flux_pipeline.layout import report_name

    names: dict[str, str | None] = {k: report_name(k, shard) for k in ("json", "markdown")}
    return names | {"html": None if shard else "index.html", "junit": report_name("junit", shard)}


def summary_json(
    result: RunResult, pricing: Pricing | None = None, shard: tuple[int, int] | None = None
) -> dict[str, Any]:
    """``run --json``: the run's summary as one JSON object (docs/cli.md has the shape)."""
    from flux_pipeline.outcome import verdict
    from flux_pipeline.plan.cost import cost_json
    from flux_pipeline.report.reportfile import buckets_json

    outcome = result.outcome
    names = report_files(shard).items()
    reports = {kind: result.out_dir / name if name else None for kind, name in names}
    return {
        "exit_code": int(outcome.exit_code),
        "verdict": verdict(outcome.exit_code),
        "buckets": buckets_json(outcome.buckets),
        "total": outcome.buckets.total,
        "created": outcome.created,
        "cost": cost_json(outcome.created_modes, pricing),
        "elapsed_seconds": round(outcome.elapsed, 3),
        "stop_reason": outcome.stop_reason,
        "last_error": outcome.error,
        "ambiguous": list(outcome.ambiguous),
        "out_dir": str(result.out_dir),
        "state_db": str(result.state_path),
        "reports": {kind: str(p) if p and p.exists() else None for kind, p in reports.items()},
    }


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@out_option(help="Output directory [default: out/<manifest name>].")
@state_option(help="State DB [default: <out>/.flux-pipeline/state.sqlite3].")
@click.option(
    "--simulate",
    is_flag=True,
    help="Run against the built-in API simulator (no key, no network, no cost).",
)
@click.option(
    "--sim-task-seconds",
    type=FiniteFloatRange(min=0.01),
    default=1.5,
    show_default=True,
    help="With --simulate: mean simulated task time.",
)
@click.option(
    "--max-active",
    type=click.IntRange(min=1),
    default=None,
    help="Tasks in flight at the API at once, for the key [default: 1000]; with --shard I/N "
    "each shard takes 1/N (rounded up).",
)
@click.option(
    "--rpm",
    type=FiniteFloatRange(min=1),
    default=None,
    help="Request budget per minute of the key, shared by every API call [default: 10000]; "
    "with --shard I/N each shard takes 1/N, so N shards at once stay inside the key's limit.",
)
@click.option(
    "--request-type",
    type=click.Choice(values_of("request_type")),
    default="async",
    show_default=True,
    help="Poll for results, or receive callbacks.",
)
@click.option(
    "--listen",
    default="127.0.0.1:0",
    show_default=True,
    help="Callback mode: where the receiver listens (HOST:PORT).",
)
@click.option(
    "--public-url",
    help="Callback mode: the URL the API should call (default: the --listen address).",
)
@click.option("--retry-failed", is_flag=True, help="Resubmit tasks that failed terminally.")
@click.option(
    "--resubmit-ambiguous",
    is_flag=True,
    help="Resubmit tasks whose create answer was lost (may pay twice).",
)
@click.option(
    "--regenerate-expired",
    is_flag=True,
    help="Create expired tasks again (their result URLs are gone): pays again for each.",
)
@click.option(
    "--deadline", type=Duration(), help="Stop (resumable, exit 3) after this long, e.g. 50m."
)
@click.option(
    "--max-new-tasks",
    type=click.IntRange(min=0),
    help="Create at most this many tasks in this run, then stop (exit 3).",
)
@click.option(
    "--shard",
    type=Shard(),
    help="Run only shard I of N (e.g. 2/3; chains stay whole) [default state: "
    "<out>/.flux-pipeline/state-IofN.sqlite3]; a shard does not write the lock file.",
)
@click.option(
    "--max-cost",
    type=FiniteFloatRange(min=0),
    help="Stop submitting (exit 3) before a create would bring the cost of this run's tasks "
    "over this (the manifest's pricing currency; needs a pricing section).",
)
@lock_options
@review_options
@selection_options
@click.option(
    "--storage-bucket",
    metavar="NAME",
    help="S3-compatible bucket for reference images and --publish, over the manifest's "
    "storage.bucket [env: FLUX_PIPELINE_S3_BUCKET] (docs/storage.md).",
)
@click.option(
    "--storage-prefix",
    metavar="PREFIX",
    help="Key prefix in the bucket [env: FLUX_PIPELINE_S3_PREFIX; default: flux-pipeline].",
)
@click.option(
    "--storage-endpoint",
    metavar="URL",
    help="S3-compatible endpoint (R2, MinIO) [env: FLUX_PIPELINE_S3_ENDPOINT].",
)
@click.option(
    "--publish",
    is_flag=True,
    help="Copy every downloaded image and the reports to the bucket; the lock records where.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="At the end, the summary as one JSON object on stdout (progress stays on stderr).",
)
@strict_option("nothing is sent")
def run(
    manifest: Path,
    out_dir: Path | None,
    state_path: Path | None,
    simulate: bool,
    sim_task_seconds: float,
    max_active: int | None,
    rpm: float | None,
    request_type: str,
    listen: str,
    public_url: str | None,
    retry_failed: bool,
    resubmit_ambiguous: bool,
    regenerate_expired: bool,
    deadline: float | None,
    max_new_tasks: int | None,
    shard: tuple[int, int] | None,
    lock_path: Path | None,
    no_lock: bool,
    review_path: Path | None,
    no_review: bool,
    only: tuple[str, ...],
    limit: int | None,
    regenerate: tuple[str, ...],
    regenerate_rejected: bool,
    max_cost: float | None,
    storage_bucket: str | None,
    storage_prefix: str | None,
    storage_endpoint: str | None,
    publish: bool,
    as_json: bool,
    strict: bool,
) -> int:
    """Run MANIFEST: create, poll, download, report. Rerun the same command to resume."""
    from flux_pipeline.plan.selection import parse_only
    from flux_pipeline.run.progress import progress_for
    from flux_pipeline.run.runner import RunOptions, endpoint_from_env, execute, prepare
    from flux_pipeline.run.stops import interrupts_raise

    active, budget = shard_limits(max_active, rpm, shard)  # the key's limits, 1/N a shard
    options = RunOptions(
        manifest=manifest,
        out_dir=out_dir,
        state_path=state_path,
        simulate=simulate,
        sim_task_seconds=sim_task_seconds,
        max_active=active,
        rpm=budget,
        request_type="callback" if request_type == "callback" else "async",
        retry_failed=retry_failed,
        resubmit_ambiguous=resubmit_ambiguous,
        regenerate_expired=regenerate_expired,
        deadline=deadline,
        max_new_tasks=max_new_tasks,
        listen=listen,
        public_url=public_url,
        argv=tuple(sys.argv[1:]),
        shard=shard,
        lock_path=lock_path_of(manifest, lock_path, no_lock),
        no_lock=no_lock,
        review_path=review_path_of(manifest, review_path, no_review),
        strict=strict,
        only=parse_only(only),
        limit=limit,
        regenerate=parse_only(regenerate),
        regenerate_rejected=regenerate_rejected,
        max_cost=max_cost,
        storage={
            "bucket": storage_bucket,
            "prefix": storage_prefix,
            "endpoint_url": storage_endpoint,
        },
        publish=publish,
    )
    with interrupts_raise() as reinstall:
        # every setting, the environment and the manifest first: nothing has started yet
        # (no simulator, no progress display, no state DB) when one of them is refused
        endpoint = None if simulate else endpoint_from_env(os.environ)
        prepared = prepare(options)
        echo_warnings(prepared.plan.warnings)
        display = progress_for()

        async def main(endpoint: Endpoint | None) -> RunResult:
            return await execute(
                options, endpoint=endpoint, progress=display, echo=display.echo, prepared=prepared
            )

        try:  # --simulate (endpoint None): execute starts the simulator under the state lease
            result = anyio.run(main, endpoint)
        finally:
            reinstall()  # the event loop put the default handlers back
            display.close()
        _echo(_summary(result.outcome, str(result.out_dir), prepared.plan.pricing, shard))
        if (gate := result.review) is not None:  # docs/manifest.md#from-only
            for step, parents in gate.held.items():
                _echo(
                    f"flux-pipeline: held for review: {len(parents)} parent(s) of step {step} "
                    f"(from.only: {prepared.plan.gates[step]}); decide with "
                    f"`flux-pipeline review {manifest}`, then run again"
                )
        if as_json:
            document = summary_json(result, prepared.plan.pricing, shard)
            click.echo(json.dumps(document, ensure_ascii=False, sort_keys=True))
    return result.outcome.exit_code


COMMANDS: list[click.Command] = [run]
