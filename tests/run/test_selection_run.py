"""``run --only`` and ``run --limit`` end to end: the CLI against the simulator over HTTP.

The simulator returns two images per task, so each gen task has one chained edit in the plan
(its image 0) and one planned at run time (its image 1): both must follow the selection.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.simulator import SimulatorThread
from tests.run.support import db_rows, quick_sim, sim_tasks, spawn_run, state_path, write_manifest

KEY = "sim-selection-test-key"
RUNS = itertools.count()
MANIFEST = """\
version: 1
name: selected
defaults:
  input: {mode: pro, aspect_ratio: "1:1", output_format: png}
steps:
  - id: gen
    matrix:
      n: [a, b, c, d]
    prompt: "picture {{ n }}"
  - id: edit
    from: gen
    prompt: "edit of {{ parent.n }}"
"""


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with quick_sim(KEY, results_per_task=2) as thread:
        yield thread


def run(sim: SimulatorThread, tmp_path: Path, *extra: str) -> tuple[int, str, Path]:
    manifest = tmp_path / "manifest.yaml"
    if not manifest.exists():
        write_manifest(tmp_path, MANIFEST)
    out = tmp_path / "out"
    proc = spawn_run(
        manifest,
        out,
        "--no-lock",
        "--json",
        *extra,
        base_url=sim.base_url,
        api_key=KEY,
        logs=tmp_path / "logs",
        tag=f"run{next(RUNS)}",
    )
    code = proc.proc.wait(timeout=120)
    return code, proc.output(), out


def summary(text: str) -> dict[str, Any]:
    line = next(ln for ln in text.splitlines() if ln.startswith("{"))
    data: dict[str, Any] = json.loads(line)
    return data


def prompts(sim: SimulatorThread) -> list[str]:
    return sorted(t["request"]["input"]["prompt"] for t in sim_tasks(sim))


def test_limit_creates_only_the_first_tasks(sim: SimulatorThread, tmp_path: Path) -> None:
    code, text, out = run(sim, tmp_path, "--limit", "3")
    assert code == 0, text
    assert "3 of 8 task(s) selected" in text
    assert prompts(sim) == ["picture a", "picture b", "picture c"]
    result = summary(text)
    assert result["created"] == 3
    assert result["total"] == 3
    assert result["buckets"]["not started"] == 0
    report = json.loads((out / "report.json").read_text())
    assert sorted(t["readable_id"] for t in report["tasks"]) == [
        "gen@n=a#1",
        "gen@n=b#1",
        "gen@n=c#1",
    ]
    # the rest runs later, nothing paid twice
    code, text, out = run(sim, tmp_path)
    assert code == 0, text
    assert summary(text)["created"] == 12 - 3
    assert len(sim_tasks(sim)) == 12
    assert len(db_rows(state_path(out))) == 12


def test_only_a_task_takes_its_chain(sim: SimulatorThread, tmp_path: Path) -> None:
    code, text, _ = run(sim, tmp_path, "--only", "gen@n=b*")
    assert code == 0, text
    # gen b and the edits of both its images (one of them planned at run time)
    assert prompts(sim) == ["edit of b", "edit of b", "picture b"]
    assert summary(text)["total"] == 3


def test_only_a_chained_task_brings_its_parent_not_its_siblings(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    code, text, _ = run(sim, tmp_path, "--only", "gen@n=c#1/edit#1")
    assert code == 0, text
    assert prompts(sim) == ["edit of c", "picture c"]


def test_only_steps_comma_separated_and_repeated(sim: SimulatorThread, tmp_path: Path) -> None:
    code, text, _ = run(sim, tmp_path, "--only", "gen@n=a#1,gen@n=d*", "--only", "gen@n=a*")
    assert code == 0, text
    edits = ["edit of a", "edit of a", "edit of d", "edit of d"]
    assert prompts(sim) == [*edits, "picture a", "picture d"]


def test_only_with_a_comma_inside_a_readable_id(sim: SimulatorThread, tmp_path: Path) -> None:
    write_manifest(
        tmp_path,
        MANIFEST.replace("n: [a, b, c, d]", "n: [a, b]\n      m: [x, y]").replace(
            "picture {{ n }}", "picture {{ n }}{{ m }}"
        ),
    )
    code, text, _ = run(sim, tmp_path, "--only", "gen@n=b,m=x*,gen@n=a,m=y*", "--limit", "2")
    assert code == 0, text
    assert prompts(sim) == ["picture ay", "picture bx"]


def test_only_refuses_a_pattern_that_matches_nothing(sim: SimulatorThread, tmp_path: Path) -> None:
    code, text, _ = run(sim, tmp_path, "--only", "gen@n=a*,edits")
    assert code == 2, text
    assert "--only 'edits' matches no step id and no task's readable id" in text
    assert "did you mean 'edit'?" in text
    assert sim_tasks(sim) == []
