"""Three shard runs against the simulator, one after another, merged: the same tasks, states
and outputs as one unsharded run of the same manifest.

The simulator returns two images per task, so chained tasks are also planned at run time
(``Plan.children(parent, 1)``) and must follow their parent into its shard. Images are
deterministic per (taskId, prompt, index) and task ids differ between runs, so outputs are
compared by path and size class across runs, and byte for byte against what the simulator
renders for the task id each report records (``render``), which ties every merged file to
the shard run that made it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.layout import default_state_path
from flux_pipeline.plan.expand import load_plan
from flux_pipeline.run.merge import merge
from flux_pipeline.run.runner import Endpoint, RunOptions, execute
from flux_pipeline.run.scheduler import TimingConfig
from flux_pipeline.simulator import SimConfig, SimulatorThread
from flux_pipeline.simulator.images import ImageSpec, render

pytestmark = pytest.mark.anyio

SIZE = 64
KEY = "sim-shard-test-key"  # not a one-letter key: the client redacts the key in answers
MANIFEST = """\
version: 1
name: sharded
defaults:
  input: {aspect_ratio: "1:1", output_format: png}
steps:
  - id: gen
    matrix:
      n: [a, b, c, d, e, f, g, h]
    prompt: "picture {{ n }}"
  - id: edit
    from: gen
    prompt: "edit of {{ parent.n }}"
"""
TASKS = 8 + 8 * 2  # two images per gen task: one edit each


@pytest.fixture(scope="module")
def sim() -> Iterator[tuple[SimulatorThread, Endpoint]]:
    config = SimConfig(
        api_keys=(KEY,), task_seconds=0.1, task_spread=0.0, results_per_task=2, image_size=SIZE
    )
    with SimulatorThread(config) as thread:
        yield thread, Endpoint(base_url=thread.base_url, api_key=KEY)


def options(manifest: Path, out: Path, shard: tuple[int, int] | None = None) -> RunOptions:
    return RunOptions(
        manifest=manifest,
        out_dir=out,
        shard=shard,
        handle_signals=False,
        timing=TimingConfig(first_poll=0.05, max_interval=0.2),
    )


def tasks_of(out: Path, name: str = "report.json") -> dict[str, dict[str, Any]]:
    report = json.loads((out / name).read_text())
    return {t["readable_id"]: t for t in report["tasks"]}


def check_files(out: Path, tasks: dict[str, dict[str, Any]]) -> None:
    """Every output is on disk with its recorded size and hash, and is the image the
    simulator renders for the task id the report names."""
    for task in tasks.values():
        assert task["state"] == "downloaded", task["readable_id"]
        assert len(task["outputs"]) == 2
        for output in task["outputs"]:
            content = (out / output["path"]).read_bytes()
            assert len(content) == output["bytes"]
            assert hashlib.sha256(content).hexdigest() == output["sha256"]
            index = int(output["url"].rsplit("/", 1)[1].split(".")[0])
            expected = render(
                ImageSpec(
                    task_id=task["taskId"],
                    prompt=task["request"]["input"]["prompt"],
                    index=index,
                    aspect_ratio="1:1",
                    output_format="png",
                    size=SIZE,
                )
            )
            assert content == expected, output["path"]


def shape(tasks: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What must be equal between runs: key, state, parent, output paths."""
    return {
        rid: (t["key"], t["state"], t["parent"], tuple(o["path"] for o in t["outputs"]))
        for rid, t in tasks.items()
    }


async def test_three_shards_merged_equal_one_unsharded_run(
    tmp_path: Path, sim: tuple[SimulatorThread, Endpoint]
) -> None:
    _, endpoint = sim
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    whole = await execute(options(manifest, tmp_path / "whole"), endpoint=endpoint)
    assert whole.outcome.exit_code == 0
    unsharded = tasks_of(tmp_path / "whole")
    assert len(unsharded) == TASKS
    check_files(tmp_path / "whole", unsharded)

    shard_tasks: list[dict[str, dict[str, Any]]] = []
    for index in (1, 2, 3):
        out = tmp_path / f"shard{index}"
        result = await execute(options(manifest, out, (index, 3)), endpoint=endpoint)
        assert result.outcome.exit_code == 0
        assert result.state_path == out / ".flux-pipeline" / f"state-{index}of3.sqlite3"
        report = json.loads((out / f"report.shard-{index}of3.json").read_text())
        assert report["run"]["settings"]["shard"] == f"{index}/3"
        shard_tasks.append(tasks_of(out, f"report.shard-{index}of3.json"))
        assert not (out / "report.json").exists()
        assert not (out / "index.html").exists()  # the gallery is the merge's
    sizes = [len(t) for t in shard_tasks]
    assert sum(sizes) == TASKS
    assert sizes.count(0) <= 1
    for tasks in shard_tasks:  # chains whole: every parent is in its child's shard
        assert all(t["parent"] is None or t["parent"] in tasks for t in tasks.values())

    plan = load_plan(manifest)
    merged_out = tmp_path / "merged"
    state = default_state_path(merged_out)
    sources = [tmp_path / f"shard{i}" for i in (1, 2, 3)]
    combined = await merge(plan, sources, out_dir=merged_out, state_path=state)
    assert combined.exit_code == 0
    assert (combined.databases, combined.reports, combined.copied, combined.missing) == (
        3,
        3,
        48,
        [],
    )
    assert combined.shards == ["1/3", "2/3", "3/3"]
    merged = tasks_of(merged_out)
    assert shape(merged) == shape(unsharded)
    check_files(merged_out, merged)
    by_shard = {rid: t["taskId"] for tasks in shard_tasks for rid, t in tasks.items()}
    assert {rid: t["taskId"] for rid, t in merged.items()} == by_shard

    # idempotent: merging the same shards again (and one of them twice) changes nothing
    before = (merged_out / "report.json").read_text()
    again = await merge(plan, [*sources, sources[0]], out_dir=merged_out, state_path=state)
    assert (again.exit_code, again.copied, again.present, again.rows) == (0, 0, 48, TASKS)
    assert shape(tasks_of(merged_out)) == shape(merged)
    assert (
        json.loads(before)["tasks"] == json.loads((merged_out / "report.json").read_text())["tasks"]
    )

    # and the merged directory is a finished run: rerunning it creates nothing
    rerun = await execute(options(manifest, merged_out), endpoint=endpoint)
    assert (rerun.outcome.exit_code, rerun.outcome.created) == (0, 0)


def test_shards_in_one_directory_merged_in_place_by_the_cli(
    tmp_path: Path, sim: tuple[SimulatorThread, Endpoint], capsys: pytest.CaptureFixture[str]
) -> None:
    """Local use: shard runs sharing an output directory keep one state DB and one report
    each (``report.shard-IofN.json``: none overwrites another); ``status`` and ``report``
    read a shard with ``--shard``; ``merge --from OUT --out OUT`` combines them; a merge from
    the reports alone works too."""
    _, endpoint = sim
    manifest = tmp_path / "m.yaml"
    manifest.write_text(MANIFEST)
    out = tmp_path / "out"
    for index in (1, 2, 3):
        run = partial(execute, options(manifest, out, (index, 3)), endpoint=endpoint)
        assert anyio.run(run).outcome.exit_code == 0
    dbs = sorted(p.name for p in (out / ".flux-pipeline").glob("*.sqlite3"))
    assert dbs == ["state-1of3.sqlite3", "state-2of3.sqlite3", "state-3of3.sqlite3"]
    shard_reports = [tasks_of(out, f"report.shard-{i}of3.json") for i in (1, 2, 3)]
    assert sum(len(tasks) for tasks in shard_reports) == TASKS  # every shard's report kept
    assert not (out / "report.json").exists()
    capsys.readouterr()

    # before the merge: a shard's status and report, by --shard
    assert run_cli(["status", str(manifest), "--out", str(out), "--shard", "2/3"]) == 0
    status = capsys.readouterr().out
    assert f"state DB: {out / '.flux-pipeline' / 'state-2of3.sqlite3'}" in status
    assert f"downloaded  {len(shard_reports[1])}" in status
    assert run_cli(["status", "--out", str(out)]) == 2  # no unsharded DB: says what there is
    assert "give --shard I/N" in capsys.readouterr().err
    (out / "report.shard-2of3.json").unlink()
    assert run_cli(["report", str(manifest), "--out", str(out), "--shard", "2/3"]) == 0
    assert tasks_of(out, "report.shard-2of3.json") == shard_reports[1]
    assert not (out / "report.json").exists()
    capsys.readouterr()

    assert run_cli(["merge", str(manifest), "--from", str(out), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "merged 3 state DB(s)" in err
    assert "0 file(s) copied, 48 already there" in err
    merged = tasks_of(out)
    assert len(merged) == TASKS
    check_files(out, merged)

    # a merge from reports and files alone (no state DB): same tasks and outputs
    bare = tmp_path / "bare"
    shutil.copytree(out, bare, ignore=shutil.ignore_patterns(".flux-pipeline"))
    target = tmp_path / "from-reports"
    assert run_cli(["merge", str(manifest), "--from", str(bare), "--out", str(target)]) == 0
    # the merged report.json and the three shards' own
    assert "merged 0 state DB(s) and 4 report(s)" in capsys.readouterr().err
    assert shape(tasks_of(target)) == shape(merged)
    check_files(target, tasks_of(target))
