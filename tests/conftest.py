from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """aiosqlite works only on asyncio: every async test runs there."""
    return "asyncio"


@pytest.fixture(autouse=True)
def _run_in_a_scratch_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own empty directory, so defaults relative to the current
    directory (out/<name>/, the state DB) never see a user's earlier runs in the checkout,
    and no test writes into it."""
    monkeypatch.chdir(tmp_path)


PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


@pytest.fixture(autouse=True)
def _no_lock_file_written_into_the_repository() -> Iterator[None]:
    """A run writes the lock file next to its manifest (docs/lockfile.md): a test that runs a
    manifest of the repository's pipelines/ must run it with a lock elsewhere, or none."""
    before = set(PIPELINES.glob("*.lock.json"))
    yield
    made = set(PIPELINES.glob("*.lock.json")) - before
    for path in made:
        path.unlink()
    assert not made, f"a test wrote {sorted(map(str, made))} into the repository"
