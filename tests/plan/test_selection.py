"""``--only`` / ``--limit`` on plans (plan/selection.py) and through ``plan``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.errors import UsageError
from flux_pipeline.plan.expand import load_plan
from flux_pipeline.plan.selection import parse_only, select, select_limit, select_only
from tests.plan.test_shard_partition import CHAINED


def test_parse_only_splits_commas_but_not_inside_a_readable_id() -> None:
    assert parse_only(["a,b", "c", "a"]) == ("a", "b", "c")
    patterns = ("gen@n=a,look=warm*", "edit", "gen@*")
    assert parse_only(["gen@n=a,look=warm*, edit ,gen@*"]) == patterns
    assert parse_only([" , "]) == ()


@pytest.fixture
def chained(tmp_path: Path) -> Path:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(CHAINED)
    return manifest


def test_only_a_step_keeps_its_ancestors_and_descendants(chained: Path) -> None:
    plan = load_plan(chained)
    part = select_only(plan, ["edit"])
    steps = {t.step for t in part.tasks}
    assert "edit" in steps
    assert "gen" in steps
    keys = {t.key for t in part.tasks}
    assert all(t.parent_key is None or t.parent_key in keys for t in part.tasks)
    # every edit task, and each one's descendants
    edits = [t for t in plan.tasks if t.step == "edit"]
    assert all(t.key in keys for t in edits)


def test_only_one_chained_task_leaves_its_siblings_out(chained: Path) -> None:
    plan = load_plan(chained)
    target = next(t for t in plan.tasks if t.step == "edit")
    part = select_only(plan, [target.readable_id])
    parent = next(t for t in plan.tasks if t.key == target.parent_key)
    siblings = [t for t in plan.tasks if t.parent_key == parent.key and t.key != target.key]
    assert siblings
    kept = {t.key for t in part.tasks}
    assert parent.key in kept
    assert target.key in kept
    assert not kept & {t.key for t in siblings}
    assert part.keep is not None
    assert not any(part.keep(t) for t in siblings)


def test_limit_is_plan_order_with_chains_only_after_parents(chained: Path) -> None:
    plan = load_plan(chained)
    part = select_limit(plan, 5)
    assert [t.key for t in part.tasks] == [t.key for t in plan.tasks[:5]]
    assert all(t.parent_key is None for t in part.tasks)
    assert select(plan, (), None) is plan


def test_only_unknown_pattern_is_refused(chained: Path) -> None:
    with pytest.raises(UsageError, match=r"--only 'gen@n=zz\*' matches no step id"):
        select_only(load_plan(chained), ["gen", "gen@n=zz*"])


def test_plan_only_and_limit_through_the_cli(
    chained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["plan", str(chained), "--json", "--only", "gen@n=a*", "--limit", "3"]) == 0
    tasks = json.loads(capsys.readouterr().out)["tasks"]
    assert [t["readable_id"].startswith("gen@n=a#") for t in tasks] == [True] * 3
    assert run_cli(["plan", str(chained), "--limit", "2"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("2 of ")
    assert "task(s) selected (--only/--limit)" in text
    assert run_cli(["plan", str(chained), "--only", "nope"]) == 2
    assert "--only 'nope' matches no step id" in capsys.readouterr().err
