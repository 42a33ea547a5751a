"""Every manifest under pipelines/ validates clean (no warnings, even with ``--strict``) and
runs to exit 0 under ``--simulate``. The examples are copied to a temporary directory first:
nothing is ever written into the repository."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ..manifest.helpers import cli_limited

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
EXAMPLES = sorted(p.name for p in PIPELINES.glob("*.yaml"))


@pytest.fixture
def copied(tmp_path: Path) -> Path:
    target = tmp_path / "pipelines"
    shutil.copytree(PIPELINES, target)
    return target


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4


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
