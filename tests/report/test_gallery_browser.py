"""The demo's gallery in a real browser (Debian's chromium, headless, no driver), opened from
a file:// URL as a person would: every image loads and a screenshot is taken.

``.ci/run`` installs chromium; elsewhere the test is skipped when it is not on PATH.

Chromium's ``--dump-dom`` gives the DOM after load but not image state, so the test runs a
copy of the page (the product page allows no script) with a small script that waits until
every ``<img>`` is complete and writes how many have ``naturalWidth > 0`` into an attribute.
The copy sits beside the original, so the relative links are the same.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from flux_pipeline.simulator import SimConfig, SimulatorThread

from ..run.support import run_inprocess
from .support import parse_gallery

DEMO = Path(__file__).resolve().parents[2] / "pipelines" / "demo.yaml"
KEY = "gallery-key"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROBE = """<script>
function probe() {
  var images = Array.from(document.images);
  if (!images.every(function (i) { return i.complete; })) { setTimeout(probe, 50); return; }
  var broken = images.filter(function (i) { return !(i.naturalWidth > 0); });
  document.documentElement.setAttribute("data-probe",
    images.length + " " + (images.length - broken.length) + " " +
    broken.map(function (i) { return i.getAttribute("src"); }).join("|"));
}
window.addEventListener("load", probe);
</script>"""


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
@pytest.mark.anyio
async def test_demo_gallery_renders_every_image_in_headless_chromium(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=0.2)
    with SimulatorThread(config) as sim:
        # the lock goes into the scratch directory, not next to the repository's manifest
        result = await run_inprocess(
            DEMO, out, base_url=sim.base_url, api_key=KEY, lock_path=tmp_path / "demo.lock.json"
        )
    assert result.outcome.exit_code == 0, result.outcome
    page = out / "index.html"
    images = parse_gallery(page).images
    outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(outputs) == 8
    # every output once, and each of the 4 banners beside its parent hero image
    assert sorted({str(i["src"]) for i in images}) == outputs
    assert len(images) == 8 + 4

    html = page.read_text(encoding="utf-8")
    csp = re.search(r'<meta http-equiv="Content-Security-Policy"[^>]*>', html)
    assert csp is not None
    probe_page = out / "index.probe.html"
    probe_page.write_text(html.replace(csp.group(0), "").replace("</body>", PROBE + "</body>"))

    # tall window: every lazily loaded image is near the viewport, so all of them load
    dump = chromium(
        tmp_path / "profile-dom",
        "--window-size=1280,4000",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe_page.as_uri(),
    )
    found = re.search(r'data-probe="(\d+) (\d+) ([^"]*)"', dump.stdout)
    assert found is not None, f"the probe did not finish: {dump.stderr[-2000:]}"
    total, loaded, broken = int(found.group(1)), int(found.group(2)), found.group(3)
    assert (total, loaded) == (12, 12), f"broken images: {broken}"

    shot = tmp_path / "gallery.png"
    screenshot = chromium(
        tmp_path / "profile-shot",
        f"--screenshot={shot}",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
        page.as_uri(),
    )
    assert shot.is_file(), screenshot.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # images and text, not a blank page
