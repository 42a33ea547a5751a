"""``diff`` and ``merge``: reviewing a manifest change, combining shard runs (docs/cli.md)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import anyio
import click

from flux_pipeline.cli.options import Shard as Shard  # re-exported: run_cmd imports it here
from flux_pipeline.cli.options import out_option, review_options, review_path_of, state_option


@click.command()
@click.argument("report_a", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("report_b", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "md"]),
    default="text",
    show_default=True,
    help="Text for people, JSON for tools, Markdown for a pull request comment.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--exit-code", is_flag=True, help="Exit 1 when the reports differ.")
def diff(report_a: Path, report_b: Path, fmt: str, as_json: bool, exit_code: bool) -> int:
    """Compare two report.json files: tasks added, removed, changed (which part of the key)
    and outputs whose bytes changed. Tasks are matched by readable id."""
    from flux_pipeline.report.diff import diff_reports, render_json, render_markdown, render_text

    result = diff_reports(report_a, report_b)
    render = {"text": render_text, "json": render_json, "md": render_markdown}
    sys.stdout.write(render["json" if as_json else fmt](result))
    return 1 if exit_code and not result.empty else 0


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--from",
    "sources",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="A shard's output directory (or downloaded artifact), state DB or report.json; "
    "repeatable. Directories are searched for *.sqlite3 and report.json.",
)
@out_option(help="Output directory of the merged run [default: out/<manifest name>].")
@state_option(help="Merged state DB [default: <out>/.flux-pipeline/state.sqlite3].")
@review_options
def merge(
    manifest: Path,
    sources: Sequence[Path],
    out_dir: Path | None,
    state_path: Path | None,
    review_path: Path | None,
    no_review: bool,
) -> int:
    """Combine shard runs of MANIFEST into one state DB, output directory and report.

    Exits like run: 0 every task done and on disk, 1 some failed, 3 some unfinished or files
    missing (rerun MANIFEST to finish: nothing done is paid twice)."""
    from flux_pipeline.layout import default_out_dir, default_state_path
    from flux_pipeline.plan.expand import load_plan
    from flux_pipeline.report.reviewfile import read_review
    from flux_pipeline.run.merge import merge as merge_runs

    plan = load_plan(manifest, file=str(manifest))
    review_at = review_path_of(manifest, review_path, no_review)
    found = read_review(review_at, manifest=manifest.name) if review_at is not None else None
    out_dir = out_dir or default_out_dir(plan.name)
    state_path = state_path or default_state_path(out_dir)

    verdicts = found.verdicts() if found is not None else None  # gated as run gates it
    merging = partial(merge_runs, plan, sources, out_dir=out_dir, state_path=state_path)
    result = anyio.run(partial(merging, decisions=verdicts))
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts.items()))
    click.echo(
        f"flux-pipeline: merged {result.databases} state DB(s) and {result.reports} report(s)"
        + (f" of shards {', '.join(result.shards)}" if result.shards else "")
        + f" into {out_dir}/: {counts or 'no tasks'}; {result.copied} file(s) copied, "
        f"{result.present} already there, {len(result.missing)} missing",
        err=True,
    )
    if result.ignored:
        click.echo(
            f"flux-pipeline: {result.ignored} report entr(ies) not in the manifest, ignored",
            err=True,
        )
    for path in result.missing[:10]:
        click.echo(f"flux-pipeline: missing: {path} (rerun to download it again)", err=True)
    return result.exit_code


COMMANDS: list[click.Command] = [diff, merge]
