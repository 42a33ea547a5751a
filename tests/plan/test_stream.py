"""The streamed plan (plan/stream.py): the tasks, warnings and diagnostics of ``load_plan``,
one task at a time, with uniqueness checked by digests; ``validate`` and ``plan --json`` on it."""

from __future__ import annotations

import errno
import io
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import anyio
import pytest

from flux_pipeline.cli import manifest_cmds, plan_stream, run_cli
from flux_pipeline.errors import ManifestError
from flux_pipeline.media import sha256_bytes
from flux_pipeline.plan import expand, unique
from flux_pipeline.plan.expand import load_plan
from flux_pipeline.plan.stream import PlanStream, open_stream
from flux_pipeline.run.store import Store
from flux_pipeline.states import OutputRecord

from ..manifest.helpers import png, streamed, write
from .test_expand import CHAIN

LINES = """
version: 1
name: lines
defaults:
  input: {mode: pro, output_format: jpeg}
pricing: {currency: USD, per_task: {pro: 0.04, max: 0.08}}
steps:
  - id: hero
    matrix:
      style: {lines: styles.txt}
      size: [s, m]
      include: [{size: xl, style: Neon Glow}]
    repeat: 3
    prompt: "A mug in {{ style }}, size {{ size }}, take {{ repeat_index }}"
    output: "shots/{{ size }}/{{ style | slug }}-{{ repeat_index }}"
  - id: edit
    from: hero
    repeat: 2
    prompt: "Brighter {{ parent.style }} ({{ parent.id }}) {{ repeat_index }}"
    input: {mode: max}
    output: "edits/{{ parent.id | slug }}-{{ repeat_index }}"
  - id: crop
    from: edit
    prompt: "Crop {{ parent.parent.style }} of {{ parent.output }}"
  - id: alone
    matrix: {n: [1, 2, 3]}
    prompt: "alone {{ n }}"
"""
STYLES = "Watercolor\nOil Painting\nneon glow\n"

MANIFESTS: dict[str, tuple[str, dict[str, bytes | str]]] = {
    "chain": (CHAIN, {"refs/tee.png": png()}),
    "lines": (LINES, {"styles.txt": STYLES}),
}

BAD = {
    "ids": """
        version: 1
        name: clash
        steps:
          - id: s
            matrix: {include: [{x: 1}, {x: 1}]}
            prompt: "{{ x }}"
    """,
    "keys": """
        version: 1
        name: keys
        steps:
          - id: g
            matrix: {x: [a, b, c]}
            prompt: "same for all"
          - id: h
            from: g
            prompt: "child"
          - id: ok
            prompt: fine
    """,
    "outputs": """
        version: 1
        name: out
        steps:
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
    "tree": """
        version: 1
        name: tree
        defaults: {input: {output_format: png}}
        steps:
          - id: a
            prompt: a
            output: "x"
          - id: b
            prompt: b
            output: "x.png/inner"
          - id: c
            prompt: c
            output: "y.png/z"
          - id: d
            prompt: d
            output: "y"
            input: {output_format: png}
          - id: e
            prompt: e
            output: "n-2.png/inner"
          - id: f
            prompt: f
            output: "n"
    """,
}


@pytest.fixture(params=[False, True], ids=["digests", "all-collide"])
def collide(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """With ``True`` every value has the same digest: only exact checks may decide."""
    if request.param:
        monkeypatch.setattr(unique, "digest", lambda text: 7)
    return bool(request.param)


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_streamed_tasks_are_the_plans_tasks(tmp_path: Path, name: str, collide: bool) -> None:
    text, files = MANIFESTS[name]
    path = write(tmp_path, text, files)
    plan = load_plan(path, file="m.yaml")
    assert len(plan.tasks) > 10
    assert streamed(path) == (list(plan.tasks), plan.warnings)
    stream = open_stream(path, file="m.yaml")
    stream.check()
    assert stream.step_ids == plan.step_ids
    assert dict(stream.counts) == {s: sum(t.step == s for t in plan.tasks) for s in plan.step_ids}


@pytest.mark.parametrize("name", sorted(BAD))
def test_the_same_diagnostics(tmp_path: Path, name: str, collide: bool) -> None:
    path = write(tmp_path, BAD[name])
    with pytest.raises(ManifestError) as caught:
        load_plan(path, file="m.yaml")
    assert caught.value.diagnostics
    assert streamed(path) == list(caught.value.diagnostics)


def test_tree_clashes_are_found(tmp_path: Path, collide: bool) -> None:
    found = streamed(write(tmp_path, BAD["tree"]))
    assert isinstance(found, list)
    messages = [d.message for d in found]
    assert any("needs a directory 'x.png' where task 'a#1' writes a file" in m for m in messages)
    assert any("writes a file named like a directory that task 'c#1'" in m for m in messages)
    assert any("writes a file named like a directory that task 'e#1'" in m for m in messages)


def test_a_digest_repeat_of_different_values_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two values with one digest are told apart exactly; only the ones that repeat are kept."""
    path = write(tmp_path, LINES, {"styles.txt": STYLES})
    calls = 0

    def few(text: str) -> int:
        nonlocal calls
        calls += 1
        return len(text) % 3

    monkeypatch.setattr(unique, "digest", few)
    plan = load_plan(path, file="m.yaml")
    assert streamed(path) == (list(plan.tasks), plan.warnings)
    assert calls > 0


def test_too_many_tasks_and_too_many_characters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, LINES, {"styles.txt": STYLES})
    total = len(load_plan(path).tasks)
    for limit in (total, total - 1, 10):
        try:
            expected: object = list(load_plan(path, file="m.yaml", max_tasks=limit).tasks)
        except ManifestError as exc:
            expected = list(exc.diagnostics)
        stream = open_stream(path, file="m.yaml", max_tasks=limit)
        try:
            stream.check()
            found: object = list(stream.tasks())
        except ManifestError as exc:
            found = list(exc.diagnostics)
        assert found == expected
    monkeypatch.setattr(expand, "MAX_PLAN_CHARS", 2_000)
    with pytest.raises(ManifestError) as caught:
        load_plan(path, file="m.yaml")
    assert "characters of requests" in str(caught.value.diagnostics[0])
    assert streamed(path) == list(caught.value.diagnostics)


def test_strict_warnings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        version: 1
        name: warn
        steps:
          - id: s
            matrix: {r: ["1:1", "5:1"]}
            prompt: "{{ r }}"
            input: {aspect_ratio: "{{ r }}"}
        """,
    )
    plan = load_plan(path, file="m.yaml")
    assert plan.warnings
    assert streamed(path) == (list(plan.tasks), plan.warnings)
    with pytest.raises(ManifestError) as caught:
        load_plan(path, file="m.yaml", strict=True)
    assert streamed(path, strict=True) == list(caught.value.diagnostics)


def _materialised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_cmds, "streamable", lambda **options: False)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    results: list[int | None] = []
    real = plan_stream.plan_json

    def spy(*args: object, **kwargs: object) -> int | None:
        results.append(real(*args, **kwargs))  # type: ignore[arg-type]
        return results[-1]

    monkeypatch.setattr(manifest_cmds, "plan_json", spy)
    return results


async def _record(state: Path, out: Path, plan: expand.Plan) -> None:
    """The first task downloaded (its file on disk), the second failed."""
    done, failed = plan.tasks[0], plan.tasks[1]
    path = done.output_paths(1)[0]
    (out / path).parent.mkdir(parents=True, exist_ok=True)
    (out / path).write_bytes(b"x")
    async with await Store.open(state) as store:
        for task in (done, failed):
            await store.mark_submitting(task)
            store.mark_submitted(task.key, f"id-{task.key[:6]}")
        store.mark_succeeded(
            done.key, ["https://r/1.png"], create_time=1, complete_time=2, cost_time=1
        )
        output = OutputRecord(
            index=0, path=path, url="https://r/1.png", bytes=1, sha256=sha256_bytes(b"x")
        )
        store.mark_downloaded(done.key, [output])
        store.mark_failed(failed.key, "MODERATED", "no")


@pytest.mark.parametrize("name", sorted(MANIFESTS))
@pytest.mark.parametrize("with_db", [False, True], ids=["no-db", "db"])
def test_plan_json_is_byte_identical(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    with_db: bool,
) -> None:
    text, files = MANIFESTS[name]
    path = write(tmp_path, text, files)
    out = path.parent / "out"  # where ``_both`` points ``--out``
    if with_db:
        anyio.run(_record, out / ".flux-pipeline" / "state.sqlite3", out, load_plan(path))
    streamed_out, whole = _both(path, monkeypatch, capsys)
    assert streamed_out == whole
    document = json.loads(whole)
    assert len(document["tasks"]) == sum(document["steps"].values())
    if with_db:
        assert document["counts"]["done"] == 1
        assert document["counts"]["failed"] == 1
        assert "blocked by parent" in document["counts"]


def _both(
    path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    """``plan --json`` of ``path`` streamed, then made whole (the spool left as it is)."""
    args = ["plan", "--json", str(path), "--out", str(path.parent / "out")]
    used = _spy(monkeypatch)
    assert run_cli(args) == 0
    streamed_out = capsys.readouterr().out
    assert used == [0]
    with monkeypatch.context() as m:
        _materialised(m)
        assert run_cli(args) == 0
    return streamed_out, capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_plan_json_renders_the_tasks_once_from_the_spool(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    collide: bool,
) -> None:
    """The document's lines come from the checking pass (the exact one, when digests make it
    pass again): ``PlanStream.tasks``, a second rendering, is not called."""
    text, files = MANIFESTS[name]
    path = write(tmp_path, text, files)

    def no_second_rendering(self: object) -> None:
        raise AssertionError("rendered again")

    monkeypatch.setattr(PlanStream, "tasks", no_second_rendering)
    streamed_out, whole = _both(path, monkeypatch, capsys)
    assert streamed_out == whole


class _BrokenSpool(io.StringIO):
    """A temporary file whose disk fills after its first write."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(text)


def _no_temporary_file(*args: object, **kwargs: object) -> None:
    raise OSError(errno.EACCES, "Permission denied")


@pytest.mark.parametrize("spool", [_no_temporary_file, _BrokenSpool], ids=["none", "disk-full"])
def test_plan_json_without_a_spool_renders_the_tasks_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    spool: object,
) -> None:
    """No temporary file, or one that cannot be written to the end: the same document, from
    a second rendering."""
    text, files = MANIFESTS["chain"]
    path = write(tmp_path, text, files)
    monkeypatch.setattr(plan_stream, "CHUNK", 2)  # many writes to the spool
    monkeypatch.setattr(tempfile, "TemporaryFile", spool)
    rendered = []
    real = PlanStream.tasks

    def counted(self: PlanStream) -> object:
        rendered.append(1)
        return real(self)

    monkeypatch.setattr(PlanStream, "tasks", counted)
    streamed_out, whole = _both(path, monkeypatch, capsys)
    assert streamed_out == whole
    assert rendered == [1]


def test_plan_json_with_a_lock_or_a_selection_is_made_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, LINES, {"styles.txt": STYLES})
    used = _spy(monkeypatch)
    assert run_cli(["plan", "--json", str(path), "--limit", "3"]) == 0
    assert len(json.loads(capsys.readouterr().out)["tasks"]) == 3
    assert run_cli(["plan", "--format", "json", str(path), "--only", "alone*"]) == 0
    assert len(json.loads(capsys.readouterr().out)["tasks"]) == 3
    assert used == []
    assert run_cli(["plan", "--format", "json", str(path), "--no-lock"]) == 0
    assert used == [0]


def test_plan_json_of_an_invalid_manifest_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BAD["outputs"])
    assert run_cli(["plan", "--json", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "collides with task 'c@x=a#1'" in captured.err


def test_validate_counts_the_tasks_of_each_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, LINES, {"styles.txt": STYLES})
    plan = load_plan(path)
    assert run_cli(["validate", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: ok ({len(plan.tasks)} tasks in 4 steps)\n"
    assert run_cli(["validate", "--json", str(path)]) == 0
    document = json.loads(capsys.readouterr().out)
    (entry,) = document["manifests"]
    # 7 cells x 3 = 21 heroes, 42 edits, 42 crops, 3 alone
    assert entry["steps"] == {"hero": 21, "edit": 42, "crop": 42, "alone": 3}
    assert entry["tasks"] == len(plan.tasks) == 108


BIG = """
version: 1
name: big
steps:
  - id: s
    matrix: {a: {lines: a.txt}, b: {lines: b.txt}}
    repeat: 20
    prompt: "{{ a }} {{ b }}"
"""


def test_streaming_20000_tasks_keeps_no_task(tmp_path: Path) -> None:
    """The peak of checking a 20,000-task plan (its 1,000 matrix cells, and 8 bytes a task
    for each digest) stays far below what the plan itself takes (about 1 KB a task)."""
    a = "\n".join(f"value {i}" for i in range(10)) + "\n"
    b = "\n".join(f"value {i}" for i in range(100)) + "\n"
    path = write(tmp_path, BIG, {"a.txt": a, "b.txt": b})
    started = time.monotonic()
    tracemalloc.start()
    try:
        stream = open_stream(path)
        stream.check()  # pass 2 (``tasks()``) keeps less: no digests
        _, streaming_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        plan = load_plan(path)
        _, whole_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stream.total == len(plan.tasks) == 20_000
    bound = 8 * 1024 * 1024  # measured: about 2.5 MB streamed, 19 MB whole
    assert streaming_peak < bound < whole_peak, (streaming_peak, whole_peak)
    assert time.monotonic() - started < 60  # about 12 s on 2 busy cores
