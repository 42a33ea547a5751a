"""Benchmark: the gallery of a 10,000-task run (docs/reports.md): its weight and how fast it
opens in headless Chromium.

Run: ``python tests/benchmarks/bench_gallery.py [--tasks N] [--keep DIR] [--loads 3]``
(needs Playwright and the system's chromium, as tests/report/test_gallery_browser.py).

The run is not simulated (10,000 tasks through the simulator take minutes): the state DB
records of a finished run are built directly from the plan of a 100 x 100 matrix, each with a
tiny PNG on disk (three shapes: 1:1, 9:16, 16:9), and the real report builder writes every
report file (``files.write_reports``: thumbnails made lazily for all of them). Prints the time
to write the reports, the page weight without images (index.html + app.js + app.css +
data.js), and for each load of ``index.html`` from file:// the first paint and the time to
interactive (the ``data-ready`` attribute app.js sets once the first view is built, in ms
since navigation started). Targets: at most 3 MB, interactive within 2 s. No assertion on
time.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flux_pipeline.plan.expand import load_plan  # noqa: E402
from flux_pipeline.plan.tasks import TaskSpec  # noqa: E402
from flux_pipeline.report import gallery  # noqa: E402
from flux_pipeline.report.files import RunInfo, write_reports  # noqa: E402
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState  # noqa: E402

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def manifest_text(side: int) -> str:
    subjects = [f"subject {i:03d}" for i in range(side)]
    styles = [f"style {i:03d}" for i in range(side)]
    return (
        "version: 1\n"
        "name: bench-gallery\n"
        "defaults:\n"
        "  input: {mode: pro, aspect_ratio: '1:1', output_format: png}\n"
        "steps:\n"
        "  - id: shot\n"
        "    matrix:\n"
        f"      subject: {subjects}\n"
        f"      style: {styles}\n"
        "    prompt: 'A {{ style }} product photo of the Acme {{ subject }} on a plain"
        " background, soft light, centred, high detail'\n"
    )


def tiny_pngs() -> list[bytes]:
    shapes = [(48, 48), (27, 48), (48, 27)]
    made = []
    for i, size in enumerate(shapes):
        buffer = io.BytesIO()
        Image.new("RGB", size, (40 * i, 120, 200)).save(buffer, format="PNG")
        made.append(buffer.getvalue())
    return made


def finished_records(plan_tasks: Sequence[TaskSpec], out: Path) -> dict[str, TaskRecord]:
    images = tiny_pngs()
    now = time.time()
    records = {}
    for i, spec in enumerate(plan_tasks):
        data = images[i % len(images)]
        path = spec.output_paths(1)[0]
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_bytes(data)
        task_id = f"task_{i:016x}"
        url = f"https://cdn.example.com/results/{task_id}/0.png"
        records[spec.key] = TaskRecord(
            key=spec.key,
            readable_id=spec.readable_id,
            step=spec.step,
            parent_key=None,
            parent_output_index=None,
            state=TaskState.DOWNLOADED,
            task_id=task_id,
            request_json=spec.request_json,
            output=spec.output,
            output_format="png",
            result_urls=(url,),
            fail_code=None,
            fail_msg=None,
            attempts=1,
            api_create_time=None,
            api_complete_time=None,
            cost_time=1200,
            first_submitted_at=now,
            submitted_at=now,
            finished_at=now,
            downloaded_at=now,
            updated_at=now,
            outputs=[
                OutputRecord(
                    index=0,
                    path=path,
                    url=url,
                    bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                )
            ],
        )
    return records


def page_weight(out: Path) -> dict[str, int]:
    names = ["index.html"] + [f"{gallery.ASSETS_DIR}/{n}" for n in (*gallery.ASSETS, "data.js")]
    return {name: (out / name).stat().st_size for name in names}


def browser_loads(out: Path, loads: int) -> list[tuple[float, float]]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed")
    found = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS)
        for _ in range(loads):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto((out / "index.html").as_uri())
            page.wait_for_selector("html[data-ready]", timeout=60_000)
            ready = float(page.get_attribute("html", "data-ready") or "nan")
            paint = page.evaluate(
                "() => { const p = performance.getEntriesByType('paint');"
                " return p.length ? p[0].startTime : NaN; }"
            )
            found.append((float(paint), ready))
            context.close()
        browser.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="write the run here and keep it")
    parser.add_argument("--loads", type=int, default=3, help="page loads to time")
    args = parser.parse_args()
    side = math.isqrt(args.tasks)
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = directory / "bench-gallery.yaml"
        manifest.write_text(manifest_text(side), encoding="utf-8")
        plan = load_plan(manifest)
        out = directory / "out"
        out.mkdir(exist_ok=True)
        records = finished_records(list(plan.tasks), out)

        started = time.perf_counter()
        write_reports(plan, records, out, RunInfo(settings={}))
        first = time.perf_counter() - started
        started = time.perf_counter()
        write_reports(plan, records, out, RunInfo(settings={}))
        again = time.perf_counter() - started

        weight = page_weight(out)
        loads = browser_loads(out, args.loads)
    total = sum(weight.values())
    print(f"gallery of {len(plan.tasks):,} tasks (state DB records built directly, tiny PNGs)")
    print(f"  write every report, thumbnails made lazily: {first:6.2f} s")
    print(f"  write them again, thumbnails already there: {again:6.2f} s")
    print(f"  page weight without images: {total / 1e6:.2f} MB (target <= 3 MB)")
    for name, size in weight.items():
        print(f"    {name:40} {size / 1e3:9.1f} kB")
    for n, (paint, ready) in enumerate(loads, start=1):
        print(f"  load {n}: first paint {paint:6.0f} ms, interactive {ready:6.0f} ms")
    median = statistics.median(ready for _, ready in loads)
    print(f"  interactive, median of {len(loads)}: {median:.0f} ms (target <= 2000 ms)")


if __name__ == "__main__":
    main()
