"""A CSV image column and an image-set entry with extra fields, run end to end: ``flux-pipeline
run`` (a subprocess) against the simulator over loopback HTTP, which checks every reference
image it receives. The create bodies show each local file sent inline as a ``data:`` URI of
its own bytes, beside the remote URL of another row, and the prompts reading the extra
fields."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

from ..manifest.helpers import png, write
from .support import clean_env, quick_sim, run_argv, sim_tasks

KEY = "catalogue-key"
MUG, CAP = png((10, 120, 30)), png((240, 200, 10), size=12)

MANIFEST = """
version: 1
name: catalogue
defaults: {input: {output_format: png}}
image_sets:
  caps:
    - {path: refs/cap.png, sku: C-3, colour: yellow}
steps:
  - id: hero
    matrix:
      product: {csv: products.csv, images: [photo]}
    prompt: "{{ product.sku }}: {{ product.name }}"
    images: ["{{ product.photo.url }}"]
  - id: caps
    matrix: {cap: {image_set: caps}}
    prompt: "{{ cap.sku }} in {{ cap.colour }}"
    images: ["{{ cap.url }}"]
"""


def data_uri(content: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(content).decode()


def test_image_columns_and_extra_fields_reach_the_create_requests(tmp_path: Path) -> None:
    products = "sku;name;photo\nA-1;mug;refs/mug.png\n"
    manifest = write(
        tmp_path, MANIFEST, {"products.csv": products, "refs/mug.png": MUG, "refs/cap.png": CAP}
    )
    out = tmp_path / "out"
    with quick_sim(KEY) as sim:
        done = subprocess.run(
            run_argv(manifest, out),
            capture_output=True,
            text=True,
            env=clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url),
            timeout=120,
            check=False,
        )
        created = sim_tasks(sim)
    assert done.returncode == 0, done.stdout + done.stderr
    inputs = {t["request"]["input"]["prompt"]: t["request"]["input"] for t in created}
    assert sorted(inputs) == ["A-1: mug", "C-3 in yellow"]
    assert inputs["A-1: mug"]["image_urls"] == [data_uri(MUG)]
    assert inputs["C-3 in yellow"]["image_urls"] == [data_uri(CAP)]
    assert sorted(p.name for p in out.rglob("*.png")) == ["cap-cap-1.png", "product-a-1-1.png"]
