"""``slug`` transliterates non-Latin text, is never empty, and leaves ASCII slugs alone."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

import pytest
from anyascii import anyascii
from hypothesis import given
from hypothesis import strategies as st

from flux_pipeline.plan import templates
from flux_pipeline.plan.expand import load_plan
from flux_pipeline.plan.templates import _NOT_SLUG

from ..manifest.helpers import plan_of

ROOT = Path(__file__).resolve().parents[2]

GREEK = """
version: 1
name: greek
steps:
  - id: hero
    matrix:
      product: ["Ελιά", "Μέλι", "Θυμάρι"]
    prompt: "A photograph of {{ product }}"
  - id: label
    matrix:
      product: ["Ελιά", "Μέλι"]
    prompt: "A label for {{ product }}"
    output: "labels/{{ product | slug }}"
"""


def test_greek_product_names_get_distinct_readable_outputs(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, GREEK)
    outputs = sorted(task.output for task in plan.tasks)
    assert outputs == [
        "hero/product-elia-1",
        "hero/product-meli-1",
        "hero/product-thymari-1",
        "labels/elia",
        "labels/meli",
    ]
    assert len(set(outputs)) == len(outputs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Αθήνα", "athina"),
        ("Москва", "moskva"),
        ("北京", "beijing"),
        ("Straße Æsir ø", "strasse-aesir-o"),
        ("e\u0301te\u0301", "ete"),
        ("Oil Painting!", "oil-painting"),
    ],
)
def test_slug_transliterates(value: str, expected: str) -> None:
    assert templates.slug(value) == expected


@pytest.mark.parametrize("value", ["___", "", "!!!", "\u200b"])
def test_slug_is_never_empty_and_tells_texts_apart(value: str) -> None:
    result = templates.slug(value)
    assert re.fullmatch(r"[0-9a-f]{8}", result)
    assert result == hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]
    assert templates.slug(value + "?") != result


def _old_slug(value: object) -> str:
    """The slug before transliteration: what every ASCII text must still give."""
    text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=40))
def test_ascii_slugs_do_not_change(text: str) -> None:
    old = _old_slug(text)
    assert templates.slug_part(text) == old
    if old:
        assert templates.slug(text) == old


def test_ascii_text_is_its_own_transliteration() -> None:
    """``slug_part`` skips ``anyascii`` for ASCII text (plan/templates.py): exact, because
    every ASCII character transliterates to itself."""
    every = "".join(map(chr, range(128)))
    assert anyascii(every) == every
    assert templates.slug_part("Ünïcode " + every) == templates.slug_part("Unicode " + every)
    assert anyascii("…") == "..."  # and the ellipsis that ``slug_part`` replaces itself
    for text in ("a…b", "…", "ü…", "Αθήνα…#1/"):
        assert templates.slug_part(text) == _NOT_SLUG.sub("-", anyascii(text).lower()).strip("-")


@given(st.text(max_size=12), st.text(max_size=12))
def test_slugs_of_parts_joined_equal_the_slug_of_the_whole(a: str, b: str) -> None:
    # plan/render.py builds default outputs from the slugs of parts of the readable id
    joined = "-".join(p for p in (templates.slug_part(a), templates.slug_part(b)) if p)
    assert templates.slug_part(f"{a}/{b}") == joined


# sha256 of "readable_id key output" lines of every task, recorded before transliteration
# (product-shots.yaml re-recorded once: its aspect ratio "4:5", which the API refuses, became
# "3:4", and the aspect ratio is part of every key; tests/plan/test_shipped_keys.py pins those)
EXAMPLES = {
    "demo.yaml": "b757fd3138cb036d703779c87b165e3e42ed6410b9eddb2d0bac44cc47950a60",
    "product-shots.yaml": "5e34c8af01c339450a2a84dd0593ca40151c99d5cfb24cb252fefe31943cf7d5",
    "storyboard.yaml": "a0fd686df6809c30dd137a7f9c1fc5fed1d603ca5dd2d0c59bce3ba41d08346b",
    "style-transfer.yaml": "4d18856be5417a7d2cb64555e63d28ca4b1f32c99c8641eb94b81c7b0b2964c2",
}


def test_keys_and_outputs_of_the_shipped_examples_are_unchanged() -> None:
    found = {}
    for manifest in sorted((ROOT / "pipelines").glob("*.yaml")):
        plan = load_plan(manifest)
        lines = "".join(f"{t.readable_id} {t.key} {t.output}.{t.extension}\n" for t in plan.tasks)
        found[manifest.name] = hashlib.sha256(lines.encode("utf-8")).hexdigest()
    assert found == EXAMPLES
