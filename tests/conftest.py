from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """aiosqlite works only on asyncio: every async test runs there."""
    return "asyncio"
