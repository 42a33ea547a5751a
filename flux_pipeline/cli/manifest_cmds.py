"""``validate``, ``plan`` and ``schema`` (docs/cli.md). Nothing here talks to the API.

``plan`` asks ``flux_pipeline.plan.resume.decide`` what would happen to each task, given what the
state DB and the lock file know of it (``known_state``: the adoption ``run`` does,
``flux_pipeline/run/adopt.py``, in memory; then ``flux_pipeline/plan/focus.py``, as ``run``)
and whether its files are intact by the rule ``run`` uses (``flux_pipeline/run/verify.py``);
against a lock it also says what is new, unchanged and orphaned (``cli/plan_review.py``).
``plan`` writes nothing: a file it hashes and finds right is hashed again by the next
``plan``, until a ``run`` records its memo.

``validate`` streams the plan (``flux_pipeline/plan/stream.py``), and so does ``plan --json``
when nothing needs the whole plan (``cli/plan_stream.py``, docs/cli.md).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import click

from flux_pipeline.cli.decisions import PAY, stored_tasks
from flux_pipeline.cli.decisions import StoredTask as StoredTask  # re-exported
from flux_pipeline.cli.decisions import decide_all as decide_all
from flux_pipeline.cli.decisions import load_states as load_states
from flux_pipeline.cli.options import (
    Shard,
    echo_warnings,
    lock_options,
    lock_path_of,
    out_option,
    review_options,
    review_path_of,
    selection_options,
    state_option,
    strict_option,
)
from flux_pipeline.cli.plan_output import write_json, write_table
from flux_pipeline.cli.plan_review import expired_hint, render_markdown, render_text, review
from flux_pipeline.cli.plan_stream import plan_json, streamable
from flux_pipeline.errors import ExitCode, ManifestError
from flux_pipeline.manifest.schema import schema_text
from flux_pipeline.media import write_atomic
from flux_pipeline.plan.cost import by_mode, cost_json, describe
from flux_pipeline.plan.expand import Plan, load_plan
from flux_pipeline.plan.focus import focus
from flux_pipeline.plan.generations import with_generations
from flux_pipeline.plan.resume import Policy
from flux_pipeline.plan.stream import PlanStream, open_stream
from flux_pipeline.report.lockfile import Lock, load_lock
from flux_pipeline.run.adopt import known_state

if TYPE_CHECKING:
    from flux_pipeline.report.review_summary import ReviewSummary
    from flux_pipeline.report.reviewfile import Review


@click.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object on stdout: every manifest with its counts or its diagnostics.",
)
@strict_option("the manifest is not ok")
def validate(manifests: Sequence[Path], as_json: bool, strict: bool) -> int:
    """Check manifests, their templates and the files they use; nothing is sent."""
    failed = 0
    errors = 0
    results: list[dict[str, object]] = []
    for path in manifests:
        try:
            plan = open_stream(path, file=str(path))
            plan.check(strict=strict)
        except ManifestError as exc:
            failed += 1
            errors += len(exc.diagnostics)
            for diagnostic in exc.diagnostics:
                click.echo(str(diagnostic), err=True)
            results.append(_invalid_json(path, exc))
            continue
        echo_warnings(plan.warnings)
        steps = len(plan.step_ids)
        warned = len(plan.warnings)
        if as_json:
            results.append(_valid_json(path, plan))
        else:
            note = f", {warned} warning{'s' * (warned != 1)}" if warned else ""
            click.echo(f"{path}: ok ({plan.total} tasks in {steps} step{'s' * (steps != 1)}{note})")
    if failed:
        click.echo(
            f"flux-pipeline: {errors} error(s) in {failed} of {len(manifests)} manifest(s)",
            err=True,
        )
    code = ExitCode.INVALID if failed else ExitCode.OK
    if as_json:
        document = {"ok": not failed, "exit_code": int(code), "errors": errors}
        click.echo(json.dumps({**document, "manifests": results}, ensure_ascii=False, indent=2))
    return code


def _valid_json(path: Path, plan: PlanStream) -> dict[str, object]:
    return {
        "path": str(path),
        "ok": True,
        "name": plan.name,
        "tasks": plan.total,
        "steps": {step: plan.counts[step] for step in plan.step_ids},
        "diagnostics": [],
        "warnings": [
            {"file": w.file, "line": w.line, "column": w.column, "message": w.message}
            for w in plan.warnings
        ],
    }


def _invalid_json(path: Path, exc: ManifestError) -> dict[str, object]:
    return {
        "path": str(path),
        "ok": False,
        "name": None,
        "tasks": None,
        "steps": None,
        "diagnostics": [
            {"file": d.file, "line": d.line, "column": d.column, "message": d.message}
            for d in exc.diagnostics
        ],
    }


@click.command()
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "md", "gha-matrix"]),
    default="text",
    show_default=True,
    help="A table, a JSON document, Markdown for a pull request comment (new, unchanged and "
    "orphaned tasks against the lock file), or the GitHub Actions matrix of the shards "
    '({"include": [{"shard": "1/3", "label": "1of3"}, ...]}, for fromJSON()).',
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option(
    "--shard", type=Shard(), help="Only the tasks of shard I of N (e.g. 2/3; chains stay whole)."
)
@click.option(
    "--max-shards",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="With --format gha-matrix: at most this many shards (and never more than root tasks "
    "or GitHub's 256 jobs).",
)
@out_option(
    help="Output directory, where finished tasks' files should be [default: out/<manifest name>]."
)
@state_option(
    help="State DB to read task states from [default: <out>/.flux-pipeline/state.sqlite3, "
    "state-IofN.sqlite3 with --shard]."
)
@lock_options
@review_options
@selection_options
@click.option(
    "--regenerate-expired",
    is_flag=True,
    help="Show expired tasks as a run with --regenerate-expired would: created again.",
)
@strict_option("no plan is printed")
def plan(
    manifest: Path,
    fmt: str,
    as_json: bool,
    shard: tuple[int, int] | None,
    max_shards: int,
    out_dir: Path | None,
    state_path: Path | None,
    lock_path: Path | None,
    no_lock: bool,
    review_path: Path | None,
    no_review: bool,
    only: tuple[str, ...],
    limit: int | None,
    regenerate: tuple[str, ...],
    regenerate_rejected: bool,
    regenerate_expired: bool,
    strict: bool,
) -> int:
    """List the tasks of MANIFEST, each with its state and why it would run."""
    from flux_pipeline.layout import default_out_dir, default_state_path
    from flux_pipeline.plan import selection
    from flux_pipeline.plan.shard import gha_matrix, select
    from flux_pipeline.report.reviewfile import read_review

    if (as_json or fmt == "json") and fmt in ("text", "json"):
        try:
            lock_at = lock_path_of(manifest, lock_path, no_lock)
            review_at = review_path_of(manifest, review_path, no_review)
        except click.UsageError:
            pass  # reported below, after the manifest's own problems
        else:
            if streamable(
                shard=shard,
                only=only,
                limit=limit,
                regenerate=regenerate,
                regenerate_rejected=regenerate_rejected,
                lock=lock_at,
                review=review_at,
            ):
                policy = Policy(regenerate_expired=regenerate_expired)
                code = plan_json(
                    manifest,
                    out_dir=out_dir,
                    state_path=state_path,
                    policy=policy,
                    strict=strict,
                    stream=sys.stdout,
                )
                if code is not None:
                    return code
    the_plan = load_plan(manifest, file=str(manifest), strict=strict)
    echo_warnings(the_plan.warnings)
    if fmt == "gha-matrix":
        click.echo(json.dumps(gha_matrix(the_plan, max_shards), separators=(",", ":")))
        return ExitCode.OK
    whole = the_plan
    if shard is not None:
        the_plan = select(the_plan, *shard)
    only, again = selection.parse_only(only), selection.parse_only(regenerate)
    selection.check_patterns(the_plan, only, "--only")  # before anything is read
    selection.check_patterns(the_plan, again, "--regenerate")
    review_at = review_path_of(manifest, review_path, no_review)
    review_file = read_review(review_at, manifest=manifest.name) if review_at else None
    as_json = as_json or fmt == "json"
    out_dir = out_dir or default_out_dir(the_plan.name)
    path = lock_path_of(manifest, lock_path, no_lock)
    lock = load_lock(path, plan=the_plan, out_dir=out_dir) if path is not None else None
    state = state_path or default_state_path(out_dir, shard)
    known = anyio.run(known_state, the_plan, state, lock, out_dir)
    verdicts = review_file.verdicts() if review_file is not None else None
    focused = focus(
        known.plan,
        known.records,
        regenerate=again,
        only=only,
        limit=limit,
        decisions=verdicts,
        regenerate_rejected=regenerate_rejected,
    )
    the_plan = focused.plan
    whole = with_generations(whole, the_plan.generations)  # what the manifest makes now
    states = stored_tasks(known.records)
    policy = Policy(regenerate_expired=regenerate_expired)
    decisions = decide_all(the_plan, states, out_dir, policy=policy)
    stream = sys.stdout
    found = review(
        the_plan, decisions, lock or Lock(path=path or manifest, manifest=""), whole=whole
    )
    summary = _review_summary(the_plan, states)
    paying = by_mode(t for t, d in zip(the_plan.tasks, decisions, strict=True) if d.action in PAY)
    if fmt == "md":
        stream.write(render_markdown(the_plan, found, cost=describe(paying, the_plan.pricing)))
    elif as_json:
        cost = cost_json(paying, the_plan.pricing)
        reviewed = summary.to_json() if summary is not None else None
        write_json(the_plan, decisions, stream, found.to_json() if lock else None, cost, reviewed)
    else:
        for note in focused.notes:
            stream.write(f"{note}\n")
        write_table(the_plan, decisions, stream)
        if lock is not None:
            stream.write(render_text(found))
        elif hint := expired_hint(found):
            stream.write(hint + "\n")
        stream.write(f"would create {describe(paying, the_plan.pricing)}\n")
        if summary is not None:
            for line in _review_lines(the_plan, review_file, summary):
                stream.write(line + "\n")
    stream.flush()
    return ExitCode.OK


def _review_summary(plan: Plan, states: Mapping[str, StoredTask]) -> ReviewSummary | None:
    """What the review file changes (report/review_summary.py), over the plan's tasks;
    decisions for chained tasks planned at run time are not orphaned."""
    from flux_pipeline.report.review_summary import planned_keys, summarize

    outputs = {key: len(stored.outputs) for key, stored in states.items() if stored.outputs}
    keys = planned_keys(plan, outputs)
    summary = summarize(plan, ((task.key, task.step) for task in plan.tasks))
    if summary is None:
        return None
    orphaned = tuple(key for key in summary.orphaned if key not in keys)
    return dataclasses.replace(summary, orphaned=orphaned)


def _review_lines(plan: Plan, review_file: Review | None, summary: ReviewSummary) -> list[str]:
    from flux_pipeline.report.review_summary import summary_lines

    ids = {k: d.id for k, d in review_file.decisions.items()} if review_file is not None else {}
    where = f" ({review_file.path})" if review_file is not None else " (no review file)"
    lines = summary_lines(plan, summary, ids)
    return [lines[0] + where, *lines[1:]]


@click.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the schema to this file (parent directories made) instead of printing it.",
)
def schema(output: Path | None) -> int:
    """Print the manifest JSON Schema (or write it to a file, for editors' modelines)."""
    if output is None:
        sys.stdout.write(schema_text())
    else:
        write_atomic(output, schema_text())
    return ExitCode.OK


COMMANDS: list[click.Command] = [validate, plan, schema]
