"""The lock file's format (flux_pipeline/report/lockfile.py, docs/lockfile.md): deterministic
text, what is kept, and reading it back as untrusted input."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from flux_pipeline.errors import UsageError
from flux_pipeline.plan.expand import Plan, load_plan
from flux_pipeline.report.lockfile import Lock, lock_entries, lock_path_for, parse_lock
from flux_pipeline.report.locktext import lock_pieces, write_lock
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

MANIFEST = """\
version: 1
name: locks
defaults:
  input: {mode: pro, aspect_ratio: "1:1", output_format: png}
image_sets:
  refs: {files: "../common/*.png"}
steps:
  - id: shot
    matrix:
      ref: {image_set: refs}
    prompt: "a fox"
    images: ["{{ ref.url }}"]
"""


def _plan(tmp_path: Path) -> Plan:
    (tmp_path / ".git").mkdir()  # the project root: the manifest may read ../common
    (tmp_path / "common").mkdir()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(tmp_path / "common" / "a.png")
    (tmp_path / "pipelines").mkdir()
    manifest = tmp_path / "pipelines" / "locks.yaml"
    manifest.write_text(MANIFEST, encoding="utf-8")
    return load_plan(manifest)


def _record(key: str, state: TaskState, **changes: object) -> TaskRecord:
    record = TaskRecord(
        key=key,
        readable_id=f"shot@n={key[:4]}#1",
        step="shot",
        parent_key=None,
        parent_output_index=None,
        state=state,
        task_id=f"task_{key[:8]}" if state is not TaskState.SUBMITTING else None,
        request_json='{"input":{"prompt":"a fox"},"provider":"auto"}',
        output=f"shot/{key[:4]}",
        output_format="png",
        result_urls=(f"https://cdn.example.com/{key[:8]}.png",),
        fail_code=None,
        fail_msg=None,
        attempts=1,
        api_create_time=None,
        api_complete_time=None,
        cost_time=None,
        first_submitted_at=1.5,
        submitted_at=2.5,
        finished_at=1_700_000_000.75,
        downloaded_at=4.5,
        updated_at=5.5,
        outputs=[
            OutputRecord(
                index=0,
                path=f"shot/{key[:4]}.png",
                url=f"https://cdn.example.com/{key[:8]}.png",
                bytes=10,
                sha256="ab" * 32,
                mtime_ns=123,
            )
        ],
    )
    return replace(record, **changes)  # type: ignore[arg-type]


def test_the_lock_is_named_after_its_manifest() -> None:
    assert lock_path_for(Path("pipelines/demo.yaml")) == Path("pipelines/demo.lock.json")
    assert lock_path_for(Path("a/b.c.yml")) == Path("a/b.c.lock.json")


def test_the_text_is_deterministic_sorted_json_with_a_trailing_newline(tmp_path: Path) -> None:
    """The same records in any order, with timestamps that are no fact changed (downloaded,
    updated, the memo), give the same text; it is JSON, sorted, one field a line."""
    plan = _plan(tmp_path)
    keys = [f"{i:x}" * 64 for i in (3, 1, 2)]
    rows = {k: _record(k[:64], TaskState.DOWNLOADED) for k in keys}
    text = "".join(lock_pieces(plan.name, lock_entries(plan, rows, None)))
    later = {
        k: replace(r, updated_at=99.0, downloaded_at=98.0, submitted_at=97.0)
        for k, r in reversed(list(rows.items()))
    }
    assert "".join(lock_pieces(plan.name, lock_entries(plan, later, None))) == text
    assert text.endswith("}\n")
    document = json.loads(text)
    assert list(document["tasks"]) == sorted(document["tasks"])
    assert json.dumps(document, sort_keys=True) == json.dumps(json.loads(text), sort_keys=True)
    entry = document["tasks"][keys[1][:64]]
    assert entry["state"] == "done"
    assert entry["urls_expire"] == "2023-11-29T22:13:20Z"  # finished (whole seconds) + 15 days
    assert entry["outputs"] == [{"bytes": 10, "path": "shot/1111.png", "sha256": "ab" * 32}]
    assert '      "id": "shot@n=1111#1",\n' in text  # a field a line


def test_only_keys_sent_are_kept_and_removed_tasks_stay(tmp_path: Path) -> None:
    """Planned rows and submitted rows without a taskId are not in the lock; the old lock's
    entries the DB lacks stay (paid for); an ambiguous row is kept as ambiguous."""
    plan = _plan(tmp_path)
    a, b, c, d = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
    first = lock_entries(plan, {d: _record(d, TaskState.FAILED, fail_code="CONTENT")}, None)
    old = Lock(path=tmp_path / "x.lock.json", manifest=plan.name, entries=first)
    rows = {
        a: _record(a, TaskState.PLANNED),
        b: _record(b, TaskState.SUBMITTED, task_id=None),
        c: _record(c, TaskState.SUBMITTING, result_urls=(), finished_at=None),
    }
    entries = lock_entries(plan, rows, old)
    assert set(entries) == {c, d}
    assert entries[c].state is TaskState.SUBMITTING
    assert entries[c].task_id is None
    assert entries[d].fail_code == "CONTENT"
    text = "".join(lock_pieces(plan.name, entries))
    assert json.loads(text)["tasks"][c]["state"] == "ambiguous"
    assert parse_lock(tmp_path / "x", text).entries == entries


def test_round_trip_and_no_rewrite_when_unchanged(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    key = plan.tasks[0].key
    rows = {key: _record(key, TaskState.DOWNLOADED, request_json=plan.tasks[0].request_json)}
    entries = lock_entries(plan, rows, None)
    path = tmp_path / "locks.lock.json"
    assert write_lock(path, plan.name, entries)
    stamp = os.stat(path).st_mtime_ns
    assert not write_lock(path, plan.name, entries)
    assert os.stat(path).st_mtime_ns == stamp
    lock = parse_lock(path, path.read_text(encoding="utf-8"), out_dir=tmp_path / "out")
    assert lock.entries == entries
    (image,) = lock.entries[key].request["input"]["image_urls"]  # type: ignore[index]
    assert image.startswith("local:../common/a.png#sha256=")  # relative, never absolute
    assert str(tmp_path) not in path.read_text(encoding="utf-8")


def test_an_output_path_through_a_symlink_out_of_the_output_dir_is_refused(
    tmp_path: Path,
) -> None:
    plan = _plan(tmp_path)
    key = "e" * 64
    entries = lock_entries(plan, {key: _record(key, TaskState.DOWNLOADED)}, None)
    text = "".join(lock_pieces(plan.name, entries))
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", out / "shot")
    with pytest.raises(UsageError, match="leads outside the output directory"):
        parse_lock(tmp_path / "x.lock.json", text, out_dir=out)


def test_an_output_file_that_is_a_symlink_out_of_the_output_dir_is_refused(
    tmp_path: Path,
) -> None:
    """The file itself, in a real directory, beside an output that is a plain file."""
    plan = _plan(tmp_path)
    link, plain = "e" * 64, "f" * 64
    records = {k: _record(k, TaskState.DOWNLOADED) for k in (link, plain)}
    text = "".join(lock_pieces(plan.name, lock_entries(plan, records, None)))
    out = tmp_path / "out"
    (out / "shot").mkdir(parents=True)
    (tmp_path / "secret.png").write_bytes(b"x")
    paths = {k: out / r.outputs[0].path for k, r in records.items()}
    paths[plain].write_bytes(b"x")
    assert parse_lock(tmp_path / "x.lock.json", text, out_dir=out).entries.keys() == records.keys()
    os.symlink(tmp_path / "secret.png", paths[link])
    with pytest.raises(UsageError, match="leads outside the output directory"):
        parse_lock(tmp_path / "x.lock.json", text, out_dir=out)
