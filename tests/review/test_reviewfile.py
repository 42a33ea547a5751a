"""The review file (report/reviewfile.py): written deterministically, read back, and every
hostile file refused with one located line per problem, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_pipeline.errors import ManifestError
from flux_pipeline.report.reviewfile import (
    MAX_BYTES,
    Decision,
    read_review,
    review_decisions,
    review_path_for,
    write_review,
)

K1, K2 = "a" * 64, "b" * 64


def problems(path: Path, text: str | bytes, manifest: str | None = "demo.yaml") -> list[str]:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    with pytest.raises(ManifestError) as info:
        read_review(path, manifest=manifest)
    return [str(d) for d in info.value.diagnostics]


def doc(decisions: object, **top: object) -> str:
    return json.dumps({"format": 1, "manifest": "demo.yaml", "decisions": decisions, **top})


def test_path_is_next_to_the_manifest() -> None:
    assert review_path_for(Path("pipelines/demo.yaml")) == Path("pipelines/demo.review.json")


def test_written_text_is_sorted_indented_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "demo.review.json"
    decisions = {
        K2: Decision("rejected", "hero@n=b#1", "hero"),
        K1: Decision("picked", "hero@n=a#1", "hero"),
    }
    write_review(path, "demo.yaml", decisions)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert text.index(K1) < text.index(K2)
    review = read_review(path, manifest="demo.yaml")
    assert review is not None
    assert review.decisions == decisions
    assert review_decisions(path) == {K1: "picked", K2: "rejected"}


def test_no_file_is_no_decisions(tmp_path: Path) -> None:
    assert read_review(tmp_path / "none.review.json") is None
    assert review_decisions(tmp_path / "none.review.json") == {}
    assert review_decisions(None) == {}


def test_bad_decision_is_one_located_line_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "demo.review.json"
    found = problems(path, doc({K1: {"decision": "pickd", "id": "x", "step": "hero"}}))
    assert found == [
        f"{path}: decisions.{K1}.decision: expected one of 'picked' or 'rejected', "
        "found a string ('pickd') (did you mean 'picked'?)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[]", "expected a JSON object, found a list"),
        ("{", "not JSON:"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"format": NaN}', "NaN is not JSON"),
        (doc({}, format=2), "format: expected 1"),
        (doc({}, format=True), "format: expected 1"),
        (doc({}, extra=1), "unknown key 'extra'"),
        (doc({}, decison={}), "unknown key 'decison' (did you mean 'decisions'?)"),
        (json.dumps({"format": 1, "decisions": {}}), "missing required key 'manifest'"),
        (doc({}, manifest="other.yaml"), "manifest: this review file is of 'other.yaml'"),
        (doc({}, manifest=3), "manifest: expected a non-empty string, found an integer (3)"),
        (doc([]), "decisions: expected a mapping keyed by task key, found a list"),
        (doc({"nothex": {}}), "decisions.'nothex': not a task key"),
        (doc({K1: "picked"}), f"decisions.{K1}: expected a mapping"),
        (doc({K1: {"decision": "picked", "id": "x"}}), f"decisions.{K1}: missing required key"),
        (
            doc({K1: {"decision": "picked", "id": "x", "step": "s", "decison": 1}}),
            f"decisions.{K1}: unknown key 'decison' (did you mean 'decision'?); expected one of",
        ),
        (doc({K1: {"decision": 1, "id": "x", "step": "s"}}), "found an integer (1)"),
        (doc({K1: {"decision": "picked", "id": "", "step": "s"}}), f"{K1}.id: expected a non"),
        (doc({K1: {"decision": "picked", "id": "x", "step": ["s"]}}), f"{K1}.step: expected"),
        (doc({K1: {"decision": "picked", "id": "x" * 5000, "step": "s"}}), "at most 1000"),
        ('{"format": 1, "format": 1, "manifest": "demo.yaml", "decisions": {}}', "given twice"),
    ],
)
def test_hostile_files_are_refused_one_line_each(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "demo.review.json"
    found = problems(path, text)
    assert any(expected in line for line in found), found
    assert all(line.startswith(f"{path}: ") and "\n" not in line for line in found)


def test_every_problem_reported_but_bounded(tmp_path: Path) -> None:
    path = tmp_path / "demo.review.json"
    many = {f"{i:064x}": {"decision": "maybe", "id": "x", "step": "s"} for i in range(100)}
    assert len(problems(path, doc(many))) == 20


def test_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "demo.review.json"
    assert problems(path, b" " * (MAX_BYTES + 1)) == [
        f"{path}: larger than 16 MiB: not a review file"
    ]


def test_not_utf8_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "demo.review.json"
    assert problems(path, b"\xff\xfe{}") == [f"{path}: not UTF-8 text"]
    folder = tmp_path / "dir.review.json"
    folder.mkdir()
    with pytest.raises(ManifestError, match="not a file"):
        read_review(folder)


def test_cli_exit_2_no_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flux_pipeline.cli import run_cli

    manifest = tmp_path / "demo.yaml"
    manifest.write_text(
        "version: 1\nname: demo\nsteps:\n  - id: hero\n    prompt: a cat\n", encoding="utf-8"
    )
    bad = doc({K1: {"decision": "maybe", "id": "x", "step": "hero"}})
    (tmp_path / "demo.review.json").write_text(bad, encoding="utf-8")
    code = run_cli(["plan", str(manifest), "--no-lock"])
    text = capsys.readouterr().err
    assert code == 2, text
    assert "Traceback" not in text
    assert f"decisions.{K1}.decision: expected one of 'picked' or 'rejected'" in text
