"""The done rule (flux_pipeline/run/verify.py): size, then the memo or the SHA-256; the memo's
column in the state DB (migration ``m002_output_mtime``) and its batched refresh."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path

import pytest

from flux_pipeline.media import sha256_bytes, sha256_file
from flux_pipeline.plan.tasks import TaskSpec
from flux_pipeline.run.memory_store import MemoryStore
from flux_pipeline.run.on_disk import intact_keys
from flux_pipeline.run.store import Store, open_store
from flux_pipeline.run.store_schema import _m001_initial
from flux_pipeline.run.verify import Memo, Verifier, verify_downloaded
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

CONTENT = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class CountingHasher:
    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, path: Path) -> str:
        self.paths.append(path)
        return sha256_file(path)


def written(out: Path, name: str = "gen/a.png", content: bytes = CONTENT) -> OutputRecord:
    """A file as the downloader leaves it, and its record with the memo set."""
    path = out / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return OutputRecord(
        index=0,
        path=name,
        url=f"https://results.test/{name}",
        bytes=len(content),
        sha256=sha256_bytes(content),
        mtime_ns=path.stat().st_mtime_ns,
    )


def shift_mtime(path: Path, seconds: int) -> int:
    seen = path.stat()
    mtime = seen.st_mtime_ns + seconds * 1_000_000_000
    os.utime(path, ns=(seen.st_atime_ns, mtime))
    return mtime


def record(
    key: str, outputs: list[OutputRecord], state: TaskState = TaskState.DOWNLOADED
) -> TaskRecord:
    return TaskRecord(
        key=key,
        readable_id=f"gen#{key}",
        step="gen",
        parent_key=None,
        parent_output_index=None,
        state=state,
        task_id=f"t-{key}",
        request_json="{}",
        output=f"gen/{key}",
        output_format="png",
        result_urls=tuple(o.url for o in outputs),
        fail_code=None,
        fail_msg=None,
        attempts=1,
        api_create_time=None,
        api_complete_time=None,
        cost_time=None,
        first_submitted_at=1.0,
        submitted_at=1.0,
        finished_at=2.0,
        downloaded_at=3.0,
        updated_at=3.0,
        outputs=outputs,
    )


# --- one output ----------------------------------------------------------------------------


def test_a_memo_that_holds_skips_the_hash(tmp_path: Path) -> None:
    output = written(tmp_path)
    hasher = CountingHasher()
    verifier = Verifier(tmp_path, hasher=hasher)
    assert verifier.output(tmp_path / output.path, "k", output)
    assert (verifier.hashed, hasher.paths, verifier.memos) == (0, [], [])


def test_missing_file_or_other_size_is_not_intact_and_not_hashed(tmp_path: Path) -> None:
    output = written(tmp_path)
    hasher = CountingHasher()
    verifier = Verifier(tmp_path, hasher=hasher)
    (tmp_path / output.path).write_bytes(CONTENT[:-1])
    assert not verifier.output(tmp_path / output.path, "k", output)
    (tmp_path / output.path).unlink()
    assert not verifier.output(tmp_path / output.path, "k", output)
    (tmp_path / output.path).mkdir()  # a directory at the path
    assert not verifier.output(tmp_path / output.path, "k", output)
    assert hasher.paths == []


def test_same_size_other_bytes_is_not_intact(tmp_path: Path) -> None:
    output = written(tmp_path)
    path = tmp_path / output.path
    path.write_bytes(CONTENT[:-1] + b"!")  # a new write: its mtime is not the memo's
    shift_mtime(path, 3)  # (coarse clocks: make sure it differs)
    verifier = Verifier(tmp_path, hasher=CountingHasher())
    assert not verifier.output(path, "k", output)
    assert verifier.hashed == 1
    assert verifier.memos == []  # nothing found right, nothing to remember


def test_a_touched_file_is_hashed_once_and_its_memo_refreshed(tmp_path: Path) -> None:
    output = written(tmp_path)
    path = tmp_path / output.path
    mtime = shift_mtime(path, 5)
    verifier = Verifier(tmp_path, hasher=CountingHasher())
    assert verifier.output(path, "k", output)
    assert verifier.hashed == 1
    assert verifier.memos == [Memo("k", 0, mtime)]
    remembered = dataclasses.replace(output, mtime_ns=mtime)
    again = Verifier(tmp_path, hasher=CountingHasher())
    assert again.output(path, "k", remembered)
    assert (again.hashed, again.memos) == (0, [])


def test_no_memo_means_one_hash(tmp_path: Path) -> None:
    output = dataclasses.replace(written(tmp_path), mtime_ns=None)  # a row of an older DB
    path = tmp_path / output.path
    verifier = Verifier(tmp_path, hasher=CountingHasher())
    assert verifier.output(path, "k", output)
    assert verifier.memos == [Memo("k", 0, path.stat().st_mtime_ns)]


def test_same_size_and_same_mtime_is_the_limit_of_the_memo(tmp_path: Path) -> None:
    """Documented (docs/resume.md, "When is a task done?"): a file replaced by one of the same
    size whose mtime_ns is forced back to the memo's passes without being read."""
    output = written(tmp_path)
    path = tmp_path / output.path
    path.write_bytes(CONTENT[:-1] + b"!")
    os.utime(path, ns=(path.stat().st_atime_ns, output.mtime_ns or 0))
    assert Verifier(tmp_path, hasher=CountingHasher()).output(path, "k", output)
    strict = Verifier(tmp_path, use_memo=False, hasher=CountingHasher())  # how merge checks
    assert not strict.output(path, "k", output)
    assert strict.hashed == 1


# --- tasks ---------------------------------------------------------------------------------


def test_verify_downloaded_applies_the_rule_to_downloaded_tasks_only(tmp_path: Path) -> None:
    good = written(tmp_path, "gen/good.png")
    second = dataclasses.replace(written(tmp_path, "gen/second.png"), index=1)
    bad = written(tmp_path, "gen/bad.png")
    (tmp_path / bad.path).write_bytes(CONTENT[::-1])  # same size, other bytes
    shift_mtime(tmp_path / bad.path, 3)
    records = [
        record("good", [good, second]),
        record("bad", [bad]),
        record("empty", []),  # downloaded, but nothing recorded: not done
        record("succeeded", [good], TaskState.SUCCEEDED),
    ]
    hasher = CountingHasher()
    found = verify_downloaded(records, tmp_path, hasher=hasher)
    assert found.intact == {"good"}
    assert found.hashed == 1
    assert hasher.paths == [tmp_path / bad.path]


@pytest.mark.anyio
async def test_intact_keys_queues_the_memos_of_the_files_it_hashed(tmp_path: Path) -> None:
    output = written(tmp_path)
    mtime = shift_mtime(tmp_path / output.path, 7)
    store = MemoryStore([record("k", [output]), record("other", [written(tmp_path, "gen/b.png")])])
    hasher = CountingHasher()
    assert await intact_keys(await store.records(), tmp_path, store, hasher=hasher) == {
        "k",
        "other",
    }
    assert len(hasher.paths) == 1
    assert store.rows["k"].outputs[0].mtime_ns == mtime
    assert (store.writes, store.batches) == (1, 1)
    assert await intact_keys(await store.records(), tmp_path, store, hasher=hasher) == {
        "k",
        "other",
    }
    assert len(hasher.paths) == 1  # memoised: the second check hashes nothing
    assert store.writes == 1  # and writes nothing


# --- the state DB --------------------------------------------------------------------------


async def _downloaded(store: Store, key: str, outputs: list[OutputRecord]) -> None:
    row = record(key, outputs)
    await store.mark_submitting(_spec(row))
    store.mark_submitted(key, f"t-{key}")
    store.mark_succeeded(key, row.result_urls, create_time=1, complete_time=2, cost_time=1)
    store.mark_downloaded(key, outputs)


def _spec(row: TaskRecord) -> TaskSpec:
    return TaskSpec(
        key=row.key,
        readable_id=row.readable_id,
        step=row.step,
        parent_key=None,
        parent_output_index=None,
        repeat_index=1,
        request_json=row.request_json,
        output=row.output,
        output_format=row.output_format,
    )


@pytest.mark.anyio
async def test_the_memo_round_trips_and_refreshes_in_one_batch(tmp_path: Path) -> None:
    outputs = [
        dataclasses.replace(written(tmp_path, f"gen/{i}.png"), index=i, mtime_ns=100 + i)
        for i in range(3)
    ]
    path = tmp_path / "s.sqlite3"
    async with open_store(path) as store:
        await _downloaded(store, "k", outputs)
        await store.flush_and_wait()
        assert [o.mtime_ns for o in (await store.records())["k"].outputs] == [100, 101, 102]
        fingerprint = await store.fingerprint()
        batches, writes = store.batches, store.writes
        store.refresh_memos([("k", 0, 900), ("k", 2, 902)])
        await store.flush_and_wait()
        assert store.batches == batches + 1
        assert store.writes == writes + 2
        assert [o.mtime_ns for o in (await store.records())["k"].outputs] == [900, 101, 902]
        assert await store.fingerprint() == fingerprint  # a memo is not a change of state


OLD_ROWS = [
    (
        "INSERT INTO tasks (key, readable_id, step, state, request_json, output, output_format,"
        " result_urls, attempts, updated_at) VALUES"
        " ('k', 'gen#k', 'gen', 'downloaded', '{}', 'gen/k', 'png', ?, 1, 5.0)"
    ),
    "INSERT INTO outputs (key, idx, path, url, bytes, sha256) VALUES ('k', 0, ?, ?, ?, ?)",
]


@pytest.mark.anyio
async def test_a_db_of_the_old_schema_migrates_and_keeps_its_data(tmp_path: Path) -> None:
    """A DB as the schema before ``m002_output_mtime`` left it: its rows come back whole,
    without memos; the first check hashes the file once, the next none."""
    output = written(tmp_path / "out")
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    _m001_initial(db)
    db.execute("INSERT INTO _migrations VALUES ('m001_initial', 1.0)")
    db.execute(OLD_ROWS[0], (f'["{output.url}"]',))
    db.execute(OLD_ROWS[1], (output.path, output.url, output.bytes, output.sha256))
    db.close()

    async with open_store(path) as store:
        records = await store.records()
        assert records["k"].state is TaskState.DOWNLOADED
        assert records["k"].result_urls == (output.url,)
        assert records["k"].outputs == [dataclasses.replace(output, mtime_ns=None)]
        assert (records["k"].generation, records["k"].base_key) == (0, None)  # m003
        hasher = CountingHasher()
        assert await intact_keys(records, tmp_path / "out", store, hasher=hasher) == {"k"}
        assert len(hasher.paths) == 1
        await store.flush_and_wait()
        records = await store.records()
        assert records["k"].outputs == [output]  # the memo: the file's mtime_ns
        assert await intact_keys(records, tmp_path / "out", store, hasher=hasher) == {"k"}
        assert len(hasher.paths) == 1
    db = sqlite3.connect(path)
    names = [row[0] for row in db.execute("SELECT name FROM _migrations ORDER BY name")]
    db.close()
    assert names == ["m001_initial", "m002_output_mtime", "m003_generations", "m004_lock_memo"]
