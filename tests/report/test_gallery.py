"""The gallery's files from task entries: index.html (static, strict CSP, scripts from files
only), the data file (compact, escaped, every field the page shows), stale pages removed."""

from __future__ import annotations

import hashlib
import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from flux_pipeline.report import gallery
from flux_pipeline.report.entry import OutputEntry
from flux_pipeline.report.gallery_data import data_js, gallery_data, read_data_js
from flux_pipeline.report.gallery_images import pack_hash

from .support import GalleryParser, entry, gallery_tasks

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>\u2028</script>\u2029'


def parse(page: str) -> GalleryParser:
    parser = GalleryParser()
    parser.feed(page)
    parser.close()
    return parser


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def data_of(out: Path, entries: list[Any], **options: Any) -> dict[str, Any]:
    options.setdefault("step_order", ["shot", "edit"])
    return gallery_data(name="g", manifest="g.yaml", entries=entries, out_dir=out, **options)


def test_strings_from_manifests_and_the_api_cannot_leave_the_data(tmp_path: Path) -> None:
    entries = [
        entry(
            f"shot@q={HOSTILE}#1",
            step="shot",
            cell={"q": HOSTILE},
            prompt=HOSTILE,
            state="failed",
            fail_code=f"CODE{HOSTILE}",
            fail_msg=f'"quoted" & {HOSTILE}',
        )
    ]
    page = gallery.write_gallery(
        tmp_path, name=HOSTILE, manifest="m.yaml", entries=entries, step_order=["shot"]
    )
    text = (tmp_path / gallery.DATA_PATH).read_text(encoding="utf-8")
    assert "</" not in text  # no string ends a script, whatever it holds
    assert "\u2028" not in text
    assert "\u2029" not in text
    assert text.count("\n") == 1  # one line: nothing broke it
    [task] = gallery_tasks(read_data_js(text)).values()
    assert task["prompt"] == HOSTILE  # as text, whole: the page sets it with textContent
    assert task["cell"] == {"q": HOSTILE}
    assert task["failCode"] == f"CODE{HOSTILE}"
    assert task["failMsg"] == f'"quoted" & {HOSTILE}'
    html = page.read_text(encoding="utf-8")
    parsed = parse(html)
    assert parsed.script_srcs == [gallery.DATA_PATH, ".flux-pipeline/gallery/app.js"]
    assert parsed.images == []
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)" in html  # the name, escaped
    assert parsed.csp == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'"
    )


def test_the_page_files_are_written_with_the_data(tmp_path: Path) -> None:
    page = gallery.write_gallery(
        tmp_path, name="files", manifest="files.yaml", entries=[], step_order=[]
    )
    assert page == tmp_path / "index.html"
    parsed = parse(page.read_text(encoding="utf-8"))
    assert parsed.stylesheets == [".flux-pipeline/gallery/app.css"]
    for name in ("app.js", "app.css", "data.js"):
        assert (tmp_path / ".flux-pipeline/gallery" / name).stat().st_size > 0, name
    app = (tmp_path / ".flux-pipeline/gallery/app.js").read_text(encoding="utf-8")
    assert "innerHTML" not in app  # every element is built with textContent
    assert "insertAdjacentHTML" not in app
    assert "document.write" not in app
    data = read_data_js((tmp_path / gallery.DATA_PATH).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    assert data["t"] == []
    assert data["manifest"] == "files.yaml"


def test_tasks_in_step_order_with_cells_stored_once(tmp_path: Path) -> None:
    tricky = {"text": "a=b,c=d", "size": "1,2"}
    parent = "shot@text=a=b,c=d,size=1,2#1"
    entries = sorted(
        [
            entry(parent, step="shot", cell=tricky, prompt="one"),
            entry("shot@text=x,y=z,size=3#1", step="shot", cell={"text": "x,y=z", "size": "3"}),
            entry(f"{parent}/edit@tone=w,=x#2", step="edit", parent=parent, cell={"tone": "w,=x"}),
            entry("zeta#1", step="zeta"),  # a step the order does not name goes last
        ],
        key=lambda e: e.readable_id,
    )
    data = data_of(tmp_path, entries)
    tasks = gallery_tasks(data)
    assert list(tasks) == [
        parent,
        "shot@text=x,y=z,size=3#1",
        f"{parent}/edit@tone=w,=x#2",
        "zeta#1",
    ]
    assert data["steps"] == ["shot", "edit", "zeta"]
    assert data["axes"] == [
        ["text", ["a=b,c=d", "x,y=z"]],
        ["size", ["1,2", "3"]],
        ["tone", ["w,=x"]],
    ]
    assert tasks[parent]["cell"] == tricky  # values with ',' and '=' stay whole
    edit = tasks[f"{parent}/edit@tone=w,=x#2"]
    assert edit["parent"] == parent
    assert edit["cell"] == {"tone": "w,=x"}
    assert edit["key"] == f"k-{parent}/edit@tone=w,=x#2"
    # the request without its prompt, stored once for the tasks that share it
    assert data["reqs"] == [{"input": {}, "provider": "auto"}]
    assert tasks[parent]["prompt"] == "one"
    assert tasks[parent]["timings"] == [None, None, None, None, 1500, 1]


def test_outputs_carry_size_and_thumbnail_missing_files_say_so(tmp_path: Path) -> None:
    tall = png(90, 160)
    (tmp_path / "shot").mkdir()
    (tmp_path / "shot/tall.png").write_bytes(tall)
    (tmp_path / "shot/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24)
    entries = [
        entry("shot@n=1#1", step="shot", outputs=["shot/tall.png"]),
        entry("shot@n=2#1", step="shot", outputs=["shot/gone.png"]),
        entry("shot@n=3#1", step="shot", outputs=["shot/broken.png"]),
        entry("shot@n=4#1", step="shot", state="planned"),
    ]
    sha = "a" * 64
    entries[0] = replace(
        entries[0],
        outputs=(OutputEntry(path="shot/tall.png", url="u", bytes=len(tall), sha256=sha),),
    )
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    (outside / "x.png").write_bytes(tall)
    (tmp_path / "link").symlink_to(outside)
    entries.append(entry("shot@n=5#1", step="shot", outputs=["link/x.png", "../x.png"]))
    tasks = gallery_tasks(data_of(tmp_path, entries))
    assert [o["on_disk"] for o in tasks["shot@n=5#1"]["outputs"]] == [0, 0]  # not read
    [tall_out] = tasks["shot@n=1#1"]["outputs"]
    assert tall_out == {
        "path": "shot/tall.png",
        "thumb": sha,
        "width": 90,
        "height": 160,  # the real size: the page's box is 9:16, not a square
        "on_disk": 1,
    }
    assert (tmp_path / f".flux-pipeline/thumbs/{sha}.webp").is_file()  # made lazily
    assert tasks["shot@n=2#1"]["outputs"] == [
        {"path": "shot/gone.png", "thumb": None, "width": 0, "height": 0, "on_disk": 0}
    ]
    assert tasks["shot@n=3#1"]["outputs"] == [
        {"path": "shot/broken.png", "thumb": None, "width": 0, "height": 0, "on_disk": 1}
    ]  # a broken image: linked in full, no thumbnail, nothing raised
    assert tasks["shot@n=4#1"]["outputs"] == []


def test_decisions_from_the_review_file(tmp_path: Path) -> None:
    entries = [entry(f"shot@n={n}#1", step="shot") for n in range(3)]
    keys = [e.key for e in entries]
    data = data_of(
        tmp_path,
        entries,
        decisions={keys[0]: "picked", keys[1]: "rejected", "k-gone": "picked", keys[2]: "odd"},
    )
    # only the plan's tasks and the two decisions there are
    assert data["decisions"] == {keys[0]: "picked", keys[1]: "rejected"}
    assert data_of(tmp_path, entries)["decisions"] == {}


def new_marks(out: Path) -> dict[str, int]:
    return {rid: t["new"] for rid, t in gallery_tasks(gallery_data_of(out)).items()}


def gallery_data_of(out: Path) -> dict[str, Any]:
    return read_data_js((out / gallery.DATA_PATH).read_text(encoding="utf-8"))


def test_tasks_the_previous_gallery_did_not_have_are_new(tmp_path: Path) -> None:
    def write(*names: str) -> None:
        entries = [entry(f"shot@n={n}#1", step="shot") for n in names]
        gallery.write_gallery(tmp_path, name="n", manifest="n.yaml", entries=entries, step_order=[])

    write("a", "b")
    assert new_marks(tmp_path) == {"shot@n=a#1": 0, "shot@n=b#1": 0}  # a first run: none
    assert gallery_data_of(tmp_path)["previous"] is False
    write("a", "b", "c")
    assert new_marks(tmp_path) == {"shot@n=a#1": 0, "shot@n=b#1": 0, "shot@n=c#1": 1}
    assert gallery_data_of(tmp_path)["previous"] is True
    write("a", "b", "c")  # rewritten with no task added (a review, a report): marks kept
    assert new_marks(tmp_path) == {"shot@n=a#1": 0, "shot@n=b#1": 0, "shot@n=c#1": 1}
    write("b", "c", "d")
    assert new_marks(tmp_path) == {"shot@n=b#1": 0, "shot@n=c#1": 0, "shot@n=d#1": 1}
    (tmp_path / gallery.DATA_PATH).write_text("window.FLUX_GALLERY = {broken", encoding="utf-8")
    write("b", "c", "d", "e")  # an unreadable older file: nothing is called new
    assert set(new_marks(tmp_path).values()) == {0}


def test_ids_keys_and_prompts_are_packed_and_read_back_whole(tmp_path: Path) -> None:
    sha = "0123456789abcdef" * 4
    odd = entry("shot@n=1#01", step="shot", cell={"n": "1"}, prompt="  two  spaces ")
    plain = replace(entry("shot@n=2#1", step="shot", cell={"n": "2"}), key=sha)
    child = entry(
        "shot@n=2#1/edit@t=x#3", step="edit", parent="shot@n=2#1", cell={"t": "x"}, prompt=""
    )
    renamed = entry("other-name#2", step="shot")  # not the id its step and cell make
    data = data_of(tmp_path, [odd, plain, child, renamed])
    rows = {row[1]: row for row in data["t"]}
    assert pack_hash(sha) == "ASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4mrze8"  # 43 characters
    assert rows[pack_hash(sha)][0] == 1  # the repeat alone: the page rebuilds the id
    assert data["t"][-1][0] == 3  # the edit's id: its parent's, then its own
    assert rows["~k-shot@n=1#01"][0] == "shot@n=1#01"  # "#01" is not rebuilt from 1
    tasks = gallery_tasks(data)
    assert sorted(tasks) == sorted(e.readable_id for e in (odd, plain, child, renamed))
    assert tasks["shot@n=2#1"]["key"] == sha
    assert tasks["shot@n=1#01"]["prompt"] == "  two  spaces "
    assert tasks["shot@n=2#1/edit@t=x#3"]["prompt"] == ""
    assert tasks["shot@n=2#1/edit@t=x#3"]["parent"] == "shot@n=2#1"


def test_the_data_file_is_compact() -> None:
    """10,000 tasks' data: one short array each, not an object with field names."""
    entries = [
        replace(
            entry(f"shot@n={n:05d}#1", step="shot", cell={"n": f"{n:05d}"}, prompt=f"a {n} b"),
            key=hashlib.sha256(str(n).encode()).hexdigest(),
        )
        for n in range(10_000)
    ]
    data = gallery_data(
        name="big", manifest="big.yaml", entries=entries, step_order=["shot"], out_dir=Path("/x")
    )
    text = data_js(data)
    assert len(text) / 10_000 < 160  # a row of ~100 characters, its axis value and words
    assert text.count('"prompt"') == 1  # the field names once, in "fields"


def test_pages_of_an_older_gallery_are_removed(tmp_path: Path) -> None:
    for number in (2, 3, 12):
        (tmp_path / f"index-{number}.html").write_text("old")
    (tmp_path / "index-x.html").write_text("not a page")
    gallery.write_gallery(tmp_path, name="p", manifest="p.yaml", entries=[], step_order=[])
    assert sorted(p.name for p in tmp_path.glob("index*.html")) == ["index-x.html", "index.html"]


def test_the_streamed_data_file_is_the_joined_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``write_gallery`` streams data.js row by row (``data_js_pieces``): the bytes are
    those of ``data_js(gallery_data(...))``, hostile strings, new marks and every piece size
    included, and the previous gallery's marks are kept as before."""
    from flux_pipeline.report import gallery_data as module

    entries = [
        entry(
            f"shot@q={HOSTILE}{i}#1",
            step="shot",
            cell={"q": f"{HOSTILE}{i}"},
            prompt=f"{HOSTILE} {i}",
            state="failed" if i % 2 else "downloaded",
            fail_msg=f"</{i}\u2028",
        )
        for i in range(5)
    ]
    for per_piece in (1, 2, 5, 1000):
        monkeypatch.setattr(module, "ROWS_PER_PIECE", per_piece)
        for count in (0, 1, 3, 5):
            out = tmp_path / f"{per_piece}-{count}"
            previous = None
            for shown in (entries[: max(0, count - 1)], entries[:count]):  # then one more
                expected = data_js(data_of(out, shown, step_order=["shot"], previous=previous))
                gallery.write_gallery(
                    out, name="g", manifest="g.yaml", entries=shown, step_order=["shot"]
                )
                text = (out / gallery.DATA_PATH).read_text(encoding="utf-8")
                assert text == expected
                previous = read_data_js(text)


def test_writing_the_data_file_never_holds_every_row(tmp_path: Path) -> None:
    """4,000 tasks: while ``write_gallery`` runs, what it allocates stays within 6 times the
    size of the data file it writes (the tables and one index per task: 3.8 times; it was 12
    times: every row as Python lists, then the text, escaped and redacted, in three copies)."""
    import tracemalloc

    entries = [
        entry(f"shot@n={i}#1", step="shot", cell={"n": str(i)}, prompt=f"image {i}")
        for i in range(4000)
    ]
    tracemalloc.start()
    try:
        gallery.write_gallery(
            tmp_path, name="g", manifest="g.yaml", entries=entries, step_order=["shot"]
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = (tmp_path / gallery.DATA_PATH).stat().st_size
    assert peak < 6 * size, (peak, size)


def test_a_rewrite_opens_only_the_images_the_previous_gallery_did_not_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gallery of 100,000 images is made again after every run that changed something:
    an image whose content (SHA-256) the previous gallery showed, with its thumbnail still
    there, keeps that size without being opened (docs/reports.md)."""
    from flux_pipeline.report import thumbs

    (tmp_path / "shot").mkdir()
    images = {"wide": png(160, 90), "tall": png(90, 160), "square": png(50, 50)}
    for name, content in images.items():
        (tmp_path / f"shot/{name}.png").write_bytes(content)

    def entries() -> list[Any]:
        made = []
        for name in images:
            path = f"shot/{name}.png"
            content = (tmp_path / path).read_bytes()
            output = OutputEntry(
                path=path, url="u", bytes=len(content), sha256=hashlib.sha256(content).hexdigest()
            )
            made.append(replace(entry(f"shot@n={name}#1", step="shot"), outputs=(output,)))
        return made

    opened: list[str] = []
    real_size = thumbs._size

    def counted(image: Path) -> tuple[int, int]:
        opened.append(image.name)
        return real_size(image)

    monkeypatch.setattr(thumbs, "_size", counted)

    def write() -> dict[str, Any]:
        gallery.write_gallery(
            tmp_path, name="g", manifest="g.yaml", entries=entries(), step_order=["shot"]
        )
        shown = gallery_tasks(gallery_data_of(tmp_path))
        return {rid: [(o["width"], o["height"]) for o in t["outputs"]] for rid, t in shown.items()}

    first = write()
    assert sorted(opened) == ["square.png", "tall.png", "wide.png"]
    assert first["shot@n=tall#1"] == [(90, 160)]
    opened.clear()
    assert write() == first  # the same sizes, and no image opened
    assert opened == []
    # new content at a path (another sha256) is opened; so is an image whose thumbnail is gone
    (tmp_path / "shot/wide.png").write_bytes(png(200, 20))
    square_sha = hashlib.sha256(images["square"]).hexdigest()
    (tmp_path / f".flux-pipeline/thumbs/{square_sha}.webp").unlink()
    third = write()
    assert sorted(opened) == ["square.png", "wide.png"]
    assert third["shot@n=wide#1"] == [(200, 20)]
    assert third["shot@n=square#1"] == [(50, 50)]
    assert (tmp_path / f".flux-pipeline/thumbs/{square_sha}.webp").is_file()  # made again
