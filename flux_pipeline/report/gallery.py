"""``index.html``: the gallery a person opens in a browser, straight from the file system.

Built from the report's task entries (``entry.TaskEntry``, made by ``files.task_entries``).
Design choices:

- One self-contained page: inline CSS, no script (a Content-Security-Policy forbids any, so a
  prompt that slipped past escaping still could not run), no server: every image is a relative,
  percent-encoded link to the output file beside it. Every string from the manifest or the API
  is HTML-escaped.
- Grouped by step (manifest order), then by the first axis of the task's own matrix cell
  (``TaskEntry.cell``, never re-parsed from the readable id, so a value holding ``,`` or ``=``
  stays whole); cards within a row by readable id, captioned with the other axes. A chained
  edit's card shows its parent's image beside its own (lineage), and names the parent.
- Prompts are shown under the image (clamped to a few lines) and in full on hover.
- Failed and expired tasks are cards with their failCode and failMsg; tasks not done yet
  (planned, in flight, ambiguous) are cards saying so; a downloaded task whose file is gone
  says that instead of showing a broken image.
- Big runs: images load lazily (``loading="lazy"``) in fixed-size boxes, and the gallery is cut
  into pages of ``PAGE_SIZE`` cards (``index.html``, ``index-2.html``, ...) linked from each
  other, so a 100,000-task run gives 100 pages of about a megabyte, not one page of 100 MB.
  Generation is one pass over the sorted entries.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from flux_pipeline.report.entry import Cell, TaskEntry
from flux_pipeline.states import TaskState

PAGE_SIZE = 1000
PAGE_NAME = re.compile(r"index-(\d+)\.html")

CSS = """
:root { color-scheme: light dark; --fg: #1d2125; --muted: #5f6b76; --bg: #f5f6f8;
  --card: #fff; --line: #d8dde3; --bad: #c62828; --warn: #a66a00; --ok: #2e7d32; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8eb; --muted: #9aa5b1; --bg: #15181c;
  --card: #1f2429; --line: #333b44; --bad: #ef6b6b; --warn: #e0a63a; --ok: #6cc070; } }
* { box-sizing: border-box; }
body { margin: 0; padding: 1rem 1.5rem 3rem; font: 14px/1.4 system-ui, sans-serif;
  color: var(--fg); background: var(--bg); }
h1 { font-size: 1.5rem; margin: .2rem 0 .5rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .5rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1rem; margin: 1rem 0 .4rem; color: var(--muted); font-weight: 600; }
a { color: inherit; }
code { font: 11px/1.3 ui-monospace, monospace; word-break: break-all; }
.rid { color: var(--muted); }
.caption { font-weight: 600; overflow-wrap: anywhere; }
.summary, nav { display: flex; flex-wrap: wrap; gap: .4rem 1rem; margin: .4rem 0; }
.count { padding: .1rem .5rem; border-radius: 1rem; background: var(--card);
  border: 1px solid var(--line); }
.count.failed, .count.expired { color: var(--bad); border-color: var(--bad); }
.grid { display: grid; gap: .8rem; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); }
.grid.chained { grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: .5rem; display: flex; flex-direction: column; gap: .35rem; min-width: 0; }
.card.failed, .card.expired { border: 2px solid var(--bad); }
.card.submitting { border: 2px dashed var(--warn); }
.images { display: flex; gap: .4rem; align-items: center; }
.images > * { flex: 1 1 0; min-width: 0; }
.images .arrow { flex: 0 0 auto; color: var(--muted); font-size: 1.3rem; }
.parent { opacity: .85; }
.box { display: block; aspect-ratio: 1 / 1; width: 100%; border-radius: 4px;
  background: repeating-conic-gradient(#8881 0% 25%, transparent 0% 50%) 50% / 16px 16px; }
img.box { object-fit: contain; }
div.box { display: flex; flex-direction: column; align-items: center; justify-content: center;
  text-align: center; padding: .5rem; color: var(--muted); overflow: hidden; }
.failed div.box, .expired div.box { color: var(--bad); }
.reason { font-size: 12px; overflow-wrap: anywhere; }
.label { font-size: 11px; color: var(--muted); text-align: center; }
.prompt { margin: 0; display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical;
  overflow: hidden; }
.state { font-size: 12px; font-weight: 600; }
.state.downloaded { color: var(--ok); }
.state.failed, .state.expired { color: var(--bad); }
.state.submitting { color: var(--warn); }
"""

CSP = "script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def page_name(number: int) -> str:
    return "index.html" if number == 1 else f"index-{number}.html"


def _axes(cell: Cell) -> str:
    return ", ".join(f"{axis}={label}" for axis, label in cell)


@dataclass(frozen=True, slots=True)
class _Card:
    entry: TaskEntry
    parent: TaskEntry | None

    @property
    def step(self) -> str:
        return self.entry.step

    @property
    def row(self) -> str:
        """The first axis of the cell: cards are grouped into rows by it."""
        return _axes(self.entry.cell[:1])

    @property
    def caption(self) -> str:
        rest = _axes(self.entry.cell[1:])
        repeat = self.entry.readable_id.rpartition("#")[2]  # an id always ends "#<repeat>"
        own = f"{rest} #{repeat}" if rest else f"#{repeat}"
        if self.parent is None:
            return own
        origin = _axes(self.parent.cell) or self.parent.step
        return f"{origin} \u2192 {self.step} {own}"


def _cards(entries: Sequence[TaskEntry], step_order: list[str]) -> list[_Card]:
    by_id = {e.readable_id: e for e in entries}
    rank = {step: i for i, step in enumerate(step_order)}
    cards = [_Card(e, by_id.get(e.parent) if e.parent else None) for e in entries]
    # Stable: entries are sorted by readable id already.
    cards.sort(key=lambda c: (rank.get(c.step, len(rank)), c.step, c.row))
    return cards


class _Renderer:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def src(self, path: str) -> str:
        return quote(path, safe="/")

    def image(self, entry: TaskEntry, output_index: int | None, alt: str, waiting: str = "") -> str:
        """The image of ``entry``'s output (all outputs when ``output_index`` is None), or a
        box saying why there is none."""
        outputs = entry.outputs
        if output_index is not None:
            outputs = outputs[output_index : output_index + 1]
        state = entry.state
        if outputs and state in (TaskState.DOWNLOADED, TaskState.SUCCEEDED):
            parts = []
            for output in outputs:
                path = output.path
                if (self.out_dir / path).is_file():
                    src = _e(self.src(path))
                    parts.append(
                        f'<a href="{src}"><img class="box" src="{src}" alt="{_e(alt)}" '
                        f'title="{_e(alt)}" loading="lazy" decoding="async"></a>'
                    )
                else:
                    parts.append(
                        f'<div class="box">file missing<span class="reason">'
                        f"<code>{_e(path)}</code></span></div>"
                    )
            return "".join(parts)
        if state.failed:
            reason = entry.fail_msg or state.text
            return (
                f'<div class="box"><strong>{_e(entry.failure_code)}</strong>'
                f'<span class="reason">{_e(reason)}</span></div>'
            )
        return f'<div class="box">{_e(waiting or state.text)}</div>'

    def card(self, card: _Card) -> str:
        entry = card.entry
        state = entry.state.value
        prompt = entry.prompt
        blocked = card.parent is not None and card.parent.state.failed
        waiting = (
            "not started: its parent failed" if blocked and entry.state is TaskState.PLANNED else ""
        )
        own = self.image(entry, None, prompt, waiting)
        if card.parent is not None:
            parent_prompt = card.parent.prompt
            parent_img = self.image(card.parent, entry.parent_output_index or 0, "")
            images = (
                f'<div class="parent">{parent_img}<div class="label" title="{_e(parent_prompt)}">'
                f"parent</div></div>"
                '<span class="arrow" aria-hidden="true">&rarr;</span>'
                f'<div>{own}<div class="label">{_e(card.step)}</div></div>'
            )
        else:
            images = own
        lines = [
            f'<article class="card {_e(state)}" id="{_e(_anchor(entry.readable_id))}">',
            f'<div class="caption">{_e(card.caption)}</div>',
            f'<div class="images">{images}</div>',
            f'<code class="rid">{_e(entry.readable_id)}</code>',
            f'<span class="state {_e(state)}">{_e(entry.state.text)}'
            + (f" &middot; {_e(entry.fail_code)}" if entry.fail_code else "")
            + "</span>",
        ]
        if prompt:
            lines.append(f'<p class="prompt" title="{_e(prompt)}">{_e(prompt)}</p>')
        lines.append("</article>")
        return "".join(lines)


def _anchor(readable_id: str) -> str:
    return "t-" + quote(readable_id, safe="")


def _pages(cards: list[_Card], size: int) -> Iterator[list[_Card]]:
    for start in range(0, len(cards), size):
        yield cards[start : start + size]
    if not cards:
        yield []


def render_pages(
    *,
    name: str,
    entries: Sequence[TaskEntry],
    step_order: list[str],
    out_dir: Path,
    page_size: int = PAGE_SIZE,
) -> list[str]:
    """The gallery pages' HTML: ``[index.html, index-2.html, ...]``."""
    cards = _cards(entries, step_order)
    pages = list(_pages(cards, page_size))
    renderer = _Renderer(out_dir)
    counts = Counter(e.state.value for e in entries)
    fail_codes = Counter(e.failure_code for e in entries if e.state.failed)
    result = []
    for number, page in enumerate(pages, start=1):
        parts = [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(name)} &middot; flux-pipeline gallery"
            + (f" (page {number} of {len(pages)})" if len(pages) > 1 else "")
            + "</title>",
            f"<style>{CSS}</style></head><body>",
            f"<header><h1>{_e(name)}</h1>",
        ]
        parts.append('<div class="summary">')
        parts += [
            f'<span class="count {_e(state)}">{_e(state)}: {n}</span>'
            for state, n in sorted(counts.items())
        ]
        parts.append(f'<span class="count">total: {len(entries)}</span></div>')
        if fail_codes:
            parts.append('<div class="summary">failures by code:')
            parts += [
                f'<span class="count failed">{_e(code)}: {n}</span>'
                for code, n in sorted(fail_codes.items())
            ]
            parts.append("</div>")
        parts.append(
            '<nav><a href="report.md">report.md</a><a href="report.json">report.json</a>'
            '<a href="junit.xml">junit.xml</a></nav>'
        )
        if len(pages) > 1:
            parts.append(_page_nav(number, len(pages)))
        parts.append("</header><main>")
        if not entries:
            parts.append("<p>No tasks.</p>")
        current: tuple[str, str] | None = None
        for card in page:
            if current is None or current[0] != card.step:
                if current is not None:
                    parts.append("</div></section>")
                chained = " chained" if card.parent is not None else ""
                parts.append(f'<section><h2 id="step-{_e(card.step)}">step {_e(card.step)}</h2>')
                parts.append(_row_heading(card.row) + f'<div class="grid{chained}">')
            elif current[1] != card.row:
                chained = " chained" if card.parent is not None else ""
                parts.append("</div>" + _row_heading(card.row) + f'<div class="grid{chained}">')
            current = (card.step, card.row)
            parts.append(renderer.card(card))
        if current is not None:
            parts.append("</div></section>")
        parts.append("</main>")
        if len(pages) > 1:
            parts.append(_page_nav(number, len(pages)))
        parts.append("</body></html>\n")
        result.append("\n".join(parts))
    return result


def _row_heading(row: str) -> str:
    return f"<h3>{_e(row)}</h3>" if row else ""


def _page_nav(number: int, total: int) -> str:
    links = []
    if number > 1:
        links.append(f'<a href="{page_name(number - 1)}">&larr; previous</a>')
    for other in range(1, total + 1):
        if other == number:
            links.append(f"<strong>{other}</strong>")
        else:
            links.append(f'<a href="{page_name(other)}">{other}</a>')
    if number < total:
        links.append(f'<a href="{page_name(number + 1)}">next &rarr;</a>')
    return '<nav class="pages">pages: ' + " ".join(links) + "</nav>"


def stale_pages(out_dir: Path, page_count: int) -> list[Path]:
    """Pages of an earlier, bigger gallery in ``out_dir`` that the new one no longer has."""
    stale = []
    if out_dir.is_dir():
        for path in out_dir.iterdir():
            match = PAGE_NAME.fullmatch(path.name)
            if match and int(match.group(1)) > page_count:
                stale.append(path)
    return stale
