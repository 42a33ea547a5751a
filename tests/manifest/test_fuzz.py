"""Property-based: no YAML document and no mutation of a valid manifest makes ``validate``
print a traceback or an internal error. It exits 0, or 2 with located messages only."""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from flux_pipeline.cli import run_cli

from .helpers import png

# Hypothesis keeps caches in ./.hypothesis, which pytest then warns about (an error here) on the
# next run, because pyproject's norecursedirs replaces pytest's default ignores: keep it out.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "flux-pipeline-hypothesis")

LOCATED = re.compile(r"^m\.yaml:\d+:\d+: \S")
SUMMARY = re.compile(r"^flux-pipeline: \d+ error\(s\) in 1 of 1 manifest\(s\)$")

SETTINGS = settings(
    max_examples=150,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VALID: dict[str, Any] = {
    "version": 1,
    "name": "fuzz",
    "description": "a manifest to mutate",
    "defaults": {"provider": "auto", "input": {"mode": "pro", "output_format": "png"}},
    "vars": {"brand": "Acme", "n": 3},
    "image_sets": {
        "products": [
            {"name": "mug", "url": "https://cdn.example.com/mug.jpg"},
            {"name": "tee", "path": "refs/tee.png"},
        ],
        "logos": {"files": "refs/*.png"},
    },
    "steps": [
        {
            "id": "hero",
            "matrix": {
                "product": {"image_set": "products"},
                "style": ["watercolor", "oil"],
                "line": {"lines": "lines.txt"},
                "exclude": [{"product": "tee", "style": "oil"}],
                "include": [{"style": "oil", "extra": 1}],
            },
            "repeat": 2,
            "prompt": "{{ vars.brand }} {{ product.name }} {{ style }} {{ line }}",
            "images": ["{{ product.url }}"],
            "input": {"aspect_ratio": "16:9"},
            "output": "hero/{{ product.name }}-{{ style }}-{{ line | slug }}-{{ repeat_index }}",
        },
        {
            "id": "banner",
            "from": "hero",
            "matrix": {"row": {"csv": "rows.csv"}},
            "prompt": "{{ row.title }} for {{ parent.product.name }}",
        },
    ],
}


def _workdir() -> tempfile.TemporaryDirectory[str]:
    directory = tempfile.TemporaryDirectory()
    base = Path(directory.name)
    (base / "refs").mkdir()
    (base / "refs/tee.png").write_bytes(png())
    (base / "lines.txt").write_text("one\ntwo\n", encoding="utf-8")
    (base / "rows.csv").write_text("title\nSale\nNew\n", encoding="utf-8")
    return directory


def _validate(directory: Path, text: str) -> tuple[int, list[str]]:
    (directory / "m.yaml").write_text(text, encoding="utf-8")
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        # --strict: a warning (a value outside the API values table) is an error too, so
        # "exit 0" still means "not a line on stderr"
        code = run_cli(["validate", "--strict", str(directory / "m.yaml")])
    lines = [line.replace(str(directory) + "/", "") for line in err.getvalue().splitlines()]
    return code, lines


def _check(code: int, lines: list[str]) -> None:
    assert code in (0, 2), lines
    if code == 0:
        assert lines == []
        return
    assert lines, "exit 2 without a message"
    assert SUMMARY.match(lines[-1]), lines
    for line in lines[:-1]:
        assert LOCATED.match(line), line
        assert "Traceback" not in line
        assert "internal error" not in line


def test_the_base_manifest_is_valid() -> None:
    with _workdir() as name:
        code, lines = _validate(Path(name), yaml.safe_dump(VALID, sort_keys=False))
    assert (code, lines) == (0, [])


yaml_text = st.text(
    alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`,?\n \t0123456789.~=")), max_size=80
)
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["version", "name", "steps", "id", "prompt", "matrix", "from", "x"])
            | st.text(max_size=6),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@SETTINGS
@given(text=yaml_text)
def test_arbitrary_yaml_text_never_crashes(text: str) -> None:
    with _workdir() as name:
        _check(*_validate(Path(name), text))


@SETTINGS
@given(document=documents)
def test_arbitrary_yaml_documents_never_crash(document: Any) -> None:
    with _workdir() as name:
        _check(*_validate(Path(name), yaml.safe_dump(document, sort_keys=False)))


TEMPLATES = [
    "{{ x }}",
    "{{ parent.image_url }}",
    "{{ product.nme }}",
    "{% for i in range(3) %}{{ i }}{% endfor %}",
    "{{ ''.__class__ }}",
    "{{",
    "{% if %}",
    "../../etc/passwd",
    "/abs",
    "{{ 1 / 0 }}",
    "{{ vars.brand | slug }}",
    "",
    "refs/*.png",
    "refs/tee.png",
    "https://x.example/a.jpg",
]
values = (
    scalars
    | st.sampled_from(TEMPLATES)
    | st.lists(st.sampled_from(TEMPLATES) | scalars, max_size=3)
    | st.dictionaries(st.text(max_size=5), scalars, max_size=3)
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    document = _copy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(document)[1:]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = draw(st.sampled_from(["replace", "delete", "add-key", "rename", "duplicate"]))
        if action == "replace":
            parent[last] = draw(values)
        elif action == "delete":
            del parent[last]
        elif action == "add-key" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["promt", "form", "id", "matrx", "inputs", "x"]))] = (
                parent.pop(last)
            )
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(_copy(parent[last]))
    return document


@SETTINGS
@given(document=mutated())
def test_mutated_valid_manifests_never_crash(document: Any) -> None:
    with _workdir() as name:
        directory = Path(name)
        code, lines = _validate(directory, yaml.safe_dump(document, sort_keys=False))
        _check(code, lines)
        if code == 0:  # a mutation that is still valid must plan too
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert run_cli(["plan", "--json", str(directory / "m.yaml")]) == 0


def test_every_single_mutation_of_the_valid_manifest() -> None:
    """Exhaustive companion of the random test: each node replaced by each tricky value, and
    each node deleted, one at a time."""
    replacements: list[Any] = [*TEMPLATES, None, 0, -1, True, [], {}, ["x"], {"x": 1}]
    with _workdir() as name:
        directory = Path(name)
        for path in _paths(VALID)[1:]:
            for replacement in [*replacements, "<delete>"]:
                document = _copy(VALID)
                parent = document
                for part in path[:-1]:
                    parent = parent[part]
                if replacement == "<delete>":
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = replacement
                _check(*_validate(directory, yaml.safe_dump(document, sort_keys=False)))
