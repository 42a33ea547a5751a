"""``from: {step, only}`` (manifest/models.py) and the review gate (plan/review_gate.py): the
manifest's located errors, and which chained tasks a set of decisions admits."""

from __future__ import annotations

from pathlib import Path

import pytest

from flux_pipeline.errors import ManifestError
from flux_pipeline.plan.expand import Plan
from flux_pipeline.plan.review_gate import admits, apply_review
from tests.manifest.helpers import plan_of

GATED = """
version: 1
name: gated
steps:
  - id: hero
    matrix: {n: [a, b, c]}
    prompt: "picture {{ n }}"
  - id: banner
    from: {step: hero, only: ONLY}
    prompt: "banner of {{ parent.n }}"
  - id: crop
    from: banner
    prompt: "crop"
"""


def gated(tmp_path: Path, only: str = "picked") -> Plan:
    return plan_of(tmp_path, GATED.replace("ONLY", only))


def errors(tmp_path: Path, from_: str) -> list[str]:
    text = GATED.replace("from: {step: hero, only: ONLY}", f"from: {from_}")
    with pytest.raises(ManifestError) as info:
        plan_of(tmp_path, text)
    return [str(d) for d in info.value.diagnostics]


@pytest.mark.parametrize(
    ("from_", "expected"),
    [
        (
            "{step: hero, only: pickd}",
            "m.yaml:8:30: steps[1].from.only: expected one of 'picked' or 'not-rejected', "
            "found a string ('pickd')",
        ),
        (
            "{stp: hero, only: picked}",
            "m.yaml:8:11: steps[1].from: missing required key 'step'\n"
            "m.yaml:8:12: steps[1].from: unknown key 'stp' (did you mean 'step'?); "
            "expected one of: step, only",
        ),
        ("{only: picked}", "m.yaml:8:11: steps[1].from: missing required key 'step'"),
        (
            "{step: heroo, only: picked}",
            "m.yaml:8:18: steps[1].from.step: unknown step 'heroo' (did you mean 'hero'?)",
        ),
        (
            "3",
            "m.yaml:8:11: steps[1].from: expected a step id or {step: ID, only: "
            "picked|not-rejected}, found an integer (3)",
        ),
        ("{step: Hero}", "m.yaml:8:18: steps[1].from.step: expected a name of lowercase letters"),
    ],
)
def test_bad_from_is_one_located_line(tmp_path: Path, from_: str, expected: str) -> None:
    found = "\n".join(errors(tmp_path, from_))
    assert found.startswith(expected), found
    assert len(found.splitlines()) == len(expected.splitlines()), found


def test_the_mapping_form_keeps_every_task_key(tmp_path: Path) -> None:
    plain = plan_of(tmp_path, GATED.replace("{step: hero, only: ONLY}", "hero"))
    keyed = gated(tmp_path)
    assert [t.key for t in plain.tasks] == [t.key for t in keyed.tasks]
    assert keyed.gates == {"banner": "picked"}
    assert plain.gates == {}


def test_admits() -> None:
    assert admits("picked", "picked")
    assert not admits("picked", None)
    assert not admits("picked", "rejected")
    assert admits("not-rejected", None)
    assert admits("not-rejected", "picked")
    assert not admits("not-rejected", "rejected")


def test_picked_holds_the_others_and_their_chains(tmp_path: Path) -> None:
    plan = gated(tmp_path)
    heroes = [t for t in plan.tasks if t.step == "hero"]
    reviewed = apply_review(plan, {heroes[1].key: "picked", heroes[2].key: "rejected"})
    steps = [t.step for t in reviewed.tasks]
    assert steps == ["hero", "hero", "hero", "banner", "crop"]
    banner = next(t for t in reviewed.tasks if t.step == "banner")
    assert banner.parent_key == heroes[1].key
    assert reviewed.review is not None
    assert reviewed.review.held == {"banner": (heroes[0].key, heroes[2].key)}
    assert reviewed.review.admitted == {"banner": 1}
    assert reviewed.review.parent_steps == ("hero",)
    # chained tasks planned at run time (a parent's second image) follow the gate
    assert reviewed.children(heroes[0], 1) == []
    assert [c.step for c in reviewed.children(heroes[1], 1)] == ["banner"]


def test_not_rejected_holds_only_the_rejected(tmp_path: Path) -> None:
    plan = gated(tmp_path, "not-rejected")
    heroes = [t for t in plan.tasks if t.step == "hero"]
    reviewed = apply_review(plan, {heroes[0].key: "rejected"})
    parents = [t.parent_key for t in reviewed.tasks if t.step == "banner"]
    assert parents == [heroes[1].key, heroes[2].key]
    assert reviewed.children(heroes[0], 1) == []


def test_no_decisions_with_picked_holds_every_parent(tmp_path: Path) -> None:
    reviewed = apply_review(gated(tmp_path), {})
    assert [t.step for t in reviewed.tasks] == ["hero"] * 3
    assert reviewed.review is not None
    assert reviewed.review.held_count("banner") == 3


def test_plan_shows_what_the_review_file_changes(tmp_path: Path) -> None:
    from flux_pipeline.report.reviewfile import Decision, write_review
    from tests.run.support import cli, cli_json

    plan = gated(tmp_path)
    manifest = tmp_path / "m.yaml"
    heroes = [t for t in plan.tasks if t.step == "hero"]
    write_review(
        tmp_path / "m.review.json",
        "m.yaml",
        {
            heroes[0].key: Decision("picked", heroes[0].readable_id, "hero"),
            heroes[1].key: Decision("rejected", heroes[1].readable_id, "hero"),
            "e" * 64: Decision("picked", "gone@x#1", "gone"),
        },
    )
    argv = ("plan", str(manifest), "--no-lock", "--out", str(tmp_path / "out"))
    code, text = cli(*argv)
    assert code == 0, text
    assert "gated: 5 tasks in 3 steps" in text  # 3 heroes, 1 banner, its crop
    assert "review: 1 picked, 1 rejected, 1 undecided (step hero)" in text
    assert "review: step banner: 1 task from picked parents, 2 parents held for review" in text
    assert "review: 1 decision for tasks no longer planned (kept in the file): gone@x#1" in text
    document = cli_json(*argv, "--json")
    assert document["review"]["steps"]["hero"] == {"picked": 1, "rejected": 1, "undecided": 1}
    assert document["review"]["steps"]["banner"]["held"] == 2
    assert document["review"]["orphaned"] == 1
    assert len(document["tasks"]) == 5
    code, text = cli(*argv, "--no-review")
    assert "review: step banner: 0 tasks from picked parents, 3 parents held" in text
