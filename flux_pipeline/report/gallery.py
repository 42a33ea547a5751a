"""``index.html``: the gallery a person opens in a browser, straight from the file system.

Built from the report's task entries (``report.task_entries``). Design choices:

- One self-contained page: inline CSS, no script (a Content-Security-Policy forbids any, so a
  prompt that slipped past escaping still could not run), no server: every image is a relative,
  percent-encoded link to the output file beside it. Every string from the manifest or the API
  is HTML-escaped.
- Grouped by step (manifest order), then by matrix cell (the ``@axis=value,...`` part of the
  readable id); cards within a cell by readable id. A chained edit's card shows its parent's
  image beside its own (lineage), and names the parent.
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

PAGE_SIZE = 1000
PAGE_NAME = re.compile(r"index-(\d+)\.html")

STATE_TEXT = {
    "planned": "not started yet",
    "submitting": "ambiguous: create sent, answer lost",
    "submitted": "in flight at the API",
    "succeeded": "finished, not downloaded yet",
    "downloaded": "done",
    "failed": "failed",
    "expired": "expired before download",
}

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


def cell_label(entry: dict[str, Any], parent: dict[str, Any] | None) -> str:
    """The matrix cell of a task: ``@axis=value,...`` of its own part of the readable id."""
    rid: str = entry["readable_id"]
    if parent is not None:
        index = entry.get("parent_output_index") or 0
        prefix = parent["readable_id"] + (f"~{index}" if index else "") + "/"
        if rid.startswith(prefix):
            rid = rid[len(prefix) :]
    own = rid.rpartition("#")[0] or rid
    step: str = entry["step"]
    return own[len(step) :] if own.startswith(step) else own


_NEXT_AXIS = re.compile(r",(?=[a-z0-9][a-z0-9_-]*=)")


def split_cell(cell: str) -> tuple[str, str]:
    """``@a=1,b=x`` -> (``a=1``, ``b=x``): the first axis groups cards into rows, the rest
    labels each card. Values may hold commas; a new axis starts at ``,name=``."""
    text = cell[1:] if cell.startswith("@") else cell
    parts = _NEXT_AXIS.split(text)
    return parts[0], ", ".join(parts[1:])


@dataclass(frozen=True)
class _Card:
    step: str
    cell: str
    entry: dict[str, Any]
    parent: dict[str, Any] | None
    parent_cell: str = ""

    @property
    def row(self) -> str:
        return split_cell(self.cell)[0]

    @property
    def caption(self) -> str:
        rest = split_cell(self.cell)[1]
        repeat = self.entry["readable_id"].rpartition("#")[2]
        own = f"{rest} #{repeat}" if rest else f"#{repeat}"
        if self.parent is None:
            return own
        first, more = split_cell(self.parent_cell)
        origin = ", ".join(p for p in (first, more) if p) or self.parent["step"]
        return f"{origin} \u2192 {self.step} {own}"


def _cards(entries: list[dict[str, Any]], step_order: list[str]) -> list[_Card]:
    by_id = {e["readable_id"]: e for e in entries}
    rank = {step: i for i, step in enumerate(step_order)}
    parents = {
        e["readable_id"]: by_id.get(e["parent"]) if e.get("parent") else None for e in entries
    }
    cells = {rid: cell_label(by_id[rid], parent) for rid, parent in parents.items()}
    cards = []
    for entry in entries:
        parent = parents[entry["readable_id"]]
        parent_cell = cells[parent["readable_id"]] if parent is not None else ""
        cards.append(_Card(entry["step"], cells[entry["readable_id"]], entry, parent, parent_cell))
    # Stable: entries are sorted by readable id already.
    cards.sort(key=lambda c: (rank.get(c.step, len(rank)), c.step, c.row))
    return cards


class _Renderer:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def src(self, path: str) -> str:
        return quote(path, safe="/")

    def image(
        self, entry: dict[str, Any], output_index: int | None, alt: str, waiting: str = ""
    ) -> str:
        """The image of ``entry``'s output (all outputs when ``output_index`` is None), or a
        box saying why there is none."""
        outputs: list[dict[str, Any]] = entry["outputs"]
        if output_index is not None:
            outputs = outputs[output_index : output_index + 1]
        state: str = entry["state"]
        if outputs and state in ("downloaded", "succeeded"):
            parts = []
            for output in outputs:
                path: str = output["path"]
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
        if state in ("failed", "expired"):
            code = entry["failCode"] or ("EXPIRED" if state == "expired" else "FAILED")
            reason = entry["failMsg"] or STATE_TEXT[state]
            return (
                f'<div class="box"><strong>{_e(code)}</strong>'
                f'<span class="reason">{_e(reason)}</span></div>'
            )
        return f'<div class="box">{_e(waiting or STATE_TEXT.get(state, state))}</div>'

    def card(self, card: _Card) -> str:
        entry = card.entry
        state: str = entry["state"]
        prompt = str((entry.get("request") or {}).get("input", {}).get("prompt", ""))
        blocked = card.parent is not None and card.parent["state"] in ("failed", "expired")
        waiting = "not started: its parent failed" if blocked and state == "planned" else ""
        own = self.image(entry, None, prompt, waiting)
        if card.parent is not None:
            parent_prompt = str(
                (card.parent.get("request") or {}).get("input", {}).get("prompt", "")
            )
            parent_img = self.image(card.parent, entry.get("parent_output_index") or 0, "")
            images = (
                f'<div class="parent">{parent_img}<div class="label" title="{_e(parent_prompt)}">'
                f"parent</div></div>"
                '<span class="arrow" aria-hidden="true">&rarr;</span>'
                f'<div>{own}<div class="label">{_e(card.step)}</div></div>'
            )
        else:
            images = own
        lines = [
            f'<article class="card {_e(state)}" id="{_e(_anchor(entry["readable_id"]))}">',
            f'<div class="caption">{_e(card.caption)}</div>',
            f'<div class="images">{images}</div>',
            f'<code class="rid">{_e(entry["readable_id"])}</code>',
            f'<span class="state {_e(state)}">{_e(STATE_TEXT.get(state, state))}'
            + (f" &middot; {_e(entry['failCode'])}" if entry.get("failCode") else "")
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
    entries: list[dict[str, Any]],
    step_order: list[str],
    out_dir: Path,
    page_size: int = PAGE_SIZE,
) -> list[str]:
    """The gallery pages' HTML: ``[index.html, index-2.html, ...]``."""
    cards = _cards(entries, step_order)
    pages = list(_pages(cards, page_size))
    renderer = _Renderer(out_dir)
    counts = Counter(e["state"] for e in entries)
    fail_codes = Counter(
        e["failCode"] or "EXPIRED" for e in entries if e["state"] in ("failed", "expired")
    )
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
