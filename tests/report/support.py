"""Helpers of the report tests: read back what a run wrote (report.md, index.html and the
gallery's data file, junit.xml)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from flux_pipeline.report import gallery
from flux_pipeline.report.entry import OutputEntry, TaskEntry
from flux_pipeline.report.gallery_data import decode_tasks, read_data_js
from flux_pipeline.states import TaskState


@dataclass
class Card:
    """One ``<article class="card ...">`` of the gallery."""

    classes: list[str]
    images: list[str] = field(default_factory=list)  # img src, in order
    text: list[str] = field(default_factory=list)

    @property
    def joined(self) -> str:
        return " ".join(self.text)


class GalleryParser(HTMLParser):
    """Cards, images, headings and script tags of a gallery page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.cards: list[Card] = []
        self.images: list[dict[str, str | None]] = []
        self.headings: list[tuple[str, str]] = []
        self.scripts = 0
        self.script_srcs: list[str] = []  # src of each <script>; "" for an inline one
        self.stylesheets: list[str] = []
        self.csp: str | None = None
        self.links: list[str] = []
        self._card: Card | None = None
        self._depth = 0
        self._heading: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts += 1
            self.script_srcs.append(str(values.get("src") or ""))
        if tag == "link" and values.get("rel") == "stylesheet":
            self.stylesheets.append(str(values.get("href")))
        if tag == "meta" and values.get("http-equiv") == "Content-Security-Policy":
            self.csp = values.get("content")
        if tag == "a" and values.get("href"):
            self.links.append(str(values["href"]))
        if tag == "article":
            self._card = Card(classes=str(values.get("class", "")).split())
            self._depth = 0
        if self._card is not None and tag in ("article", "div", "span", "p", "a", "code"):
            self._depth += 1
        if tag == "img":
            self.images.append(values)
            if self._card is not None:
                self._card.images.append(str(values.get("src")))
        if tag in ("h2", "h3"):
            self._heading = tag

    def handle_endtag(self, tag: str) -> None:
        if self._card is not None and tag in ("article", "div", "span", "p", "a", "code"):
            self._depth -= 1
            if tag == "article":
                self.cards.append(self._card)
                self._card = None
        if tag in ("h2", "h3"):
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self.headings.append((self._heading, data))
        if self._card is not None and data.strip():
            self._card.text.append(data.strip())


def parse_gallery(path: Path) -> GalleryParser:
    parser = GalleryParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def gallery_data(out: Path) -> dict[str, Any]:
    """The gallery's data file (``OUT/.flux-pipeline/gallery/data.js``), decoded."""
    data = read_data_js((out / gallery.DATA_PATH).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def gallery_tasks(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The data file's tasks by readable id, decoded as the page decodes them
    (``gallery_data.decode_tasks``)."""
    return {task["id"]: task for task in decode_tasks(data)}


def card_of(gallery: GalleryParser, readable_id: str) -> Card:
    found = [c for c in gallery.cards if readable_id in c.text]
    assert len(found) == 1, (readable_id, [c.text for c in gallery.cards])
    return found[0]


def junit_cases(path: Path) -> dict[str, ET.Element]:
    root = ET.parse(path).getroot()  # noqa: S314 (our own output, written by the test run)
    assert root.tag == "testsuites"
    return {case.attrib["name"]: case for case in root.iter("testcase")}


def entry(
    readable_id: str,
    *,
    step: str | None = None,
    state: str = "downloaded",
    prompt: str = "a prompt",
    parent: str | None = None,
    cell: Mapping[str, str] | None = None,
    outputs: list[str] | None = None,
    fail_code: str | None = None,
    fail_msg: str | None = None,
) -> TaskEntry:
    """A task entry as ``report.task_entries`` makes it (only the fields the writers read);
    ``cell``: the task's own matrix cell, axis -> value label, in readable-id order."""
    return TaskEntry(
        readable_id=readable_id,
        key="k-" + readable_id,
        step=step or readable_id.rpartition("/")[2].split("@")[0].split("#")[0],
        parent=parent,
        parent_output_index=0 if parent else None,
        cell=tuple((cell or {}).items()),
        request={"input": {"prompt": prompt}, "provider": "auto"},
        state=TaskState(state),
        task_id="task_1" if state != "planned" else None,
        fail_code=fail_code,
        fail_msg=fail_msg,
        attempts=1,
        cost_time=1500,
        outputs=tuple(OutputEntry(path=p, url="u", bytes=1, sha256="0") for p in outputs or []),
    )
