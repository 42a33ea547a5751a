"""The lock memo (flux_pipeline/run/lock_memo.py, docs/lockfile.md "A rerun does not read the
lock"): a rerun whose lock file is the text its state DB covers does not read it, and every
way the DB can fall behind that text (a row deleted or set back, an older DB put back, the
lock replaced) makes the next run read it and adopt, so nothing is paid for twice. Runs are
in-process (``run_cli``) against the simulator over real HTTP, so the reads can be counted.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.plan.expand import load_plan
from flux_pipeline.report import lockfile
from flux_pipeline.run.lock_keeper import LockKeeper
from flux_pipeline.run.lock_memo import read_memo
from flux_pipeline.simulator import SimConfig, SimulatorThread

from .support import admin_of, chained_manifest, lock_file, state_path, write_manifest

KEY = "memo-key"


class Runs:
    """Runs of one manifest into one output directory, counting the lock files parsed."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim: SimulatorThread):
        self.tmp_path, self.sim = tmp_path, sim
        self.out = tmp_path / "out"
        self.manifest = self.write(["ink", "oil"])
        self.parsed = 0
        real = lockfile.parse_lock

        def counted(*args: object, **kwargs: object) -> lockfile.Lock:
            self.parsed += 1
            return real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(lockfile, "parse_lock", counted)
        monkeypatch.setenv("APIXO_API_KEY", KEY)
        monkeypatch.setenv("APIXO_BASE_URL", sim.base_url)

    def write(self, styles: list[str]) -> Path:
        text = chained_manifest("memo", ["fox", "owl"], styles, chained=False)
        return write_manifest(self.tmp_path, text, name="shots.yaml")

    def run(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, int, str]:
        """(exit code, lock files parsed, what it printed) of one run."""
        self.parsed = 0
        code = run_cli(["run", str(self.manifest), "--out", str(self.out)])
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        return code, self.parsed, captured.out + captured.err

    @property
    def creates(self) -> int:
        creates: int = admin_of(self.sim).stats()["creates"]
        return creates

    @property
    def lock(self) -> bytes:
        return lock_file(self.manifest).read_bytes()

    def sql(self, statement: str) -> None:
        db = sqlite3.connect(state_path(self.out))
        try:
            db.execute(statement)
            db.commit()
        finally:
            db.close()


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runs]:
    with SimulatorThread(SimConfig(api_keys=(KEY,), task_seconds=0.05, task_spread=0.0)) as s:
        yield Runs(tmp_path, monkeypatch, s)


def test_a_rerun_of_a_covered_lock_does_not_read_it(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    code, parsed, _ = runs.run(capsys)
    assert (code, parsed, runs.creates) == (0, 0, 4)  # no lock yet
    memo = read_memo(state_path(runs.out))
    assert memo is not None  # the keeper's write at the stop covers its own text
    assert memo.manifest == "memo"
    text = runs.lock
    for _ in range(2):
        code, parsed, _ = runs.run(capsys)
        assert (code, parsed, runs.creates) == (0, 0, 4)
        assert runs.lock == text  # byte-identical, never rewritten


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM tasks WHERE readable_id LIKE 'shot@%fox%ink%'",
        "UPDATE tasks SET state = 'submitted' WHERE readable_id LIKE 'shot@%fox%ink%'",
        "UPDATE tasks SET attempts = 0, state = 'planned' WHERE readable_id LIKE 'shot@%fox%ink%'",
    ],
    ids=["row deleted", "row set back", "fewer attempts"],
)
def test_a_row_deleted_or_set_back_makes_the_next_run_read_and_adopt(
    runs: Runs, capsys: pytest.CaptureFixture[str], statement: str
) -> None:
    """With the memo trusted blindly, each of these would create (and bill) the task again."""
    assert runs.run(capsys)[0] == 0
    assert read_memo(state_path(runs.out)) is not None
    runs.sql(statement)
    assert read_memo(state_path(runs.out)) is None  # dropped by the trigger, in that write
    code, parsed, printed = runs.run(capsys)
    assert code == 0, printed
    assert parsed >= 1
    assert "adopted 1 task(s) from the lock" in printed
    assert runs.creates == 4  # nothing paid twice
    assert read_memo(state_path(runs.out)) is not None  # covered again once adopted
    assert runs.run(capsys)[1] == 0


def test_an_older_state_db_put_back_reads_the_newer_lock(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CI cache restores the DB of an earlier run while the lock in git is newer: the
    old DB's memo names the old text, so the new lock is read and its tasks adopted."""
    assert runs.run(capsys)[0] == 0
    older = runs.tmp_path / "older.sqlite3"
    shutil.copyfile(state_path(runs.out), older)
    runs.manifest = runs.write(["ink", "oil", "wax"])
    code, parsed, _ = runs.run(capsys)
    assert (code, runs.creates) == (0, 6)
    assert parsed == 1  # the old lock, read by the keeper once it had new blocks to write
    for suffix in ("-wal", "-shm"):
        Path(f"{state_path(runs.out)}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(older, state_path(runs.out))
    code, parsed, printed = runs.run(capsys)
    assert code == 0, printed
    assert parsed == 1
    assert "adopted 2 task(s) from the lock" in printed
    assert runs.creates == 6


def test_a_new_task_keeps_every_old_line_of_an_unread_lock(
    runs: Runs, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that adds a task writes the lock from the old text (read only then) and the new
    rows: every line of the old text is still there, and the next rerun reads nothing."""
    assert runs.run(capsys)[0] == 0
    before = runs.lock.decode().splitlines()
    runs.manifest = runs.write(["ink", "oil", "wax"])
    code, parsed, _ = runs.run(capsys)
    assert (code, parsed, runs.creates) == (0, 1, 6)
    after = runs.lock.decode().splitlines()
    kept = [line for line in before if line.strip() not in ("}", "},")]
    assert all(line in after for line in kept)
    assert len(after) > len(before)
    assert runs.run(capsys)[1] == 0


def test_a_replaced_lock_file_is_read(runs: Runs, capsys: pytest.CaptureFixture[str]) -> None:
    """Another text at the lock's path (a colleague's, a checkout): read, and a broken one is
    the usual one line and exit 2 before anything is created."""
    assert runs.run(capsys)[0] == 0
    lock = lock_file(runs.manifest)
    lock.write_bytes(runs.lock.replace(b'"attempts": 1', b'"attempts": 1 ', 1))
    code, parsed, _ = runs.run(capsys)
    assert (code, parsed, runs.creates) == (0, 1, 4)
    lock.write_text("{broken", encoding="utf-8")
    code, _, printed = runs.run(capsys)
    assert code == 2
    assert f"{lock}: not a valid flux-pipeline lock file" in printed
    assert runs.creates == 4


def test_the_keeper_of_an_unread_lock_that_broke_says_so_and_writes_nothing(
    tmp_path: Path,
) -> None:
    manifest = write_manifest(tmp_path, chained_manifest("memo", ["fox"], ["ink"], chained=False))
    plan = load_plan(manifest)
    path = lock_file(manifest)
    path.write_text("{broken", encoding="utf-8")
    said: list[str] = []
    keeper = LockKeeper(path, plan, None, echo=said.append, unread=True, out_dir=tmp_path)
    assert keeper.on_disk
    assert keeper.write({}) is False
    assert path.read_text(encoding="utf-8") == "{broken"  # left as it is
    assert len(said) == 1
    assert str(path) in said[0]
    assert "not a valid flux-pipeline lock file" in said[0]


def test_every_import_of_rows_drops_the_memo(tmp_path: Path) -> None:
    """``merge`` (and adoption) import rows that may be behind the lock: the memo goes in the
    same transaction, and adoption records it again only once the DB covers the lock."""
    from flux_pipeline.run.lock_memo import RECORD_SQL
    from flux_pipeline.run.store_import import import_records
    from flux_pipeline.run.store_schema import prepare

    path = tmp_path / "state.sqlite3"
    prepare(path)
    db = sqlite3.connect(path)
    db.execute(RECORD_SQL, ("a" * 64, "memo"))
    db.commit()
    db.close()
    assert read_memo(path) is not None
    import_records(path, [])
    assert read_memo(path) is None


@pytest.mark.parametrize("bucket", [False, True], ids=["no bucket", "a bucket"])
def test_with_a_bucket_the_covered_lock_is_read_all_the_same(tmp_path: Path, bucket: bool) -> None:
    """The lock names the outputs' objects in the bucket (docs/storage.md): with storage the
    run needs its entries, so the memo is not used; without, the same lock is left unread."""
    from flux_pipeline.report.locktext import file_sha256
    from flux_pipeline.run.lock_memo import RECORD_SQL
    from flux_pipeline.run.prepared import RunOptions, prepare
    from flux_pipeline.run.store_schema import prepare as prepare_db

    pytest.importorskip("boto3")
    text = chained_manifest("memo", ["fox"], ["ink"], chained=False)
    if bucket:
        text += "storage:\n  bucket: memo-bucket\n  endpoint_url: http://127.0.0.1:9\n"
    manifest = write_manifest(tmp_path, text, name="shots.yaml")
    lock = lock_file(manifest)
    lock.write_text(
        '{\n  "format": 1,\n  "manifest": "memo",\n  "tasks": {}\n}\n', encoding="utf-8"
    )
    out = tmp_path / "out"
    prepare_db(state_path(out))
    db = sqlite3.connect(state_path(out))
    db.execute(RECORD_SQL, (file_sha256(lock), "memo"))
    db.commit()
    db.close()
    ready = prepare(RunOptions(manifest=manifest, out_dir=out))
    if bucket:
        assert ready.storage is not None
        assert ready.lock is not None
        assert ready.lock_unread is None
    else:
        assert ready.lock is None
        assert ready.lock_unread is not None
