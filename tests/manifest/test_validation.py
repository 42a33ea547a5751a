"""Validation: every error, located at the offending node, saying what was expected."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.errors import ManifestError
from flux_pipeline.plan.expand import load_plan
from flux_pipeline.plan.render import output_problem

from .helpers import errors_of, plan_of, png, write

OK_STEP = """
version: 1
name: ok
steps:
  - id: s
    prompt: hello
"""


def test_structural_errors_are_all_reported_with_locations_and_hints(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: Bad Name
        defaults:
          provider: fast
          inpt: {}
        steps:
          - id: hero
            promt: x
            repeat: 0
            matrix:
              a: 3
          - id: banner
            prompt: 3
        """,
    )
    assert errors == [
        "m.yaml:2:7: name: expected a name of lowercase letters, digits, '-' and '_', "
        "starting with a letter or digit, found a string ('Bad Name')",
        "m.yaml:4:13: defaults.provider: expected one of 'auto', 'value' or 'official', "
        "found a string ('fast')",
        "m.yaml:5:3: defaults: unknown key 'inpt' (did you mean 'input'?); "
        "expected one of: provider, input",
        "m.yaml:7:5: steps[0]: missing required key 'prompt'",
        "m.yaml:8:5: steps[0]: unknown key 'promt' (did you mean 'prompt'?); expected one of: "
        "id, from, matrix, repeat, prompt, images, input, output",
        "m.yaml:9:13: steps[0].repeat: expected a number >= 1, found an integer (0)",
        "m.yaml:11:10: steps[0].matrix.a: expected a list of values, {image_set: NAME}, "
        "{lines: FILE} or {csv: FILE}, found an integer (3)",
        "m.yaml:13:13: steps[1].prompt: expected a string, found an integer (3)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\na: 2\n", "m.yaml:2:1: duplicate key 'a' (first defined at line 1, column 1)"),
        (
            "a: [\n",
            "m.yaml:2:1: invalid YAML: while parsing a flow node; "
            "did not find expected node content",
        ),
        (
            "- 1\n- 2\n",
            "m.yaml:1:1: expected a mapping with `version`, `name` and `steps`, found a list",
        ),
        ("", "m.yaml:1:1: the file is empty"),
        ("a: 1\n---\nb: 2\n", "m.yaml:3:1: expected one YAML document, found 2"),
        (
            "a: !!python/object/apply:os.system [ls]\n",
            "m.yaml:1:4: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
        ),
        ("a: &x [*x]\n", "m.yaml:1:4: recursive alias: a value cannot contain itself"),
        (
            "version: 2\nname: x\nsteps: [{id: s, prompt: p}]\n",
            "m.yaml:1:10: version: expected one of 1, found an integer (2)",
        ),
    ],
)
def test_document_level_errors(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "m.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ManifestError) as caught:
        load_plan(tmp_path / "m.yaml", file="m.yaml")
    assert [str(d) for d in caught.value.diagnostics] == [expected]


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    errors = errors_of(tmp_path, "\n".join(lines) + "\n")
    assert len(errors) == 1
    assert "more than 200000 values" in errors[0]


def test_bad_utf8_and_unreadable_manifest(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(b"version: 1\nname: \xff\n")
    assert run_cli(["validate", str(path)]) == 2
    assert run_cli(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert run_cli(["validate", str(tmp_path)]) == 2


def test_bad_utf8_is_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(b"version: 1\nname: \xff\n")
    run_cli(["validate", str(path)])
    assert f"{path}:2:7: the manifest is not valid UTF-8 (byte 0xff)" in capsys.readouterr().err


def test_reference_problems_unknown_from_cycles_and_duplicates(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: refs
        image_sets:
          products:
            - {name: mug, url: "ftp://x/mug.jpg"}
            - {name: tee, path: missing.png}
            - {name: bad, path: notimg.png}
          logos: {files: "logos/*.png"}
        steps:
          - id: hero
            prompt: x
          - id: hero
            prompt: y
          - id: banner
            from: heroo
            prompt: x
          - id: a
            from: b
            prompt: x
          - id: b
            from: a
            prompt: x
          - id: t
            prompt: "{{ p }}"
            matrix:
              p: {image_set: prodcts}
        """,
        {"notimg.png": b"GIF89a not what we accept"},
    )
    base = tmp_path
    assert errors == [
        "m.yaml:5:24: image_sets.products[0].url: expected an http(s) URL, found 'ftp://x/mug.jpg'",
        f"m.yaml:6:25: image_sets.products[1].path: file not found: {base}/missing.png",
        f"m.yaml:7:25: image_sets.products[2].path: {base}/notimg.png is not a JPG, PNG or WebP "
        "image (checked by its first bytes)",
        f"m.yaml:8:18: image_sets.logos.files: 'logos/*.png' matches no files (relative to {base})",
        "m.yaml:12:9: steps[1].id: duplicate step id 'hero' (first used at line 10, column 9)",
        "m.yaml:15:11: steps[2].from: unknown step 'heroo' (did you mean 'hero'?)",
        "m.yaml:18:11: steps[3].from: `from` makes a cycle: a -> b -> a",
        "m.yaml:21:11: steps[4].from: `from` makes a cycle: b -> a -> b",
        "m.yaml:26:22: steps[5].matrix.p.image_set: unknown image set 'prodcts' "
        "(did you mean 'products'?)",
    ]


def test_self_reference_is_a_cycle(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, OK_STEP + "    from: s\n")
    assert errors == ["m.yaml:6:11: steps[0].from: `from` makes a cycle: s -> s"]


def test_image_over_10_mb_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as handle:
        handle.write(png())
        handle.truncate(10 * 1024 * 1024 + 1)
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: big
        image_sets:
          refs: [{path: big.png}]
        steps:
          - {id: s, prompt: x}
        """,
    )
    assert errors == [
        f"m.yaml:4:17: image_sets.refs[0].path: {tmp_path}/big.png has 10485761 bytes; "
        "the API accepts at most 10 MB (10485760)"
    ]


def test_magic_bytes_accept_jpg_png_webp(tmp_path: Path) -> None:
    files: dict[str, bytes | str] = {
        "r/a.png": png(),
        "r/b.jpg": b"\xff\xd8\xff\xe0" + b"\0" * 20,
        "r/c.webp": b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\0" * 20,
    }
    plan = plan_of(
        tmp_path,
        """
        version: 1
        name: magic
        image_sets:
          refs: {files: "r/*"}
        steps:
          - id: s
            matrix: {ref: {image_set: refs}}
            prompt: "{{ ref.name }}"
            images: ["{{ ref.url }}"]
        """,
        files,
    )
    assert sorted(image.mime for image in plan.local_images.values()) == [
        "image/jpeg",
        "image/png",
        "image/webp",
    ]
    sha = next(iter(plan.local_images))
    assert plan.data_uri(sha).startswith(f"data:{plan.local_images[sha].mime};base64,")


def test_template_problems(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: tpl
        steps:
          - id: a
            matrix: {style: [x, y]}
            prompt: "{{ styel }}"
          - id: b
            prompt: "{{ x"
          - id: c
            prompt: "{{ 1 / 0 }}"
          - id: d
            prompt: "{{ parent.id }}"
          - id: e
            prompt: "   "
        """,
    )
    assert errors == [
        "m.yaml:6:13: steps[0].prompt: template: 'styel' is undefined "
        "(defined here: repeat_index, step, style, vars) (in task a@style=x#1)",
        "m.yaml:8:13: steps[1].prompt: template syntax error: unexpected end of template, "
        "expected 'end of print statement'.",
        "m.yaml:10:13: steps[2].prompt: template failed: ZeroDivisionError: division by zero "
        "(in task c#1)",
        "m.yaml:12:13: steps[3].prompt: `parent` exists only in chained steps (with `from`)",
        "m.yaml:14:13: steps[4].prompt: the prompt renders empty (task e#1)",
    ]


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ vars.__class__ }}",
        "{{ step.update({'id': 'x'}) }}",
        "{{ 'a' * 100000000 }}",
        "{% for i in range(10000000) %}x{% endfor %}",
    ],
)
def test_template_injection_is_a_validation_error(tmp_path: Path, attack: str) -> None:
    errors = errors_of(tmp_path, OK_STEP.replace("prompt: hello", f"prompt: {attack!r}"))
    assert len(errors) == 1
    assert errors[0].startswith("m.yaml:5:13: steps[0].prompt: template")
    assert "sandbox" in errors[0]


def test_output_paths_must_stay_inside_and_be_unique(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: out
        steps:
          - id: o
            matrix: {x: [a, b]}
            prompt: "{{ x }}"
            output: "../{{ x }}"
          - id: c
            matrix: {x: [a, b]}
            prompt: "{{ x }}"
            output: "same"
          - id: d
            prompt: d
            output: "c/same"
          - id: e
            prompt: e
            output: "C/Same"
        """,
    )
    assert errors == [
        "m.yaml:7:13: steps[0].output: output path '../a' escapes the output directory "
        "(task o@x=a#1)",
        "m.yaml:11:13: steps[1].output: output path 'same' of task 'c@x=b#1' collides with "
        "task 'c@x=a#1'",
        "m.yaml:17:13: steps[3].output: output path 'C/Same' of task 'e#1' collides with "
        "task 'd#1'",
    ]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "renders empty"),
        ("/etc/x", "is absolute"),
        ("C:/x", "is absolute"),
        ("a/../../x", "escapes"),
        ("a\\b", "backslash"),
        ("a//b", "empty or '.' segment"),
        ("./a", "empty or '.' segment"),
        ("a/b.png", "has an extension"),
        ("a\nb", "control character"),
        (".flux-pipeline/state", "the tool's own directory"),  # the state DB, thumbnails
        (".FLUX-PIPELINE/thumbs/x", "the tool's own directory"),  # case-insensitive disks
    ],
)
def test_output_problem(path: str, problem: str) -> None:
    found = output_problem(path)
    assert found is not None
    assert problem in found
    assert output_problem("hero/mug-1.5x") is None


def test_matrix_problems(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: mx
        steps:
          - id: a
            matrix: {style: []}
            prompt: x
          - id: b
            matrix: {x: [a, b], exclude: [{x: c}, {y: a}]}
            prompt: "{{ x }}"
          - id: c
            matrix: {x: [a, b], exclude: [{x: a}, {x: b}]}
            prompt: "{{ x }}"
          - id: d
            matrix: {}
            prompt: x
          - id: e
            matrix: {node-version: [1], vars: [2]}
            prompt: x
          - id: f
            matrix: {rows: {csv: rows.csv}, lines: {lines: empty.txt}}
            prompt: x
          - id: g
            matrix: {x: [a, b]}
            prompt: "same for both"
        """,
        {"rows.csv": "a,b\n1,2,3\n", "empty.txt": "\n  \n"},
    )
    base = tmp_path
    assert errors == [
        "m.yaml:5:21: steps[0].matrix.style: axis 'style' is empty",
        "m.yaml:8:39: steps[1].matrix.exclude[0].x: exclude value 'c' is not a value of axis "
        "'x'; values: a, b",
        "m.yaml:8:47: steps[1].matrix.exclude[1].y: exclude key 'y' is not an axis of the matrix",
        "m.yaml:11:13: steps[2].matrix: the matrix has no combinations left after `exclude`",
        "m.yaml:14:13: steps[3].matrix: the matrix is empty: give it axes or `include` entries",
        "m.yaml:17:28: steps[4].matrix.node-version: axis name 'node-version' cannot be used in "
        "templates: use letters, digits and '_', not starting with a digit",
        "m.yaml:17:39: steps[4].matrix.vars: axis name 'vars' is reserved (templates use it "
        "for itself)",
        f"m.yaml:20:26: steps[5].matrix.rows.csv: {base}/rows.csv:2: expected 2 fields, found 3 "
        "(delimiter ',' detected: set `delimiter:` if that is wrong)",
        f"m.yaml:20:52: steps[5].matrix.lines.lines: {base}/empty.txt has no non-blank lines",
        "m.yaml:22:5: steps[6]: tasks 'g@x=a#1' and 'g@x=b#1' would send the same request "
        "(does the prompt use every matrix axis?)",
    ]


def test_input_prompt_and_image_urls_belong_to_the_step(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: inp
        defaults:
          input: {prompt: x}
        steps:
          - id: s
            prompt: p
            input: {image_urls: []}
        """,
    )
    assert errors == [
        "m.yaml:4:11: defaults.input.prompt: set the step's `prompt` instead",
        "m.yaml:8:13: steps[0].input.image_urls: set the step's `images` instead",
    ]


def test_images_must_render_to_urls(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: img
        steps:
          - id: s
            prompt: p
            images: ["refs/x.png"]
        """,
    )
    assert errors == [
        "m.yaml:6:14: steps[0].images[0]: renders 'refs/x.png' (task s#1): expected an http(s) "
        "URL, an image set's `.url` or `{{ parent.image_url }}`"
    ]


def test_validate_reports_every_manifest_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, OK_STEP)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: bad\nsteps: []\n", encoding="utf-8")
    assert run_cli(["validate", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert f"{good}: ok (1 tasks in 1 step)" in captured.out
    assert captured.err.splitlines() == [
        f"{bad}:3:8: steps: expected at least 1 item(s), found 0",
        "flux-pipeline: 1 error(s) in 1 of 2 manifest(s)",
    ]
    assert run_cli(["plan", str(bad)]) == 2
    assert f"{bad}:3:8:" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_reference_file(tmp_path: Path) -> None:
    (tmp_path / "r.png").write_bytes(png())
    (tmp_path / "r.png").chmod(0)
    errors = errors_of(
        tmp_path,
        """
        version: 1
        name: perm
        image_sets: {refs: [{path: r.png}]}
        steps: [{id: s, prompt: p}]
        """,
    )
    assert "cannot read" in errors[0]


def test_control_characters_in_keys_stay_on_one_line(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path, OK_STEP + 'image_sets: {"a\\rb\\u2028c": null}\nvars: {"x\\ny": 1}\n'
    )
    assert errors == [
        "m.yaml:6:29: image_sets.a\\rb\\u2028c: expected a list of images ({name, url} or "
        "{name, path}) or a mapping with `files` (and optionally `url_template`), "
        "found nothing (null)"
    ]
    assert all(len(e.splitlines()) == 1 for e in errors)
