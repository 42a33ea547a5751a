"""The gallery in a real browser: Debian's chromium, headless, driven by Playwright (no browser
download: ``executable_path`` is the system's chromium), against real simulated runs, opened
from a file:// URL as a person opens it (and once over http, as ``flux-pipeline review``
serves it).

``.ci/run`` installs chromium and the ``test`` extra installs Playwright; elsewhere these tests
are skipped, saying which is missing.
"""

from __future__ import annotations

import concurrent.futures
import functools
import http.server
import io
import json
import shutil
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from PIL import Image

from flux_pipeline.report import gallery
from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.simulator import SimConfig, SimulatorThread

from ..run.support import run_inprocess, write_manifest
from .support import entry, gallery_data, gallery_tasks

try:
    from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

    PLAYWRIGHT = True
except ImportError:  # the test extra installs it
    PLAYWRIGHT = False

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "demo.yaml"
KEY = "gallery-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)"),
    pytest.mark.skipif(
        not PLAYWRIGHT, reason="Playwright is not installed (pip install -e '.[test]')"
    ),
]

HOSTILE = "<img src=x onerror=document.title='pwned'> </script> end"
REVIEW = f"""\
version: 1
name: review
defaults:
  input: {{mode: pro, aspect_ratio: '1:1', output_format: png}}
steps:
  - id: shot
    matrix:
      subject: [fox, owl, skull]
      shape: ["1:1", "9:16"]
    prompt: "a {{{{ subject }}}} {HOSTILE}"
    input: {{aspect_ratio: "{{{{ shape }}}}"}}
  - id: edit
    from: shot
    prompt: "give the {{{{ parent.subject }}}} a red scarf"
"""
FOX_SQUARE = "shot@subject=fox,shape=1:1#1"
FOX_TALL = "shot@subject=fox,shape=9:16#1"


def simulated_run(manifest: Path, out: Path, **settings: Any) -> None:
    config = SimConfig(api_keys=(KEY,), task_seconds=0.1, task_spread=0.0, **settings)

    async def go() -> int:
        with SimulatorThread(config) as sim:
            result = await run_inprocess(
                manifest,
                out,
                base_url=sim.base_url,
                api_key=KEY,
                lock_path=out.parent / f"{manifest.stem}.lock.json",
            )
        return result.outcome.exit_code

    code = off_the_loop(go)
    assert code in (0, 1), code


def off_the_loop(run: Callable[[], Awaitable[int]]) -> int:
    """``anyio.run(run)`` in a thread of its own: Playwright's sync API keeps an event loop
    in the test's thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, run).result()


@pytest.fixture(scope="module")
def review_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 tasks: 3 subjects x 2 shapes (1:1, 9:16), each edited; "skull" is refused, so 2
    failed shots and 2 edits that never start; every prompt of ``shot`` is hostile HTML."""
    root = tmp_path_factory.mktemp("review")
    manifest = write_manifest(root, REVIEW, "review.yaml")
    out = root / "out"
    simulated_run(manifest, out, block_words=("skull",))
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield opened
    context.close()
    assert errors == []  # no script error, no CSP violation


def open_gallery(page: Page, out: Path, hash_: str = "") -> None:
    page.goto((out / "index.html").as_uri() + hash_)
    page.wait_for_selector("html[data-ready]", timeout=10_000)


def wait_images_loaded(page: Page, selector: str, count: int) -> None:
    """Wait until ``count`` images match ``selector`` and every one has loaded.

    Not ``page.wait_for_function``: once its first check is false it polls with ``eval()``
    inside the page, which the gallery's own policy (``CSP`` in flux_pipeline/report/gallery.py,
    ``script-src 'self'``) refuses, so a slow image failed the test with an EvalError. These
    waits read properties from Playwright's side and run no string as script in the page."""
    images = page.locator(selector)
    expect(images).to_have_count(count, timeout=10_000)
    for i in range(count):
        expect(images.nth(i)).to_have_js_property("complete", True, timeout=10_000)


def shown_ids(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#app .card .rid", "nodes => nodes.map(n => n.textContent)"
    )
    return ids


def card(page: Page, rid: str) -> Locator:
    return page.locator(".card", has=page.get_by_text(rid, exact=True))


def test_every_thumbnail_loads_and_boxes_keep_the_aspect_ratio(
    page: Page, review_out: Path
) -> None:
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    open_gallery(page, review_out)
    assert len(shown_ids(page)) == 12
    wait_images_loaded(page, "#app img", 8)
    images = page.eval_on_selector_all(
        "#app img", "nodes => nodes.map(i => [i.getAttribute('src'), i.naturalWidth])"
    )
    assert len(images) == 8  # 4 shots and their 4 edits; skull's failed
    assert all(src.startswith(".flux-pipeline/thumbs/") and width > 0 for src, width in images)
    assert all(url.startswith("file://") for url in requests)  # never the network

    def ratio(rid: str) -> float:
        size = card(page, rid).locator(".box").bounding_box()
        assert size is not None
        return float(size["width"] / size["height"])

    assert ratio(FOX_TALL) == pytest.approx(9 / 16, rel=0.02)  # not squeezed into a square
    assert ratio(FOX_SQUARE) == pytest.approx(1.0, rel=0.02)
    failed = page.locator(".card.failed")
    assert failed.count() == 2
    assert "CONTENT_VIOLATION" in failed.first.inner_text()
    blocked = page.locator(".card.planned")
    assert blocked.count() == 2
    assert "not started: its parent failed" in blocked.first.inner_text()


def test_a_hostile_prompt_is_shown_as_text(page: Page, review_out: Path) -> None:
    open_gallery(page, review_out)
    assert page.title() != "pwned"
    assert page.locator('img[src="x"]').count() == 0
    assert card(page, FOX_SQUARE).locator(".prompt").text_content() == f"a fox {HOSTILE}"
    page.keyboard.press("Tab")  # the lightbox shows it too, as text
    page.locator(".card").first.click()
    assert page.locator("#lightbox dd", has_text="onerror").first.text_content() == (
        f"a fox {HOSTILE}"
    )
    assert page.locator('img[src="x"]').count() == 0
    assert page.title() != "pwned"


def test_filters_and_search_are_kept_in_the_url(page: Page, review_out: Path) -> None:
    open_gallery(page, review_out)
    page.select_option("select[name='a.subject']", "fox")
    assert sorted(shown_ids(page)) == sorted(
        [FOX_SQUARE, FOX_TALL, FOX_SQUARE + "/edit#1", FOX_TALL + "/edit#1"]
    )  # an edit has its parent's axes
    page.select_option("select[name='step']", "shot")
    assert sorted(shown_ids(page)) == [FOX_SQUARE, FOX_TALL]
    page.select_option("select[name='step']", "")
    page.fill("input[name='q']", "red scarf")
    assert sorted(shown_ids(page)) == [FOX_SQUARE + "/edit#1", FOX_TALL + "/edit#1"]
    page.select_option("select[name='state']", "failed")
    assert shown_ids(page) == []
    page.select_option("select[name='state']", "")
    url = page.url
    assert "a.subject=fox" in url
    assert "q=red+scarf" in url
    other = page.context.new_page()  # a shared link opens the same view
    open_gallery(other, review_out, "#" + url.partition("#")[2])
    assert sorted(shown_ids(other)) == [FOX_SQUARE + "/edit#1", FOX_TALL + "/edit#1"]
    assert other.input_value("select[name='a.subject']") == "fox"
    assert other.input_value("input[name='q']") == "red scarf"
    open_gallery(other, review_out, "#state=failed")
    assert sorted(shown_ids(other)) == [
        "shot@subject=skull,shape=1:1#1",
        "shot@subject=skull,shape=9:16#1",
    ]
    other.close()


def test_the_xy_grid_has_one_cell_per_pair_of_values(page: Page, review_out: Path) -> None:
    open_gallery(page, review_out, "#view=grid&x=subject&y=shape&step=shot")
    heads = page.eval_on_selector_all(".xy th", "nodes => nodes.map(n => n.textContent)")
    assert heads[1:4] == ["fox", "owl", "skull"]
    assert heads[4:] == ["1:1", "9:16"]
    cells = page.eval_on_selector_all(
        ".xy td", "nodes => nodes.map(n => n.querySelectorAll('.card').length)"
    )
    assert cells == [1, 1, 1, 1, 1, 1]
    open_gallery(page, review_out, "#view=grid&x=subject&y=step&z=shape&zp=2")
    texts = page.eval_on_selector_all(".xy .rid", "nodes => nodes.map(n => n.textContent)")
    assert FOX_TALL in texts  # the page of the third axis' second value: 9:16 only
    assert FOX_SQUARE not in texts


def lightbox_key(page: Page) -> str | None:
    return page.get_attribute("#lightbox", "data-key") if page.is_visible("#lightbox") else None


def test_lightbox_keys_decisions_and_export(page: Page, review_out: Path) -> None:
    tasks = gallery_tasks(gallery_data(review_out))
    order = list(tasks)
    open_gallery(page, review_out)
    page.locator(".card").first.focus()
    page.keyboard.press("Enter")
    assert lightbox_key(page) == tasks[order[0]]["key"]
    details = page.inner_text("#lightbox .details")
    first = tasks[order[0]]
    assert first["key"] in details
    assert first["taskId"] in details
    assert '"aspect_ratio": "1:1"' in details  # the request's input fields
    assert page.locator("#lightbox .full img").get_attribute("src") == first["outputs"][0]["path"]
    lineage = page.eval_on_selector_all(
        "#lightbox .lineage figcaption", "nodes => nodes.map(n => n.textContent)"
    )
    assert lineage == [f"this: {order[0]}", f"edit: {order[0]}/edit#1"]  # side by side
    page.keyboard.press("ArrowRight")
    assert lightbox_key(page) == tasks[order[1]]["key"]
    page.keyboard.press("p")
    page.keyboard.press("ArrowLeft")
    assert lightbox_key(page) == tasks[order[0]]["key"]
    page.keyboard.press("x")
    page.keyboard.press("Escape")
    assert lightbox_key(page) is None
    assert page.inner_text(".status .picked") == "picked: 1"
    assert page.inner_text(".status .rejected") == "rejected: 1"
    page.locator(".card").nth(2).focus()  # the focused card, without the lightbox
    page.keyboard.press("p")
    page.keyboard.press("c")
    page.keyboard.press("p")
    assert page.inner_text(".status .picked") == "picked: 2"
    page.select_option("select[name='d']", "picked")
    assert shown_ids(page) == [order[1], order[2]]

    page.reload()  # kept in this browser (localStorage)
    page.wait_for_selector("html[data-ready]")
    assert page.inner_text(".status .picked") == "picked: 2"
    with page.expect_download() as info:
        page.click("button.export")
    download = info.value
    assert download.suggested_filename == "review.review.json"
    saved = Path(download.path()).read_text(encoding="utf-8")
    assert saved.endswith("}\n")
    assert json.loads(saved) == {
        "format": 1,
        "manifest": "review.yaml",
        "decisions": {
            tasks[rid]["key"]: {"decision": decision, "id": rid, "step": "shot"}
            for rid, decision in [
                (order[0], "rejected"),
                (order[1], "picked"),
                (order[2], "picked"),
            ]
        },
    }
    keys = list(json.loads(saved)["decisions"])
    assert keys == sorted(keys)


def test_new_tasks_file_decisions_and_the_merged_export(page: Page, tmp_path: Path) -> None:
    """A gallery written again with one task more: that one is new; the review file's
    decisions show, a clear in the page removes one from the export, a pick adds one."""

    def entries(*names: str) -> list[TaskEntry]:
        return [
            replace(entry(f"shot@n={n}#1", step="shot", cell={"n": n}), key=n * 64) for n in names
        ]

    def write(*names: str, decisions: dict[str, str] | None = None) -> None:
        gallery.write_gallery(
            tmp_path,
            name="merge",
            manifest="merge.yaml",
            entries=entries(*names),
            step_order=["shot"],
            decisions=decisions,
        )

    write("a", "b")
    write("a", "b", "c", decisions={"a" * 64: "picked", "b" * 64: "rejected"})
    open_gallery(page, tmp_path)
    assert page.inner_text(".status .new") == "new: 1"
    page.check("input[name='new']")
    assert shown_ids(page) == ["shot@n=c#1"]
    assert "new=1" in page.url
    page.uncheck("input[name='new']")
    assert page.inner_text(".status .picked") == "picked: 1"  # from the review file
    assert page.inner_text(".status .rejected") == "rejected: 1"
    card(page, "shot@n=b#1").focus()
    page.keyboard.press("c")
    card(page, "shot@n=c#1").focus()
    page.keyboard.press("p")
    with page.expect_download() as info:
        page.click("button.export")
    exported = json.loads(Path(info.value.path()).read_text(encoding="utf-8"))
    assert exported == {
        "decisions": {
            "a" * 64: {"decision": "picked", "id": "shot@n=a#1", "step": "shot"},
            "c" * 64: {"decision": "picked", "id": "shot@n=c#1", "step": "shot"},
        },
        "format": 1,
        "manifest": "merge.yaml",
    }


def test_odd_file_names_are_linked_percent_encoded(page: Page, tmp_path: Path) -> None:
    """No thumbnail (the hash is not one): the card shows the full image by its relative,
    percent-encoded path, whatever characters the output path holds."""
    odd = "shot/a b#c?d%e ü.png"
    (tmp_path / "shot").mkdir()
    (tmp_path / odd).write_bytes(_png(30, 40))
    gallery.write_gallery(
        tmp_path,
        name="odd",
        manifest="odd.yaml",
        entries=[entry("shot#1", step="shot", outputs=[odd])],
        step_order=["shot"],
    )
    open_gallery(page, tmp_path)
    wait_images_loaded(page, "#app img", 1)
    [(src, width)] = page.eval_on_selector_all(
        "#app img", "nodes => nodes.map(i => [i.getAttribute('src'), i.naturalWidth])"
    )
    assert src == "shot/a%20b%23c%3Fd%25e%20%C3%BC.png"
    assert width == 30


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (0, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_image_that_loads_late_is_waited_for_under_the_gallery_policy(
    page: Page, tmp_path: Path
) -> None:
    """The wait these tests use works under the gallery's CSP when an image comes late (a CI
    run on a loaded machine failed with "EvalError ... 'unsafe-eval'" when the lightbox's
    image had not loaded at the first check)."""
    (tmp_path / "pic.png").write_bytes(_png(30, 40))
    (tmp_path / "late.js").write_text(
        "setTimeout(() => { const i = new Image(); i.src = 'pic.png'; document.body.append(i); }"
        ", 300);"
    )
    (tmp_path / "index.html").write_text(
        f'<!doctype html><meta http-equiv="Content-Security-Policy" content="{gallery.CSP}">'
        '<body><script src="late.js"></script></body>'
    )
    page.goto((tmp_path / "index.html").as_uri())
    assert page.evaluate("document.images.length") == 0
    wait_images_loaded(page, "img", 1)
    assert page.eval_on_selector("img", "i => i.naturalWidth") == 30


def test_a_big_grid_is_paged_and_its_cells_capped(page: Page, tmp_path: Path) -> None:
    many = [
        entry(f"shot@x={x},y={y:02d}#{r}", step="shot", cell={"x": str(x), "y": f"{y:02d}"})
        for x in range(3)
        for y in range(45)
        for r in range(1, 9)
    ]
    gallery.write_gallery(
        tmp_path, name="big", manifest="big.yaml", entries=many, step_order=["shot"]
    )
    open_gallery(page, tmp_path, "#view=grid&x=x&y=y")
    assert page.locator(".xy tr").count() == 1 + 20  # the header and 20 rows a page
    assert page.locator(".xy .card").count() == 20 * 3 * 6
    assert "+2 more" in page.inner_text(".xy td")
    page.locator(".pager button", has_text="3").first.click()
    assert page.locator(".xy tr").count() == 1 + 5


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(review_out: Path) -> Iterator[str]:
    handler = functools.partial(_Quiet, directory=str(review_out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


def test_over_http_each_decision_is_sent_and_a_failure_is_shown(
    browser: Browser, review_out: Path, served: str
) -> None:
    tasks = gallery_tasks(gallery_data(review_out))
    first = next(iter(tasks.values()))
    context = browser.new_context()
    page = context.new_page()
    sent: list[tuple[str, str, Any]] = []
    answer = {"status": 200}

    def api(route: Any) -> None:
        request = route.request
        sent.append((request.method, request.url, json.loads(request.post_data or "null")))
        body = {"decisions": {first["key"]: {"decision": "picked", "id": first["id"]}}}
        route.fulfill(status=answer["status"], json=body)

    page.route("**/api/decisions/**", api)
    page.goto(served + "index.html")
    page.wait_for_selector("html[data-ready]")
    page.locator(".card").first.focus()
    with page.expect_response("**/api/decisions/**"):
        page.keyboard.press("p")
    assert page.locator(".card.picked").count() == 1
    with page.expect_response("**/api/decisions/**"):
        page.keyboard.press("c")
    assert sent[0] == (
        "PUT",
        served + "api/decisions/" + first["key"],
        {"decision": "picked", "id": first["id"], "step": "shot"},
    )
    assert sent[1][2] == {"decision": "clear", "id": first["id"], "step": "shot"}
    assert page.is_hidden("#banner")
    answer["status"] = 500
    with page.expect_response("**/api/decisions/**"):
        page.keyboard.press("x")
    page.wait_for_selector("#banner:not([hidden])")
    assert first["id"] in page.inner_text("#banner")
    assert page.inner_text(".status .rejected") == "rejected: 1"  # kept in the page
    context.close()


@pytest.mark.slow
def test_demo_gallery_renders_in_headless_chromium(
    page: Page, tmp_path: Path, browser: Browser
) -> None:
    """The shipped demo, run against the simulator: every thumbnail and, in the lightbox, the
    full image load; a screenshot shows a page, not a blank one."""
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=0.1)

    async def go() -> int:
        with SimulatorThread(config) as sim:
            # the lock goes into the scratch directory, not next to the repository's manifest
            result = await run_inprocess(
                DEMO, out, base_url=sim.base_url, api_key=KEY, lock_path=tmp_path / "d.lock.json"
            )
        return result.outcome.exit_code

    assert off_the_loop(go) == 0
    open_gallery(page, out)
    wait_images_loaded(page, "#app img", 8)
    widths = page.eval_on_selector_all("#app img", "nodes => nodes.map(i => i.naturalWidth)")
    assert len(widths) == 8
    assert all(w > 0 for w in widths)
    page.locator(".card").last.click()
    wait_images_loaded(page, "#lightbox .full img", 1)
    full = page.eval_on_selector_all(
        "#lightbox .full img", "nodes => nodes.map(i => [i.naturalWidth, i.naturalHeight])"
    )
    assert full == [[256, 144]]  # a 16:9 banner, the full image
    shot = tmp_path / "gallery.png"
    page.keyboard.press("Escape")
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # images and text, not a blank page
