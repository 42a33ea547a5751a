"""Every manifest under pipelines/ validates clean (no warnings, even with ``--strict``) and
runs to exit 0 under ``--simulate``. The examples are copied to a temporary directory first:
nothing is ever written into the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..manifest.helpers import cli_limited, copy_examples

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
EXAMPLES = sorted(p.name for p in PIPELINES.glob("*.yaml"))


@pytest.fixture
def copied(shipped: Path) -> Path:
    return shipped  # tests/conftest.py: without the lock files a user's runs left there


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4


def test_the_examples_are_copied_without_what_a_users_run_left(tmp_path: Path) -> None:
    """The README's first command runs the demo in the checkout and leaves its lock beside
    it; the second then ran the tests, whose plan and run of that copy adopted the lock (its
    URLs of a simulator long gone): 2 failures in a new user's first test run."""
    source = tmp_path / "checkout"
    (source / "demo" / "refs").mkdir(parents=True)
    (source / "demo.yaml").write_text("version: 1\n", encoding="utf-8")
    (source / "demo" / "refs" / "lamp.png").write_bytes(b"png")
    (source / "demo.lock.json").write_text("{}", encoding="utf-8")
    (source / "demo.review.json").write_text("{}", encoding="utf-8")
    copy = copy_examples(source, tmp_path / "copy")
    found = sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
    assert found == ["demo.yaml", "demo/refs/lamp.png"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_a_shipped_example_is_clean_and_runs(copied: Path, name: str) -> None:
    checked = cli_limited(copied, "validate", "--strict", name)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""
    assert "warning" not in checked.stdout
    # a whole run: the simulator, uvicorn and worker threads (downloads, thumbnails) each
    # reserve their stacks' address space, so it gets 4 GB; the plan is checked at 1 GB above
    done = cli_limited(
        copied,
        "run",
        "--simulate",
        "--strict",
        "--sim-task-seconds",
        "0.1",
        name,
        timeout=300,
        memory=4 << 30,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "warning" not in done.stderr
    manifest = name.removesuffix(".yaml")
    report = json.loads((copied / "out" / manifest / "report.json").read_text())
    assert report["tasks"]
    assert {task["state"] for task in report["tasks"]} == {"downloaded"}
