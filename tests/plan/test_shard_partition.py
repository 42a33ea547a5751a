"""``--shard I/N``: the partition is disjoint, complete, keeps chains whole and is stable when
tasks are added (property tests over random forests of tasks), on real plans too."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_pipeline.plan.expand import load_plan
from flux_pipeline.plan.shard import (
    GITHUB_MAX_JOBS,
    gha_matrix,
    parse_shard,
    partition,
    select,
    shard_label,
    shard_of,
)
from flux_pipeline.plan.tasks import TaskSpec

CHAINED = """\
version: 1
name: chained
steps:
  - id: gen
    matrix:
      n: [a, b, c, d, e, f, g, h, i, j, k, l]
    repeat: 2
    prompt: "picture {{ n }}"
  - id: edit
    from: gen
    matrix:
      look: [warm, cold]
    prompt: "make it {{ look }}"
  - id: final
    from: edit
    prompt: "frame it"
"""


def spec(key: str, parent: TaskSpec | None) -> TaskSpec:
    return TaskSpec(
        key=key,
        readable_id=key[:8] if parent is None else f"{parent.readable_id}/{key[:8]}",
        step="s" if parent is None else "c",
        parent_key=None if parent is None else parent.key,
        parent_output_index=None if parent is None else 0,
        repeat_index=1,
        request_json="{}",
        output=key[:8],
        output_format="png",
    )


def forest(parents: list[int | None], salt: str = "") -> list[TaskSpec]:
    """Tasks parents-first; ``parents[i]`` is the index of task i's parent (< i) or None."""
    tasks: list[TaskSpec] = []
    for i, parent in enumerate(parents):
        key = hashlib.sha256(f"{salt}{i}".encode()).hexdigest()
        tasks.append(spec(key, None if parent is None else tasks[parent]))
    return tasks


@st.composite
def forests(draw: st.DrawFn, max_size: int = 60) -> list[int | None]:
    size = draw(st.integers(min_value=0, max_value=max_size))
    parents: list[int | None] = []
    for i in range(size):
        root = i == 0 or draw(st.booleans())
        parents.append(None if root else draw(st.integers(min_value=0, max_value=i - 1)))
    return parents


def shards_of(tasks: list[TaskSpec], count: int) -> list[list[TaskSpec]]:
    return [list(partition(tasks, i, count)) for i in range(1, count + 1)]


@settings(max_examples=150, deadline=None)
@given(parents=forests(), count=st.integers(min_value=1, max_value=9))
def test_shards_are_disjoint_complete_ordered_and_keep_chains(
    parents: list[int | None], count: int
) -> None:
    tasks = forest(parents)
    shards = shards_of(tasks, count)
    keys = [t.key for shard in shards for t in shard]
    assert len(keys) == len(set(keys))  # disjoint
    assert set(keys) == {t.key for t in tasks}  # complete
    position = {t.key: i for i, t in enumerate(tasks)}
    shard_of_key = {t.key: n for n, shard in enumerate(shards) for t in shard}
    for shard in shards:
        assert [position[t.key] for t in shard] == sorted(position[t.key] for t in shard)
        for task in shard:  # a chain never spans two shards: a child is with its parent
            if task.parent_key is not None:
                assert shard_of_key[task.parent_key] == shard_of_key[task.key]


@settings(max_examples=150, deadline=None)
@given(
    parents=forests(max_size=40),
    more=st.lists(st.one_of(st.none(), st.integers(min_value=0)), max_size=30),
    count=st.integers(min_value=2, max_value=7),
)
def test_adding_tasks_moves_no_existing_task(
    parents: list[int | None], more: list[int | None], count: int
) -> None:
    """New roots and new children of old tasks: every old task keeps its shard."""
    grown_parents = list(parents)
    for extra in more:
        size = len(grown_parents)
        grown_parents.append(None if extra is None or size == 0 else extra % size)
    before = forest(parents)
    after = forest(grown_parents)  # same keys for the first len(parents) tasks
    old = {t.key: n for n, shard in enumerate(shards_of(before, count)) for t in shard}
    new = {t.key: n for n, shard in enumerate(shards_of(after, count)) for t in shard}
    assert {k: new[k] for k in old} == old


def test_shard_of_is_a_function_of_the_root_key_only() -> None:
    key = "00000000000000ff" + "0" * 48
    assert shard_of(key, 1) == 1
    assert shard_of(key, 16) == 255 % 16 + 1
    assert shard_of(key, 256) == 256
    assert shard_of("f" * 64, 10) == int("f" * 16, 16) % 10 + 1


@pytest.mark.parametrize(
    ("text", "expected"), [("1/1", (1, 1)), ("2/3", (2, 3)), (" 3 / 3 ", (3, 3))]
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected
    assert shard_label(expected) == f"{expected[0]}of{expected[1]}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2", "a shard is I/N"),
        ("a/b", "a shard is I/N"),
        ("-1/3", "a shard is I/N"),
        ("0/3", "within 1..3"),
        ("4/3", "within 1..3"),
        ("1/0", "at least 1"),
    ],
)
def test_parse_shard_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_shard(text)
    assert "\n" not in str(info.value)


def test_select_on_a_real_chained_plan(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(CHAINED)
    plan = load_plan(manifest)
    assert len(plan.tasks) == 24 + 48 + 48
    by_key = {t.key: t for t in plan.tasks}

    def root(key: str) -> str:
        while by_key[key].parent_key is not None:
            key = str(by_key[key].parent_key)
        return key

    views = [select(plan, i, 3) for i in (1, 2, 3)]
    assert all(view.tasks for view in views)  # 24 roots: no shard is empty
    seen: list[str] = [t.key for view in views for t in view.tasks]
    assert sorted(seen) == sorted(by_key)
    for index, view in enumerate(views, start=1):
        assert view.name == plan.name
        assert view.manifest_sha256 == plan.manifest_sha256
        assert {shard_of(root(t.key), 3) for t in view.tasks} == {index}
        for task in view.tasks:  # run-time children follow their parent into its shard
            for child in view.children(task, 0):
                assert child in view.tasks
    assert len(plan.tasks) == 120  # the view did not touch the plan
    assert select(plan, 1, 1) is plan


def test_gha_matrix_is_bounded_by_roots_max_shards_and_github(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(CHAINED)
    plan = load_plan(manifest)
    matrix = gha_matrix(plan, 5)
    assert matrix == {"include": [{"shard": f"{i}/5", "label": f"{i}of5"} for i in range(1, 6)]}
    assert len(gha_matrix(plan, 1000)["include"]) == 24  # never more shards than roots
    big = tmp_path / "big.yaml"
    big.write_text(
        "version: 1\nname: big\nsteps:\n  - id: g\n    matrix:\n      n: "
        + json.dumps(list(range(300)))
        + '\n    prompt: "p {{ n }}"\n'
    )
    assert len(gha_matrix(load_plan(big), 1000)["include"]) == GITHUB_MAX_JOBS
