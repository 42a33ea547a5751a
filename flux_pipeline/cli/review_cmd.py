"""``flux-pipeline review MANIFEST``: the report and gallery rebuilt from the state DB (as
``report`` does), then served on 127.0.0.1 with the decisions API (``cli/review_server.py``)
until Ctrl-C or SIGTERM, exit 0 (docs/cli.md#review-manifest). Each decision made in the
page is written to the review file at once (report/reviewfile.py); commit it, and the next ``run``
chains the picked parents (docs/manifest.md#from-only).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import anyio
import click

from flux_pipeline.cli.options import out_option, review_options, review_path_of, state_option
from flux_pipeline.errors import ExitCode


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@out_option(help="Output directory to report and serve [default: out/<manifest name>].")
@state_option(help="State DB to read [default: <out>/.flux-pipeline/state.sqlite3].")
@review_options
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port to listen on (0: any free port; the URL printed says which).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on: only 127.0.0.1 is accepted (the decisions API has no login).",
)
@click.option("--no-open", is_flag=True, help="Do not open the page in a browser.")
def review(
    manifest: Path,
    out_dir: Path | None,
    state_path: Path | None,
    review_path: Path | None,
    no_review: bool,
    port: int,
    host: str,
    no_open: bool,
) -> int:
    """Rebuild the report of MANIFEST and serve its gallery to pick and reject results."""
    from flux_pipeline.cli.review_server import DecisionBook, bind, create_app, serve
    from flux_pipeline.layout import default_out_dir, default_state_path
    from flux_pipeline.plan.expand import load_plan
    from flux_pipeline.plan.generations import of_records, with_generations
    from flux_pipeline.report.files import RunInfo, task_entries, write_reports
    from flux_pipeline.report.review_summary import summarize, summary_lines
    from flux_pipeline.report.reviewfile import reviewed_plan
    from flux_pipeline.run.lease import hold_lease
    from flux_pipeline.run.store import read_records

    file = review_path_of(manifest, review_path, no_review)
    manifest_plan = load_plan(manifest)
    plan, found = reviewed_plan(manifest_plan, file)  # a bad review file: exit 2 now
    out = out_dir or default_out_dir(plan.name)
    path = state_path or default_state_path(out)
    sock = bind(host, port)  # refused before anything is written
    try:
        with hold_lease(path, out, command=f"flux-pipeline review {manifest}"):  # not mid-run
            records = anyio.run(read_records, path)
            # at the generations the DB records, then gated (plan/generations.py)
            plan = with_generations(manifest_plan, of_records(records.values()))
            plan, _ = reviewed_plan(plan, file)
            entries = task_entries(plan, records)
            write_reports(plan, records, out, RunInfo(settings={}))
        book = DecisionBook(
            path=file,
            manifest=manifest.name,
            tasks={entry.key: (entry.readable_id, entry.step) for entry in entries},
            decisions=dict(found.decisions) if found is not None else {},
        )
        summary = summarize(plan, ((entry.key, entry.step) for entry in entries))
        if summary is not None:
            ids = {key: d.id for key, d in book.decisions.items()}
            for line in summary_lines(plan, summary, ids):
                click.echo(line)
        url = "http://{}:{}/".format(*sock.getsockname()[:2])

        def announce() -> None:
            saved = f"decisions saved to {file}" if file else "decisions not saved (--no-review)"
            click.echo(f"flux-pipeline review: serving {out} at {url} ({saved}; Ctrl-C stops)")
            sys.stdout.flush()
            if not no_open:
                import webbrowser

                webbrowser.open(url)

        def quietly(signum: int, frame: FrameType | None) -> None:
            """uvicorn re-raises the signal that stopped it: by then it only means done."""

        previous = {sig: signal.signal(sig, quietly) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            serve(create_app(book, out, sock.getsockname()[1]), sock, announce)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        sock.close()
    return ExitCode.OK


COMMANDS: list[click.Command] = [review]
