"""Catalogue data through the CLI: CSV / lines columns that are images, image-set entries
with extra fields, and CSV dialects (delimiter, quoting, encoding, BOM) detected or set.

Each test ran first against the code before the change and reproduced its symptom: an image
column could not name a local file, an image-set entry refused extra fields, a `;` CSV was
one column with no hint, an undecodable CSV named no line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from flux_pipeline.media import sha256_bytes
from flux_pipeline.plan.tasks import LOCAL_IMAGE_PREFIX

from ..manifest.helpers import ROOT, png, write


def flux(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flux_pipeline", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def planned(cwd: Path) -> list[dict[str, Any]]:
    done = flux(cwd, "plan", "--json", "m.yaml")
    assert done.returncode == 0, done.stderr
    tasks: list[dict[str, Any]] = json.loads(done.stdout)["tasks"]
    return tasks


def refused(cwd: Path) -> str:
    done = flux(cwd, "validate", "m.yaml")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stderr


RED, BLUE = png((200, 0, 0)), png((0, 0, 200))

CSV_IMAGES = """
version: 1
name: catalogue
steps:
  - id: hero
    matrix:
      product: {csv: products.csv, images: [photo]}
    prompt: "{{ product.sku }} {{ product.name }} in {{ product.photo.name }}"
    images: ["{{ product.photo.url }}"]
"""


def test_a_csv_image_column_names_local_files_and_urls(tmp_path: Path) -> None:
    csv_text = "sku,name,photo\nA-1,mug,refs/mug.png\nB-2,tee,https://cdn.example.com/p/tee.jpg\n"
    write(tmp_path, CSV_IMAGES, {"products.csv": csv_text, "refs/mug.png": RED})
    tasks = planned(tmp_path)
    assert [t["readable_id"] for t in tasks] == ["hero@product=A-1#1", "hero@product=B-2#1"]
    mug, tee = (t["request"]["input"] for t in tasks)
    assert mug["image_urls"] == [LOCAL_IMAGE_PREFIX + sha256_bytes(RED)]
    assert mug["prompt"] == "A-1 mug in mug"
    assert tee["image_urls"] == ["https://cdn.example.com/p/tee.jpg"]
    assert tee["prompt"] == "B-2 tee in tee"


def test_an_image_column_keys_by_content_not_by_path(tmp_path: Path) -> None:
    """docs/keys.md: a local file counts by its content, never by its path."""
    manifest = CSV_IMAGES.replace("{{ product.photo.name }}", "a studio")

    def key_with(photo: str, content: bytes) -> str:
        write(
            tmp_path,
            manifest,
            {"products.csv": f"sku,name,photo\nA-1,mug,{photo}\n", photo: content},
        )
        (task,) = planned(tmp_path)
        assert task["request"]["input"]["image_urls"] == [
            LOCAL_IMAGE_PREFIX + sha256_bytes(content)
        ]
        key: str = task["key"]
        return key

    first = key_with("a.png", RED)
    assert key_with("renamed/b.png", RED) == first
    assert key_with("a.png", BLUE) != first


def test_image_column_problems_are_located_and_exit_2(tmp_path: Path) -> None:
    csv_text = (
        "sku,name,photo\n"
        "A-1,mug,refs/missing.png\n"
        "B-2,tee,notes.txt\n"
        "C-3,cap,\n"
        "D-4,hat,ftp://example.com/hat.png\n"
    )
    write(tmp_path, CSV_IMAGES, {"products.csv": csv_text, "notes.txt": "hello"})
    err = refused(tmp_path)
    assert "products.csv:2: column 'photo':" in err
    assert "missing.png" in err
    assert "products.csv:3: column 'photo':" in err
    assert "not a JPG, PNG or WebP" in err
    assert "products.csv:4: column 'photo' is empty" in err
    assert "products.csv:5: column 'photo':" in err
    assert "http(s) URL" in err


def test_an_unknown_image_column_gets_a_hint(tmp_path: Path) -> None:
    write(
        tmp_path,
        CSV_IMAGES.replace("images: [photo]", "images: [foto]"),
        {"products.csv": "sku,name,photo\nA-1,mug,a.png\n", "a.png": RED},
    )
    err = refused(tmp_path)
    assert "m.yaml:6:" in err
    assert "no column 'foto'" in err
    assert "did you mean 'photo'" in err


def test_an_image_column_outside_the_project_is_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(RED)
    write(project, CSV_IMAGES, {"products.csv": "sku,name,photo\nA-1,mug,../secret.png\n"})
    err = refused(project)
    assert "products.csv:2: column 'photo':" in err
    assert "outside" in err


def test_url_template_publishes_the_local_files_of_image_columns(tmp_path: Path) -> None:
    manifest = CSV_IMAGES.replace(
        "images: [photo]",
        'images: [photo], url_template: "https://raw.example.com/main/{{ path }}"',
    )
    write(
        tmp_path,
        manifest,
        {"products.csv": "sku,name,photo\nA-1,mug,refs/m.png\n", "refs/m.png": RED},
    )
    (task,) = planned(tmp_path)
    assert task["request"]["input"]["image_urls"] == ["https://raw.example.com/main/refs/m.png"]


def test_a_lines_axis_of_images(tmp_path: Path) -> None:
    manifest = """
    version: 1
    name: lines
    steps:
      - id: hero
        matrix:
          photo: {lines: photos.txt, images: true}
        prompt: "a poster of {{ photo.name }}"
        images: ["{{ photo.url }}"]
    """
    lines = "refs/a.png\n\nhttps://cdn.example.com/b.webp\n"
    write(tmp_path, manifest, {"photos.txt": lines, "refs/a.png": BLUE})
    tasks = planned(tmp_path)
    assert [t["readable_id"] for t in tasks] == [
        "hero@photo=refs/a.png#1",
        "hero@photo=https://cdn.example.com/b.webp#1",
    ]
    assert tasks[0]["request"]["input"]["image_urls"] == [LOCAL_IMAGE_PREFIX + sha256_bytes(BLUE)]
    assert tasks[1]["request"]["input"]["prompt"] == "a poster of b"


def test_image_lines_are_matched_by_the_text_written(tmp_path: Path) -> None:
    manifest = """
    version: 1
    name: lines
    steps:
      - id: hero
        matrix:
          photo: {lines: photos.txt, images: true}
          size: [s, l]
          exclude: [{photo: refs/a.png, size: l}]
          include: [{photo: refs/b.png, size: xl}]
        prompt: "{{ photo.name }} {{ size }}"
        images: ["{{ photo.url }}"]
    """
    write(tmp_path, manifest, {"photos.txt": "refs/a.png\n", "refs/a.png": RED, "refs/b.png": BLUE})
    err = refused(tmp_path)
    assert "no value named 'refs/b.png'" in err
    write(tmp_path, manifest, {"photos.txt": "refs/a.png\nrefs/b.png\n"})
    tasks = planned(tmp_path)
    assert [t["readable_id"] for t in tasks] == [
        "hero@photo=refs/a.png,size=s#1",
        "hero@photo=refs/b.png,size=s#1",
        "hero@photo=refs/b.png,size=l#1",
        "hero@photo=refs/b.png,size=xl#1",
    ]
    assert tasks[3]["request"]["input"]["image_urls"] == [LOCAL_IMAGE_PREFIX + sha256_bytes(BLUE)]


def test_image_set_entries_carry_extra_fields(tmp_path: Path) -> None:
    manifest = """
    version: 1
    name: extras
    image_sets:
      products:
        - {path: a.png, sku: A-1, colour: red}
        - {name: tee, url: "https://cdn.example.com/tee.jpg", sku: B-2, price: 12.5}
    steps:
      - id: hero
        matrix: {item: {image_set: products}}
        prompt: "{{ item.name }} {{ item.sku }} {{ item.colour | default('plain') }}"
        images: ["{{ item.url }}"]
    """
    write(tmp_path, manifest, {"a.png": RED})
    tasks = planned(tmp_path)
    prompts = [t["request"]["input"]["prompt"] for t in tasks]
    assert prompts == ["a A-1 red", "tee B-2 plain"]
    assert tasks[0]["request"]["input"]["image_urls"] == [LOCAL_IMAGE_PREFIX + sha256_bytes(RED)]
    assert tasks[1]["request"]["input"]["image_urls"] == ["https://cdn.example.com/tee.jpg"]


def test_an_extra_field_that_looks_like_a_typo_is_refused(tmp_path: Path) -> None:
    manifest = """
    version: 1
    name: extras
    image_sets:
      products:
        - {nme: mug, path: a.png}
    steps:
      - id: hero
        matrix: {item: {image_set: products}}
        prompt: "{{ item.name }}"
    """
    write(tmp_path, manifest, {"a.png": RED})
    err = refused(tmp_path)
    assert "m.yaml:5:13:" in err
    assert "'nme'" in err
    assert "did you mean 'name'" in err


SEMI = """
version: 1
name: dialects
steps:
  - id: hero
    matrix: {product: {csv: products.csv}}
    prompt: "{{ product.name }} in {{ product.colour }}"
"""


def test_a_semicolon_csv_is_detected(tmp_path: Path) -> None:
    write(tmp_path, SEMI, {"products.csv": 'name;colour\nmug;"red; glossy"\ntee;blue\n'})
    prompts = [t["request"]["input"]["prompt"] for t in planned(tmp_path)]
    assert prompts == ["mug in red; glossy", "tee in blue"]


def test_tab_and_pipe_csvs_are_detected(tmp_path: Path) -> None:
    for text in ("name\tcolour\nmug\tred\n", "name|colour\nmug|red\n"):
        write(tmp_path, SEMI, {"products.csv": text})
        assert [t["request"]["input"]["prompt"] for t in planned(tmp_path)] == ["mug in red"]


def test_a_one_column_csv_with_commas_in_values_stays_one_column(tmp_path: Path) -> None:
    manifest = SEMI.replace("{{ product.name }} in {{ product.colour }}", "{{ product.name }}")
    write(tmp_path, manifest, {"products.csv": "name\nmug; red\ntee; blue\n"})
    assert [t["request"]["input"]["prompt"] for t in planned(tmp_path)] == ["mug; red", "tee; blue"]


def test_dialect_and_encoding_can_be_set(tmp_path: Path) -> None:
    manifest = SEMI.replace(
        "{csv: products.csv}",
        '{csv: products.csv, delimiter: "|", quotechar: "\'", encoding: cp1252}',
    )
    text = "name|colour\nmug|'caf\u00e9 | cr\u00e8me'\n"
    write(tmp_path, manifest, {"products.csv": text.encode("cp1252")})
    prompts = [t["request"]["input"]["prompt"] for t in planned(tmp_path)]
    assert prompts == ["mug in caf\u00e9 | cr\u00e8me"]


def test_a_bom_is_detected(tmp_path: Path) -> None:
    text = "name,colour\nmug,r\u00f6d\n"
    for content in (b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16")):
        write(tmp_path, SEMI, {"products.csv": content})
        assert [t["request"]["input"]["prompt"] for t in planned(tmp_path)] == ["mug in r\u00f6d"]


def test_undecodable_bytes_are_reported_with_their_line(tmp_path: Path) -> None:
    content = "name,colour\nmug,red\ntee,caf\u00e9\n".encode("cp1252")
    write(tmp_path, SEMI, {"products.csv": content})
    err = refused(tmp_path)
    assert "products.csv:3: not valid UTF-8" in err
    assert "encoding" in err


def test_a_row_with_the_wrong_number_of_fields_names_its_line(tmp_path: Path) -> None:
    text = 'name;colour\nmug;red\n"tall\nmug";red;extra\ntee;blue\n'
    write(tmp_path, SEMI, {"products.csv": text})
    err = refused(tmp_path)
    assert "products.csv:3: expected 2 fields, found 3" in err
    assert "delimiter ';'" in err


def test_an_unknown_encoding_or_a_bad_delimiter_is_refused(tmp_path: Path) -> None:
    manifest = SEMI.replace("{csv: products.csv}", "{csv: products.csv, encoding: klingon}")
    write(tmp_path, manifest, {"products.csv": "name,colour\nmug,red\n"})
    assert "unknown encoding 'klingon'" in refused(tmp_path)
    manifest = SEMI.replace("{csv: products.csv}", '{csv: products.csv, delimiter: ";;"}')
    write(tmp_path, manifest, {"products.csv": "name,colour\nmug,red\n"})
    assert "delimiter" in refused(tmp_path)


def test_sniffing_a_hostile_csv_takes_no_time(tmp_path: Path) -> None:
    """``csv.Sniffer`` is quadratic on some inputs: 64 KiB of this took a minute."""
    write(tmp_path, SEMI, {"products.csv": "name;colour\n" + ';"x' * 300_000})
    done = flux(tmp_path, "validate", "m.yaml", timeout=20)
    assert done.returncode == 2, done.stderr
    assert "products.csv:2: expected 2 fields, found 150001" in done.stderr
