from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import S3, moto_server, new_s3


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, int]]:
    """moto's S3 server on loopback (one per test module; every test has its own bucket)."""
    yield from moto_server()


@pytest.fixture
def s3(moto: tuple[str, int]) -> Iterator[S3]:
    yield from new_s3(moto)
