from __future__ import annotations

import compileall
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flux_pipeline"


def _compile_the_package_once() -> None:
    """Most tests start ``python -m flux_pipeline`` subprocesses. Where the environment sets
    PYTHONDONTWRITEBYTECODE (this machine does), each of them would compile every module of
    the package again: about 0.25 s of CPU each, hundreds of times. The package is compiled
    once, into its ``__pycache__`` directories (what Python writes by default; ignored by
    git), and every subprocess reads it from there; a module edited since is compiled again.
    (Not a ``PYTHONPYCACHEPREFIX``: with one, the installed libraries' compiled files are no
    longer found, and a subprocess costs twice as much.)"""
    compileall.compile_dir(PACKAGE, quiet=1)


_compile_the_package_once()


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


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """The repository's pipelines/, as a fresh checkout has them, in a scratch directory
    (without the lock files a user's runs left there: ``helpers.copy_examples``)."""
    from .manifest.helpers import copy_examples

    return copy_examples(PIPELINES, tmp_path / "pipelines")
