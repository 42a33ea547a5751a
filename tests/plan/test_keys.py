"""Key stability (docs/keys.md): keys change exactly when what is sent (or its lineage) changes."""

from __future__ import annotations

from pathlib import Path

from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.tasks import canonical_json, task_key

from ..manifest.helpers import plan_of, png

BASE = """
version: 1
name: keys
defaults:
  input: {mode: pro, output_format: png}
vars: {brand: Acme}
image_sets:
  products:
    - {name: mug, url: "https://cdn.example.com/mug.jpg"}
    - {name: tee, path: refs/tee.png}
steps:
  - id: hero
    matrix:
      product: {image_set: products}
      style: [watercolor, oil]
    repeat: 2
    prompt: "{{ vars.brand }} {{ product.name }} as {{ style }}"
    images: ["{{ product.url }}"]
  - id: banner
    from: hero
    prompt: "Banner for {{ parent.product.name }}"
"""

FILES: dict[str, bytes | str] = {"refs/tee.png": png()}


def keys(plan: Plan) -> dict[str, str]:
    return {task.readable_id: task.key for task in plan.tasks}


def plan_text(tmp_path: Path, text: str, files: dict[str, bytes | str] | None = None) -> Plan:
    return plan_of(tmp_path, text, {**FILES, **(files or {})})


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Readable ids (of ``after``) whose key is not among the keys of ``before``."""
    old = set(before.values())
    return {rid for rid, key in after.items() if key not in old}


def test_keys_are_deterministic_and_match_task_key(tmp_path: Path) -> None:
    first = plan_text(tmp_path, BASE)
    for task in first.tasks:  # every key is tasks.task_key of the request and its lineage
        request = task.request
        assert canonical_json(request) == task.request_json
        assert task.key == task_key(
            request,
            parent_key=task.parent_key,
            parent_output_index=task.parent_output_index,
            repeat_index=task.repeat_index,
        )
    assert keys(first) == keys(plan_text(tmp_path, BASE))
    assert len(set(keys(first).values())) == len(first.tasks) == 16


def test_whitespace_only_template_edit_keeps_keys(tmp_path: Path) -> None:
    before = keys(plan_text(tmp_path, BASE))
    edited = BASE.replace(
        '"{{ vars.brand }} {{ product.name }} as {{ style }}"',
        '"{{vars.brand}} {{  product.name  }} as {{style }}"',
    ).replace(
        '"Banner for {{ parent.product.name }}"', "|\n      Banner for {{parent.product.name}}\n"
    )
    assert edited != BASE
    assert keys(plan_text(tmp_path, edited)) == before


def test_step_rename_and_reordered_keys_keep_keys(tmp_path: Path) -> None:
    before = plan_text(tmp_path, BASE)
    renamed = """
steps:
  - prompt: "{{ vars.brand }} {{ product.name }} as {{ style }}"
    images: ["{{ product.url }}"]
    repeat: 2
    matrix:
      product: {image_set: products}
      style: [watercolor, oil]
    id: shots
  - prompt: "Banner for {{ parent.product.name }}"
    from: shots
    id: banners
image_sets:
  products:
    - {url: "https://cdn.example.com/mug.jpg", name: mug}
    - {path: refs/tee.png, name: tee}
vars: {brand: Acme}
defaults:
  input: {output_format: png, mode: pro}
name: keys-renamed
version: 1
"""
    after = plan_text(tmp_path, renamed)
    assert [t.key for t in after.tasks] == [t.key for t in before.tasks]
    assert after.tasks[0].readable_id.startswith("shots@")


def test_changed_prompt_changes_that_step_and_its_children_only(tmp_path: Path) -> None:
    before = keys(plan_text(tmp_path, BASE))
    after = keys(plan_text(tmp_path, BASE.replace("as {{ style }}", "in {{ style }}")))
    assert changed(before, after) == set(after)  # every hero changed, so every banner too
    after = keys(plan_text(tmp_path, BASE.replace("Banner for", "A banner for")))
    assert changed(before, after) == {rid for rid in after if "/banner" in rid}


def test_changed_input_field_changes_keys(tmp_path: Path) -> None:
    before = keys(plan_text(tmp_path, BASE))
    text = BASE.replace(
        'prompt: "Banner for', 'input: {aspect_ratio: "16:9"}\n    prompt: "Banner for'
    )
    after = keys(plan_text(tmp_path, text))
    assert changed(before, after) == {rid for rid in after if "/banner" in rid}


def test_changed_reference_file_changes_only_the_tasks_using_it(tmp_path: Path) -> None:
    before = keys(plan_text(tmp_path, BASE))
    after = keys(plan_text(tmp_path, BASE, {"refs/tee.png": png((0, 0, 255))}))
    assert changed(before, after) == {rid for rid in after if "product=tee" in rid}
    assert len(changed(before, after)) == 8


def test_repeat_increase_adds_new_keys_only_for_new_repeats(tmp_path: Path) -> None:
    before = keys(plan_text(tmp_path, BASE))
    after = keys(plan_text(tmp_path, BASE.replace("repeat: 2", "repeat: 3")))
    assert all(after[rid] == key for rid, key in before.items())
    assert changed(before, after) == {rid for rid in after if rid.split("/")[0].endswith("#3")}
    assert len(after) == 24


def test_parent_change_changes_children_keys(tmp_path: Path) -> None:
    before = keys(plan_text(tmp_path, BASE))
    after = keys(
        plan_text(
            tmp_path,
            BASE.replace("https://cdn.example.com/mug.jpg", "https://cdn.example.com/mug2.jpg"),
        )
    )
    assert changed(before, after) == {rid for rid in after if "product=mug" in rid}


def test_output_path_is_not_in_the_key(tmp_path: Path) -> None:
    before = keys(plan_text(tmp_path, BASE))
    text = BASE.replace(
        'prompt: "Banner for', 'output: "b/{{ parent.id | slug }}"\n    prompt: "Banner for'
    )
    assert keys(plan_text(tmp_path, text)) == before
