"""GitHub Actions matrix semantics: the examples of GitHub's "Running variations of jobs in a
workflow" page, reproduced exactly (values, order and count)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flux_pipeline.plan.matrix import expand, same

from ..manifest.helpers import ids, plan_of


def test_github_include_example_fruit_and_animal() -> None:
    result = expand(
        [("fruit", ["apple", "pear"]), ("animal", ["cat", "dog"])],
        include=[
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    )
    assert result == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_github_expanding_configurations_example() -> None:
    result = expand(
        [("os", ["windows-latest", "ubuntu-latest"]), ("node", [14, 16])],
        include=[{"os": "windows-latest", "node": 16, "npm": 6}],
    )
    assert result == [
        {"os": "windows-latest", "node": 14},
        {"os": "windows-latest", "node": 16, "npm": 6},
        {"os": "ubuntu-latest", "node": 14},
        {"os": "ubuntu-latest", "node": 16},
    ]


def test_github_adding_configurations_example() -> None:
    result = expand(
        [("os", ["macos-latest", "windows-latest", "ubuntu-latest"]), ("version", [12, 14, 16])],
        include=[{"os": "windows-latest", "version": 17}],
    )
    assert len(result) == 10
    assert result[-1] == {"os": "windows-latest", "version": 17}
    assert result[0] == {"os": "macos-latest", "version": 12}


def test_github_include_only_example() -> None:
    entries = [
        {"site": "production", "datacenter": "site-a"},
        {"site": "staging", "datacenter": "site-b"},
    ]
    assert expand([], include=entries) == entries


def test_github_exclude_example_os_version_environment() -> None:
    result = expand(
        [
            ("os", ["macos-latest", "windows-latest"]),
            ("version", [12, 14, 16]),
            ("environment", ["staging", "production"]),
        ],
        exclude=[
            {"os": "macos-latest", "version": 12, "environment": "production"},
            {"os": "windows-latest", "version": 16},
        ],
    )
    assert len(result) == 9
    assert {"os": "macos-latest", "version": 12, "environment": "production"} not in result
    assert not [r for r in result if r["os"] == "windows-latest" and r["version"] == 16]
    assert result[0] == {"os": "macos-latest", "version": 12, "environment": "staging"}


def test_github_order_first_axis_varies_slowest() -> None:
    result = expand([("version", [10, 12, 14]), ("os", ["ubuntu-latest", "windows-latest"])])
    assert [(r["version"], r["os"]) for r in result] == [
        (10, "ubuntu-latest"),
        (10, "windows-latest"),
        (12, "ubuntu-latest"),
        (12, "windows-latest"),
        (14, "ubuntu-latest"),
        (14, "windows-latest"),
    ]


def test_include_can_add_back_an_excluded_combination() -> None:
    result = expand(
        [("a", [1, 2]), ("b", ["x", "y"])],
        exclude=[{"a": 2}],
        include=[{"a": 2, "b": "y"}],
    )
    assert result == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "y"}]


def test_lists_are_values_not_expanded() -> None:
    result = expand([("tags", [["a", "b"], ["c"]])])
    assert result == [{"tags": ["a", "b"]}, {"tags": ["c"]}]


def test_values_compare_as_yaml_types() -> None:
    assert not same(True, 1)
    assert not same("16", 16)
    assert same(16, 16.0)
    assert expand([("node", [16, "16"])], exclude=[{"node": "16"}]) == [{"node": 16}]


def test_match_function_compares_image_names() -> None:
    images: list[dict[str, Any]] = [{"name": "mug"}, {"name": "tee"}]

    def by_name(axis: str, value: Any) -> Any:
        return value["name"] if axis == "product" else value

    result = expand(
        [("product", images), ("style", ["a", "b"])],
        exclude=[{"product": "tee", "style": "b"}],
        include=[{"product": "mug", "extra": 1}],
        match=by_name,
    )
    assert result == [
        {"product": {"name": "mug"}, "style": "a", "extra": 1},
        {"product": {"name": "mug"}, "style": "b", "extra": 1},
        {"product": {"name": "tee"}, "style": "a"},
    ]


def test_manifest_matrix_follows_github_and_labels_include_keys(tmp_path: Path) -> None:
    plan = plan_of(
        tmp_path,
        """
        version: 1
        name: fruit
        steps:
          - id: s
            matrix:
              fruit: [apple, pear]
              animal: [cat, dog]
              include:
                - color: green
                - {color: pink, animal: cat}
                - {fruit: apple, shape: circle}
                - fruit: banana
                - {fruit: banana, animal: cat}
            prompt: >-
              {{ fruit }} {{ animal | default('none') }} {{ color | default('') }}
              {{ shape | default('') }}
        """,
    )
    assert ids(plan) == [
        "s@fruit=apple,animal=cat,color=pink,shape=circle#1",
        "s@fruit=apple,animal=dog,color=green,shape=circle#1",
        "s@fruit=pear,animal=cat,color=pink#1",
        "s@fruit=pear,animal=dog,color=green#1",
        "s@fruit=banana#1",
        "s@fruit=banana,animal=cat#1",
    ]
