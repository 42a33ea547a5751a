"""``merge`` treats its inputs as untrusted: every malformed report.json or state DB is one
line naming the file and what is wrong, exit 2, and nothing is merged; output paths stay
inside the output directory (flux_pipeline/layout.py ``inside``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from flux_pipeline import redact
from flux_pipeline.cli import run_cli
from flux_pipeline.plan.expand import load_plan
from flux_pipeline.report.entry import OutputEntry, TaskEntry
from flux_pipeline.run.store import Store, import_records
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

MANIFEST = """\
version: 1
name: untrusted
steps:
  - id: gen
    matrix:
      n: [a, b]
    prompt: "picture {{ n }}"
"""

Report = dict[str, Any]


def _manifest(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    return path


def _report(tmp_path: Path) -> Report:
    """A good report.json of the manifest: one task downloaded, one failed."""
    plan = load_plan(tmp_path / "m.yaml")
    first, second = plan.tasks
    output = OutputEntry(path=f"{first.output}.png", url="https://x/1.png", bytes=3, sha256="0")
    entries = [
        TaskEntry(readable_id=first.readable_id, key=first.key, step="gen", task_id="t1",
                  state=TaskState.DOWNLOADED, output=first.output, outputs=(output,)),
        TaskEntry(readable_id=second.readable_id, key=second.key, step="gen", task_id="t2",
                  state=TaskState.FAILED, fail_code="E", fail_msg="no", output=second.output),
    ]  # fmt: skip
    return {"format_version": 1, "tasks": [e.to_json() for e in entries]}


def _task(report: Report, **changes: object) -> Report:
    report["tasks"][0].update(changes)
    return report


def _output(report: Report, **changes: object) -> Report:
    report["tasks"][0]["outputs"][0].update(changes)
    return report


def _drop(report: Report, name: str) -> Report:
    del report["tasks"][0][name]
    return report


# each: how the good report is spoiled (a dict to dump, or the bytes to write)
REPORTS: dict[str, Callable[[Report], Report | bytes]] = {
    "not-an-object": lambda r: [r],  # type: ignore[dict-item,return-value]
    "tasks-not-a-list": lambda r: r | {"tasks": {"a": 1}},
    "task-not-an-object": lambda r: r | {"tasks": [7]},
    "state-wrong-type": lambda r: _task(r, state=7),
    "state-unknown": lambda r: _task(r, state="exploded"),
    "key-missing": lambda r: _drop(r, "key"),
    "outputs-not-a-list": lambda r: _task(r, outputs="x.png"),
    "output-bytes-wrong-type": lambda r: _output(r, bytes="many"),
    "huge-attempts": lambda r: _task(r, attempts=10**30),
    "huge-timestamp": lambda r: _task(r, timestamps={"submitted": 1e300}),
    "huge-float-literal": lambda r: (
        json.dumps(r).replace('"attempts": 0', '"attempts": 1e400').encode()
    ),
    "format-version-wrong-type": lambda r: r | {"format_version": "1"},
    "non-utf8": lambda r: json.dumps(r).encode().replace(b'"t1"', b'"t\xff\xfe1"'),
    "deep-json": lambda r: (
        b'{"format_version": 1, "tasks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    ),
    "truncated": lambda r: json.dumps(r).encode()[:-40],
    "traversal-output-path": lambda r: _output(r, path="../../../../etc/passwd"),
    "absolute-output-path": lambda r: _output(r, path="/etc/passwd"),
    "output-path-of-another-task": lambda r: _output(r, path="elsewhere/x.png"),
}


def _merge(tmp_path: Path, source: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    out = tmp_path / "merged"
    code = run_cli(["merge", str(tmp_path / "m.yaml"), "--from", str(source), "--out", str(out)])
    return code, capsys.readouterr().err


def _assert_refused(code: int, err: str, source: Path, tmp_path: Path) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert str(source) in lines[0], err
    assert "internal error" not in err
    assert not (tmp_path / "merged" / ".flux-pipeline" / "state.sqlite3").exists()


@pytest.mark.parametrize("variant", sorted(REPORTS))
def test_a_malformed_report_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], variant: str
) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    spoiled = REPORTS[variant](_report(tmp_path))
    source = tmp_path / "shard" / "report.json"
    source.parent.mkdir()
    source.write_bytes(spoiled if isinstance(spoiled, bytes) else json.dumps(spoiled).encode())
    code, err = _merge(tmp_path, source, capsys)
    _assert_refused(code, err, source, tmp_path)


def test_a_directory_named_report_json_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    source = tmp_path / "shard" / "report.json"
    source.mkdir(parents=True)
    code, err = _merge(tmp_path, source, capsys)
    _assert_refused(code, err, source, tmp_path)


def _write_db(path: Path, output_path: str) -> None:
    """A state DB of the manifest whose first task is downloaded to ``output_path``."""
    plan = load_plan(path.parent.parent / "m.yaml")
    spec = plan.tasks[0]

    async def main() -> None:
        async with await Store.open(path) as store:
            await store.begin_run(
                manifest=plan.name, manifest_sha256="0", settings={}, planned=len(plan.tasks)
            )
            await store.mark_submitting(spec)
            store.mark_submitted(spec.key, "t1")
            url = "https://x/1.png"
            out = OutputRecord(index=0, path=output_path, url=url, bytes=3, sha256="0")
            store.mark_downloaded(spec.key, [out])

    anyio.run(main)


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"this is not a database at all\n" * 100)


def _other_schema(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO tasks (name) VALUES ('x')")
    db.commit()
    db.close()


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "x").write_text("x")


DATABASES: dict[str, Callable[[Path], None]] = {
    "not-sqlite": _not_sqlite,
    "other-schema": _other_schema,
    "directory": _directory,
    "traversal-output-path": lambda p: _write_db(p, "../../../../etc/passwd"),
    "absolute-output-path": lambda p: _write_db(p, "/etc/passwd"),
}


@pytest.mark.parametrize("variant", sorted(DATABASES))
def test_a_malformed_state_db_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], variant: str
) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    source = tmp_path / "shard" / "state.sqlite3"
    source.parent.mkdir()
    DATABASES[variant](source)
    code, err = _merge(tmp_path, tmp_path / "shard", capsys)
    _assert_refused(code, err, source, tmp_path)


def test_a_source_holding_a_secret_is_merged_redacted(tmp_path: Path) -> None:
    """A shard DB written by an older version, with the key in a failMsg and a result URL:
    the merged DB holds neither (run/store_import.py redacts what it writes)."""
    plan = load_plan(_manifest(tmp_path))
    spec = plan.tasks[0]
    secret = "sk/AbCd+EfGh/1234=="
    record = TaskRecord(
        key=spec.key, readable_id=spec.readable_id, step=spec.step, parent_key=None,
        parent_output_index=None, state=TaskState.FAILED, task_id="t1",
        request_json=spec.request_json, output=spec.output, output_format="png",
        result_urls=(f"https://x/1.png?k={secret}",), fail_code="E",
        fail_msg=f"bad key {secret}", attempts=1, api_create_time=None,
        api_complete_time=None, cost_time=None, first_submitted_at=None, submitted_at=None,
        finished_at=None, downloaded_at=None, updated_at=1.0,
    )  # fmt: skip
    merged = tmp_path / "merged.sqlite3"
    with redact.scope():
        redact.register(secret)
        import_records(merged, [record])
    data = b"".join(p.read_bytes() for p in tmp_path.glob("merged.sqlite3*"))
    assert secret.encode() not in data
    assert b"bad key [redacted]" in data
