"""``index.html``: the review gallery a person opens in a browser, from the file system or
served by ``flux-pipeline review`` (docs/reports.md).

Files, all relative to OUT so an unzipped CI artifact works as it is:

- ``index.html``: a small static page (name, counts, links to the other reports) that loads
  the three files below; a strict Content-Security-Policy (``CSP``) allows scripts and styles
  from those files only (no inline script or style, no network but the page's own origin).
- ``.flux-pipeline/gallery/app.js`` and ``app.css``: the viewer, package data copied from
  ``flux_pipeline/report/gallery_assets/``. It builds every element with ``textContent``,
  never HTML from data.
- ``.flux-pipeline/gallery/data.js``: the tasks (``gallery_data``), compact.
- ``.flux-pipeline/thumbs/<sha256>.webp``: thumbnails (``thumbs``).

Earlier versions cut the gallery into ``index-N.html`` pages: those are removed
(``stale_pages``); the viewer pages in the browser instead.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from flux_pipeline import redact
from flux_pipeline.layout import STATE_DIR
from flux_pipeline.media import write_atomic
from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.report.gallery_data import (
    data_js_pieces,
    gallery_parts,
    previous_gallery,
)

ASSETS_DIR = f"{STATE_DIR}/gallery"  # relative to OUT
ASSETS = ("app.js", "app.css")
DATA = "data.js"
DATA_PATH = f"{ASSETS_DIR}/{DATA}"  # relative to OUT
PAGE_NAME = re.compile(r"index-(\d+)\.html")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'"
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def asset_text(name: str) -> str:
    """The packaged viewer file ``name`` (``app.js``, ``app.css``)."""
    folder = resources.files("flux_pipeline.report").joinpath("gallery_assets")
    return folder.joinpath(name).read_text(encoding="utf-8")


def index_html(name: str, entries: Sequence[TaskEntry]) -> str:
    """The static page: what is useful without the script, and the script's three files."""
    counts = Counter(e.state.value for e in entries)
    fails = Counter(e.failure_code for e in entries if e.state.failed)
    summary = " ".join(
        f'<span class="count {_e(state)}">{_e(state)}: {n}</span>'
        for state, n in sorted(counts.items())
    )
    failures = " ".join(
        f'<span class="count failed">{_e(code)}: {n}</span>' for code, n in sorted(fails.items())
    )
    base = _e(ASSETS_DIR)
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="referrer" content="no-referrer">',
            f"<title>{_e(name)} &middot; flux-pipeline gallery</title>",
            f'<link rel="stylesheet" href="{base}/app.css">',
            f'<script src="{base}/{DATA}" defer></script>',
            f'<script src="{base}/app.js" defer></script>',
            "</head><body>",
            f'<header id="head"><h1>{_e(name)}</h1>',
            f'<p class="summary">{summary} <span class="count">total: {len(entries)}</span></p>',
            f'<p class="summary">failures by code: {failures}</p>' if failures else "",
            '<nav class="files"><a href="report.md">report.md</a> '
            '<a href="report.json">report.json</a> <a href="junit.xml">junit.xml</a></nav>',
            "</header>",
            "<noscript><p>The gallery needs JavaScript; report.md lists every task.</p></noscript>",
            '<div id="banner" role="alert" hidden></div>',
            '<main id="app"></main>',
            "</body></html>",
            "",
        ]
    )


def write_gallery(
    out_dir: Path,
    *,
    name: str,
    manifest: str,
    entries: Sequence[TaskEntry],
    step_order: Sequence[str],
    decisions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``index.html`` and its files into ``out_dir`` (every one through ``redact``),
    remove the pages of an older gallery; returns the path of ``index.html``. Tasks the
    gallery it replaces did not have are marked new (``gallery_data``)."""
    assets = out_dir / ASSETS_DIR
    marks, sizes = previous_gallery(assets / DATA)  # the old data itself dropped at once
    head, rows = gallery_parts(
        name=name,
        manifest=manifest,
        entries=entries,
        step_order=step_order,
        out_dir=out_dir,
        decisions=decisions,
        marks=marks,
        sizes=sizes,
    )
    for asset in ASSETS:
        write_atomic(assets / asset, asset_text(asset))
    # streamed: a 100,000-task gallery's rows and text are never held at once
    write_atomic(assets / DATA, redact.scrub_pieces(data_js_pieces(head, rows)))
    page = out_dir / "index.html"
    write_atomic(page, redact.scrub(index_html(name, entries)))
    for stale in stale_pages(out_dir):
        stale.unlink(missing_ok=True)
    return page


def stale_pages(out_dir: Path) -> list[Path]:
    """The ``index-N.html`` pages an older gallery left in ``out_dir``."""
    if not out_dir.is_dir():
        return []
    return [path for path in out_dir.iterdir() if PAGE_NAME.fullmatch(path.name)]
