"""index.html from task entries: grouping, lineage, escaping, relative links, missing files,
pages for big runs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from flux_pipeline.report import gallery

from .support import GalleryParser, entry


def parse(page: str) -> GalleryParser:
    parser = GalleryParser()
    parser.feed(page)
    parser.close()
    return parser


def touch(out: Path, *paths: str) -> None:
    for path in paths:
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(b"image")


def test_strings_from_manifests_and_the_api_are_escaped(tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    entries = [
        entry(
            f"shot@q={hostile}#1",
            step="shot",
            cell={"q": hostile},
            prompt=hostile,
            outputs=["shot/a.png"],
        ),
        entry(
            "shot@q=b#1",
            step="shot",
            cell={"q": "b"},
            state="failed",
            prompt="p",
            fail_code=f"CODE{hostile}",
            fail_msg=f'"quoted" & {hostile}',
        ),
    ]
    touch(tmp_path, "shot/a.png")
    [page] = gallery.render_pages(
        name="esc", entries=entries, step_order=["shot"], out_dir=tmp_path
    )
    assert "<script" not in page.lower()
    assert "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert "script-src 'none'" in page  # and no script could run if one slipped through
    parsed = parse(page)
    assert parsed.scripts == 0
    assert [str(img["src"]) for img in parsed.images] == ["shot/a.png"]
    assert parsed.images[0]["alt"] == hostile  # the prompt, as text
    assert ("h3", f"q={hostile}") in parsed.headings  # escaped, shown as text
    failed = parsed.cards[1]
    assert f'"quoted" & {hostile}' in failed.text
    assert f"CODE{hostile}" in failed.text


def test_links_are_relative_and_percent_encoded(tmp_path: Path) -> None:
    odd = "shot/a b#c?d%e ü.png"
    touch(tmp_path, odd)
    [page] = gallery.render_pages(
        name="links",
        entries=[entry("shot#1", step="shot", outputs=[odd])],
        step_order=["shot"],
        out_dir=tmp_path,
    )
    src = str(parse(page).images[0]["src"])
    assert src == "shot/a%20b%23c%3Fd%25e%20%C3%BC.png"
    assert unquote(src) == odd
    assert 'href="shot/a%20b%23c%3Fd%25e%20%C3%BC.png"' in page
    assert 'loading="lazy"' in page


def test_a_missing_file_is_said_not_shown_broken(tmp_path: Path) -> None:
    entries = [entry("shot#1", step="shot", outputs=["shot/gone.png"])]
    [page] = gallery.render_pages(
        name="gone", entries=entries, step_order=["shot"], out_dir=tmp_path
    )
    parsed = parse(page)
    assert parsed.images == []
    assert "file missing" in parsed.cards[0].text
    assert "shot/gone.png" in parsed.cards[0].text


def test_grouped_by_step_in_manifest_order_then_first_axis(tmp_path: Path) -> None:
    red_15 = {"color": "red", "size": "1,5"}
    entries = sorted(
        [
            entry("zeta@color=red,size=1,5#1", step="zeta", cell=red_15),
            entry("zeta@color=blue,size=2#1", step="zeta", cell={"color": "blue", "size": "2"}),
            entry("zeta@color=red,size=2#1", step="zeta", cell={"color": "red", "size": "2"}),
            entry("alpha#1", step="alpha"),
            entry(
                "zeta@color=red,size=1,5#1/alpha#1",
                step="alpha",
                parent="zeta@color=red,size=1,5#1",
            ),
        ],
        key=lambda e: e.readable_id,
    )
    [page] = gallery.render_pages(
        name="groups", entries=entries, step_order=["zeta", "alpha"], out_dir=tmp_path
    )
    parsed = parse(page)
    assert [text for _, text in parsed.headings] == [
        "step zeta",
        "color=blue",
        "color=red",
        "step alpha",
    ]
    captions = [card.text[0] for card in parsed.cards]
    assert captions == [
        "size=2 #1",
        "size=1,5 #1",  # a value with a comma stays whole
        "size=2 #1",
        "#1",
        "color=red, size=1,5 \u2192 alpha #1",
    ]


def test_cards_are_grouped_by_the_entry_cell_not_the_readable_id(tmp_path: Path) -> None:
    """Values holding ``,`` and ``=`` stay whole: the cell is the entry's, never re-parsed; a
    chained card names its parent's whole cell, and its own axes after the arrow."""
    tricky = {"text": "a=b,c=d", "size": "1,2"}
    parent = "shot@text=a=b,c=d,size=1,2#1"
    entries = [
        entry(parent, step="shot", cell=tricky),
        entry("shot@text=x,y=z,size=3#1", step="shot", cell={"text": "x,y=z", "size": "3"}),
        entry(f"{parent}/edit@tone=w,=x#2", step="edit", parent=parent, cell={"tone": "w,=x"}),
    ]
    [page] = gallery.render_pages(
        name="cells", entries=entries, step_order=["shot", "edit"], out_dir=tmp_path
    )
    parsed = parse(page)
    assert [text for _, text in parsed.headings] == [
        "step shot",
        "text=a=b,c=d",
        "text=x,y=z",
        "step edit",
        "tone=w,=x",
    ]
    assert [card.text[0] for card in parsed.cards] == [
        "size=1,2 #1",
        "size=3 #1",
        "text=a=b,c=d, size=1,2 \u2192 edit #2",
    ]


def test_big_runs_are_paged_and_stale_pages_found(tmp_path: Path) -> None:
    entries = [entry(f"shot@n={i:04d}#1", step="shot", cell={"n": f"{i:04d}"}) for i in range(25)]
    pages = gallery.render_pages(
        name="big", entries=entries, step_order=["shot"], out_dir=tmp_path, page_size=10
    )
    assert len(pages) == 3
    parsed = [parse(p) for p in pages]
    assert [len(p.cards) for p in parsed] == [10, 10, 5]
    shown = [t for p in parsed for c in p.cards for t in c.text if t.startswith("shot@")]
    assert shown == [e.readable_id for e in entries]
    assert "index-2.html" in parsed[0].links
    assert "index-3.html" in parsed[0].links
    assert "index.html" in parsed[2].links
    assert all(p.headings[0] == ("h2", "step shot") for p in parsed)  # repeated on each page
    for number in (1, 2, 3, 4, 12):
        (tmp_path / gallery.page_name(number)).write_text("old")
    (tmp_path / "index-x.html").write_text("not a page")
    assert sorted(p.name for p in gallery.stale_pages(tmp_path, 3)) == [
        "index-12.html",
        "index-4.html",
    ]


def test_no_tasks_still_makes_a_page(tmp_path: Path) -> None:
    [page] = gallery.render_pages(name="empty", entries=[], step_order=[], out_dir=tmp_path)
    assert "No tasks." in page
