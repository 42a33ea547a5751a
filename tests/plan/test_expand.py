"""Expansion: requests, readable ids, outputs, chained tasks, image references."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_pipeline.errors import ManifestError
from flux_pipeline.plan.expand import load_plan
from flux_pipeline.plan.tasks import LOCAL_IMAGE_PREFIX, PARENT_IMAGE_URL, TaskSpec

from ..manifest.helpers import ids, plan_of, png, write

CHAIN = """
version: 1
name: chain
defaults:
  provider: value
  input: {mode: pro, aspect_ratio: "1:1", output_format: png, safetyTolerance: 2}
vars: {brand: Acme}
image_sets:
  products:
    - {name: mug, url: "https://cdn.example.com/mug.jpg"}
    - {name: tee, path: refs/tee.png}
steps:
  - id: hero
    matrix:
      product: {image_set: products}
      style: [watercolor, oil painting]
      exclude: [{product: tee, style: oil painting}]
    prompt: "{{ vars.brand }} {{ product.name }} as {{ style }}"
    images: ["{{ product.url }}"]
  - id: banner
    from: hero
    matrix: {headline: [Sale, New]}
    prompt: >-
      {{ headline }} for {{ parent.product.name }} ({{ parent.id }}, {{ parent.output }},
      output {{ parent.output_index }}, step {{ step.id }} from {{ parent.step.id }})
    input: {aspect_ratio: "16:9", safetyTolerance: null}
  - id: crop
    from: banner
    prompt: "Crop {{ parent.parent.product.name }} {{ parent.headline }}"
    images: ["{{ parent.image_url }}", "{{ parent.parent.product.url }}"]
    input: {output_format: webp}
"""


def request(task: TaskSpec) -> dict[str, object]:
    return task.request


@pytest.fixture
def chain(tmp_path: Path) -> list[TaskSpec]:
    return list(plan_of(tmp_path, CHAIN, {"refs/tee.png": png()}).tasks)


def test_readable_ids_parents_first_and_chained(chain: list[TaskSpec]) -> None:
    rids = [t.readable_id for t in chain]
    assert rids[:3] == [
        "hero@product=mug,style=watercolor#1",
        "hero@product=mug,style=oil painting#1",
        "hero@product=tee,style=watercolor#1",
    ]
    assert rids[3:5] == [
        "hero@product=mug,style=watercolor#1/banner@headline=Sale#1",
        "hero@product=mug,style=watercolor#1/banner@headline=New#1",
    ]
    assert rids[-1] == "hero@product=tee,style=watercolor#1/banner@headline=New#1/crop#1"
    assert len(chain) == 3 + 6 + 6
    position = {t.key: i for i, t in enumerate(chain)}
    for task in chain:
        if task.parent_key is not None:
            assert position[task.parent_key] < position[task.key]
            assert task.parent_output_index == 0


def test_requests_merge_defaults_and_render_templates(chain: list[TaskSpec]) -> None:
    hero, banner, crop = chain[0], chain[3], chain[-1]
    assert request(hero) == {
        "provider": "value",
        "input": {
            "mode": "pro",
            "aspect_ratio": "1:1",
            "output_format": "png",
            "safetyTolerance": 2,
            "prompt": "Acme mug as watercolor",
            "image_urls": ["https://cdn.example.com/mug.jpg"],
        },
    }
    banner_input = request(banner)["input"]
    assert isinstance(banner_input, dict)
    assert "safetyTolerance" not in banner_input  # null in the step removes the default
    assert banner_input["aspect_ratio"] == "16:9"
    assert banner_input["image_urls"] == [PARENT_IMAGE_URL]
    assert banner_input["prompt"] == (
        "Sale for mug (hero@product=mug,style=watercolor#1, "
        "hero/product-mug-style-watercolor-1.png, output 0, step banner from hero)"
    )
    crop_input = request(crop)["input"]
    assert isinstance(crop_input, dict)
    assert crop_input["prompt"] == "Crop tee New"
    tee_url = crop_input["image_urls"][1]
    assert crop_input["image_urls"][0] == PARENT_IMAGE_URL
    assert tee_url.startswith(LOCAL_IMAGE_PREFIX)
    assert crop.output_format == "webp"
    assert crop.output_paths(1) == [
        "crop/hero-product-tee-style-watercolor-1-banner-headline-new-1-crop-1.webp"
    ]


def test_default_outputs_are_slugs_of_readable_ids(chain: list[TaskSpec]) -> None:
    assert chain[1].output == "hero/product-mug-style-oil-painting-1"
    assert chain[3].output == "banner/hero-product-mug-style-watercolor-1-banner-headline-sale-1"
    assert chain[0].request_json == json.dumps(
        request(chain[0]), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def test_children_for_other_outputs_are_planned_on_demand(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, CHAIN, {"refs/tee.png": png()})
    hero = plan.tasks[0]
    first = plan.children(hero, 0)
    assert [t.readable_id for t in first] == [
        "hero@product=mug,style=watercolor#1/banner@headline=Sale#1",
        "hero@product=mug,style=watercolor#1/banner@headline=New#1",
    ]
    assert all(t in plan.tasks for t in first)
    second = plan.children(hero, 1)
    assert [t.readable_id for t in second] == [
        "hero@product=mug,style=watercolor#1~1/banner@headline=Sale#1",
        "hero@product=mug,style=watercolor#1~1/banner@headline=New#1",
    ]
    assert all(t.parent_output_index == 1 and t.parent_key == hero.key for t in second)
    assert {t.key for t in second}.isdisjoint({t.key for t in plan.tasks})
    prompt = second[0].request["input"]["prompt"]
    assert "hero/product-mug-style-watercolor-1-2.png, output 1" in prompt
    assert {t.output for t in second}.isdisjoint({t.output for t in plan.tasks})
    assert plan.children(hero, 1) == second  # remembered
    grandchildren = plan.children(second[0], 0)  # chains continue from on-demand tasks
    assert [t.readable_id for t in grandchildren] == [
        "hero@product=mug,style=watercolor#1~1/banner@headline=Sale#1/crop#1"
    ]
    assert plan.children(plan.tasks[-1], 0) == []


def test_plan_metadata_and_step_location(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, CHAIN, {"refs/tee.png": png()})
    assert plan.name == "chain"
    assert plan.step_ids == ["hero", "banner", "crop"]
    assert plan.step_location("hero") == (12, 5)
    assert plan.step_location("crop") == (26, 5)
    import hashlib

    assert plan.manifest_sha256 == hashlib.sha256(plan.manifest_path.read_bytes()).hexdigest()
    (sha,) = plan.local_images
    assert plan.local_images[sha].path == tmp_path / "refs/tee.png"
    assert plan.local_images[sha].size == len(png())


def test_data_uri_refuses_a_file_changed_after_planning(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, CHAIN, {"refs/tee.png": png()})
    (sha,) = plan.local_images
    (tmp_path / "refs/tee.png").write_bytes(png((1, 2, 3)))
    with pytest.raises(ManifestError, match="changed since the plan was made"):
        plan.data_uri(sha)


def test_url_template_publishes_local_files(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        version: 1
        name: pub
        vars: {repo: acme/brand}
        image_sets:
          refs:
            files: ["refs/*.png", "more/**/*.png"]
            url_template: "https://raw.example.com/{{ vars.repo }}/{{ path }}?n={{ name }}"
        steps:
          - id: s
            matrix: {ref: {image_set: refs}}
            prompt: "{{ ref.name }} {{ ref.path }}"
            images: ["{{ ref.url }}"]
        """,
        {"refs/b.png": png(), "refs/a.png": png((1, 1, 1)), "more/x/c.png": png((2, 2, 2))},
    )
    assert ids(plan) == ["s@ref=a#1", "s@ref=b#1", "s@ref=c#1"]
    assert plan.tasks[2].request["input"]["image_urls"] == [
        "https://raw.example.com/acme/brand/more/x/c.png?n=c"
    ]
    assert plan.tasks[0].request["input"]["prompt"] == "a refs/a.png"
    assert plan.local_images == {}  # published: nothing is sent inline


def test_lines_and_csv_axes(tmp_path: Path) -> None:
    long_a = "a very long prompt line that goes on and on about a red mug"
    long_b = "a very long prompt line that goes on and on about a blue mug"
    plan = plan_of(
        tmp_path,
        """
        version: 1
        name: files
        steps:
          - id: s
            matrix:
              row: {csv: rows.csv}
              line: {lines: lines.txt}
              exclude: [{row: beta, line: short}]
              include: [{row: beta, line: extra, note: added}]
            prompt: "{{ row.title }} {{ row.size }} {{ line }} {{ note | default('') }}"
            output: "x/{{ row.title | slug }}-{{ line | slug }}"
        """,
        {
            "rows.csv": "title,size\nalpha,1\nbeta,2\n",
            "lines.txt": f"short\n\n{long_a}\n{long_b}\n",
        },
    )
    rids = ids(plan)
    assert rids[0] == "s@row=alpha,line=short#1"
    assert rids[1].startswith("s@row=alpha,line=a very long prompt line that goes on an…")
    assert rids[1] != rids[2]  # clashing truncations are told apart by a short hash
    assert len(rids[1]) == len(rids[2])
    assert rids[-1] == "s@row=beta,line=extra,note=added#1"
    assert "s@row=beta,line=short#1" not in rids
    assert plan.tasks[-1].request["input"]["prompt"] == "beta 2 extra added"


def test_include_can_name_an_image_of_an_image_set_axis(tmp_path: Path) -> None:
    text = """
    version: 1
    name: inc
    image_sets:
      products:
        - {name: mug, url: "https://x.example/mug.jpg"}
        - {name: tee, url: "https://x.example/tee.jpg"}
    steps:
      - id: s
        matrix:
          product: {image_set: products}
          style: [a]
          include: [{product: tee, style: b}, {product: WHAT, style: c}]
        prompt: "{{ product.name }} {{ style }}"
        images: ["{{ product.url }}"]
    """
    with pytest.raises(ManifestError) as caught:
        plan_of(tmp_path, text)
    assert [str(d) for d in caught.value.diagnostics] == [
        "m.yaml:12:16: steps[0].matrix.include: product: no value named 'WHAT'"
    ]
    plan = plan_of(tmp_path, text.replace(", {product: WHAT, style: c}", ""))
    assert ids(plan) == [
        "s@product=mug,style=a#1",
        "s@product=tee,style=a#1",
        "s@product=tee,style=b#1",
    ]
    assert plan.tasks[-1].request["input"]["image_urls"] == ["https://x.example/tee.jpg"]


def test_repeat_and_templated_input_and_default_format(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        version: 1
        name: rep
        steps:
          - id: s
            matrix: {ratio: ["1:1", "16:9"]}
            repeat: 2
            prompt: "take {{ repeat_index }}"
            input:
              aspect_ratio: "{{ ratio }}"
              extra: {nested: ["{{ ratio }}-{{ repeat_index }}"]}
        """,
    )
    assert ids(plan) == ["s@ratio=1:1#1", "s@ratio=1:1#2", "s@ratio=16:9#1", "s@ratio=16:9#2"]
    last = plan.tasks[-1]
    assert last.request == {
        "provider": "auto",
        "input": {"aspect_ratio": "16:9", "extra": {"nested": ["16:9-2"]}, "prompt": "take 2"},
    }
    assert last.output == "s/ratio-16-9-2"
    assert last.output_format == "jpeg"
    assert last.repeat_index == 2


def test_readable_id_collisions_are_errors(tmp_path: Path) -> None:
    text = """
    version: 1
    name: clash
    steps:
      - id: s
        matrix: {include: [{x: 1}, {x: 1}]}
        prompt: "{{ x }}"
    """
    with pytest.raises(ManifestError) as caught:
        plan_of(tmp_path, text)
    assert [str(d) for d in caught.value.diagnostics] == [
        "m.yaml:4:5: steps[0]: two tasks have the readable id 's@x=1#1'"
    ]


def test_plan_size_limit(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        version: 1
        name: big
        steps:
          - id: s
            matrix: {a: [1, 2, 3], b: [1, 2, 3]}
            repeat: 2
            prompt: "{{ a }} {{ b }} {{ repeat_index }}"
        """,
    )
    assert len(load_plan(path, max_tasks=18).tasks) == 18
    with pytest.raises(ManifestError, match="the limit is 17"):
        load_plan(path, max_tasks=17)
