from __future__ import annotations

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
