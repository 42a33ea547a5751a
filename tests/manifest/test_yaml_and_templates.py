"""The YAML loader (locations, duplicates, safety) and the template sandbox."""

from __future__ import annotations

import pytest

from flux_pipeline.errors import ManifestError
from flux_pipeline.manifest.yamlload import load_yaml
from flux_pipeline.plan import templates


def test_locations_of_values_and_keys() -> None:
    located = load_yaml("a: 1\nsteps:\n  - id: x\n    prompt: 'p'\n", "f.yaml")
    assert located.data == {"a": 1, "steps": [{"id": "x", "prompt": "p"}]}
    assert located.where(("steps", 0, "prompt")) == (4, 13)
    assert located.where(("steps", 0, "prompt"), key=True) == (4, 5)
    assert located.where(("steps", 0, "missing")) == (3, 5)  # nearest ancestor
    assert str(located.diag(("a",), "bad")) == "f.yaml:1:4: bad"


def test_keys_are_the_text_written_and_dates_stay_text() -> None:
    located = load_yaml("on: yes\n1: 2024-01-02\nnull: ~\n", "f.yaml")
    assert located.data == {"on": True, "1": "2024-01-02", "null": None}


def test_merge_keys_and_overrides_are_not_duplicates() -> None:
    text = "base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n"
    assert load_yaml(text, "f.yaml").data["d"] == {"y": 2, "x": 3}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", "f.yaml:3:1: duplicate key 'a' (first defined at line 1, column 1)"),
        ("? [1]\n: 2\n", "f.yaml:1:3: a mapping key must be a plain string, not a list or mapping"),
        ("a: !!binary aGk=\n", "f.yaml:1:4: unsupported YAML tag 'tag:yaml.org,2002:binary'"),
        ("a: !custom x\n", "f.yaml:1:4: unsupported YAML tag '!custom'"),
        ("a: .inf\n", "f.yaml:1:4: expected a finite number"),
        ("a: !!set {x}\n", "f.yaml:1:4: unsupported YAML tag 'tag:yaml.org,2002:set'"),
        (
            "\t- x\n",
            "f.yaml:1:1: invalid YAML: while scanning for the next token; "
            "found character that cannot start any token",
        ),
    ],
)
def test_rejected_yaml(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        load_yaml(text, "f.yaml")
    assert [str(d) for d in caught.value.diagnostics] == [message]


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(ManifestError):
        load_yaml("[" * 5000 + "]" * 5000, "f.yaml")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Oil Painting!", "oil-painting"),
        ("  Crème brûlée  ", "creme-brulee"),
        ("hero@product=mug,style=oil painting#1", "hero-product-mug-style-oil-painting-1"),
        ("___", "bda25155"),  # nothing to keep: a hash of the text (tests/plan/test_slug.py)
        (42, "42"),
    ],
)
def test_slug(value: object, expected: str) -> None:
    assert templates.slug(value) == expected


def test_plain_text_is_not_compiled_and_templates_are_cached() -> None:
    assert templates.compile_template("no markers here") == "no markers here"
    first = templates.compile_template("{{ a }}-{{ b | slug }}")
    assert templates.compile_template("{{ a }}-{{ b | slug }}") is first
    assert templates.render(first, templates.context({"a": 1, "b": "X Y"})) == "1-x-y"
    assert templates.names_used("{{ a.b }} {% for i in c %}{{ i }}{% endfor %}") == {"a", "c"}


def test_render_never_mutates_the_shared_context() -> None:
    context = templates.context({"items": [1], "d": {"k": 1}})
    template = templates.compile_template("{{ items.append(2) }}{{ d.update({'k': 2}) }}")
    with pytest.raises(templates.TemplateProblem, match="sandbox"):
        templates.render(template, context)
    assert context["items"] == [1]
    assert context["d"] == {"k": 1}


@pytest.mark.parametrize(
    "source",
    ["{{ 'ab' * 10**6 }}", "{{ [1] * 10**6 }}", "{{ 10 ** 1000000 }}", "{{ range(10**9) | list }}"],
)
def test_resource_hungry_templates_are_refused(source: str) -> None:
    with pytest.raises(templates.TemplateProblem):
        templates.render(templates.compile_template(source), templates.context({}))
