from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_pipeline.plan.tasks import (
    LOCAL_IMAGE_PREFIX,
    PARENT_IMAGE_URL,
    TaskSpec,
    canonical_json,
    resolve_request,
    task_key,
)


def _spec(output_format: str = "png") -> TaskSpec:
    return TaskSpec(
        key="k",
        readable_id="hero#1",
        step="hero",
        parent_key=None,
        parent_output_index=None,
        repeat_index=1,
        request_json=canonical_json({"input": {"prompt": "x"}}),
        output="hero/x",
        output_format=output_format,
    )


def test_key_ignores_dict_order_and_changes_with_lineage() -> None:
    a = task_key(
        {"input": {"a": 1, "b": 2}}, parent_key=None, parent_output_index=None, repeat_index=1
    )
    b = task_key(
        {"input": {"b": 2, "a": 1}}, parent_key=None, parent_output_index=None, repeat_index=1
    )
    assert a == b
    assert a != task_key(
        {"input": {"a": 1, "b": 2}}, parent_key=None, parent_output_index=None, repeat_index=2
    )
    child0 = task_key({"x": 1}, parent_key=a, parent_output_index=0, repeat_index=1)
    child1 = task_key({"x": 1}, parent_key=a, parent_output_index=1, repeat_index=1)
    assert child0 != child1


@pytest.mark.parametrize(
    ("parent_key", "index", "repeat"), [(None, None, 1), ("ab" * 32, 0, 3), ("cd" * 32, 2, 1)]
)
def test_key_is_sha256_of_the_canonical_request_and_lineage(
    parent_key: str | None, index: int | None, repeat: int
) -> None:
    """The definition (docs/keys.md), computed the slow way with the standard library."""
    request = {"provider": "auto", "input": {"prompt": 'Caf\u00e9 "mug"\n', "n": [1.5, None]}}
    lineage = [parent_key, index] if parent_key else None
    material = {"request": request, "parent": lineage, "repeat": repeat}
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(text.encode()).hexdigest()
    key = task_key(request, parent_key=parent_key, parent_output_index=index, repeat_index=repeat)
    assert key == expected
    assert canonical_json(request) == json.dumps(
        request, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def test_output_paths_single_and_several() -> None:
    assert _spec().output_paths(1) == ["hero/x.png"]
    assert _spec("jpeg").output_paths(2) == ["hero/x-1.jpg", "hero/x-2.jpg"]


def test_resolve_request_replaces_references() -> None:
    request = {"input": {"image_urls": [LOCAL_IMAGE_PREFIX + "abc", PARENT_IMAGE_URL, "https://x"]}}
    out = resolve_request(
        request,
        parent_image_url="https://r/p.png",
        local_image=lambda h: f"data:image/png;base64,{h}",
    )
    assert out["input"]["image_urls"] == [
        "data:image/png;base64,abc",
        "https://r/p.png",
        "https://x",
    ]
    assert request["input"]["image_urls"][1] == PARENT_IMAGE_URL  # input untouched
    with pytest.raises(ValueError, match="parent image URL"):
        resolve_request(request, parent_image_url=None, local_image=lambda h: h)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON)
def test_canonical_json_is_the_sorted_compact_encoding(value: object) -> None:
    """The encoder made once (plan/tasks.py) writes what ``json.dumps`` with the same settings
    writes, for every JSON value (the keys of every existing lock depend on it)."""
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected
