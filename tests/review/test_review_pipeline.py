"""Decisions drive the pipeline: ``from: {step, only: ...}`` end to end, the CLI against the
simulator over real HTTP. A first run makes the parents and holds their chained tasks for
review (exit 0, not failures); a review file picking two makes the rerun create exactly those
two chained tasks and nothing else."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.report.reviewfile import Decision, write_review
from flux_pipeline.simulator import SimulatorThread
from tests.run.support import cli, quick_sim, sim_tasks, spawn_run, write_manifest

KEY = "sim-review-pipeline-key"
RUNS = itertools.count()


def manifest_text(only: str, results: str = "png") -> str:
    return f"""\
version: 1
name: reviewed
defaults:
  input: {{mode: pro, aspect_ratio: "1:1", output_format: {results}}}
steps:
  - id: hero
    matrix:
      n: [a, b, c, d, e]
    prompt: "picture {{{{ n }}}}"
  - id: banner
    from: {{step: hero, only: {only}}}
    prompt: "banner of {{{{ parent.n }}}}"
"""


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with quick_sim(KEY) as thread:
        yield thread


def run(sim: SimulatorThread, manifest: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    out = manifest.parent / "out"
    proc = spawn_run(
        manifest,
        out,
        "--no-lock",
        "--json",
        *extra,
        base_url=sim.base_url,
        api_key=KEY,
        logs=manifest.parent / "logs",
        tag=f"run{next(RUNS)}",
    )
    code = proc.proc.wait(timeout=120)
    text = proc.output()
    line = next(ln for ln in text.splitlines() if ln.startswith("{"))
    return code, json.loads(line), text


def prompts(sim: SimulatorThread) -> list[str]:
    return sorted(t["request"]["input"]["prompt"] for t in sim_tasks(sim))


def report(manifest: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((manifest.parent / "out" / "report.json").read_text())
    return data


def pick(manifest: Path, picked: list[str], rejected: list[str] = ()) -> None:  # type: ignore[assignment]
    tasks = {t["readable_id"]: t for t in report(manifest)["tasks"]}
    decisions = {}
    for verdict, ids in (("picked", picked), ("rejected", rejected)):
        for rid in ids:
            decisions[tasks[rid]["key"]] = Decision(verdict, rid, tasks[rid]["step"])
    write_review(manifest.with_name("manifest.review.json"), "manifest.yaml", decisions)


def test_only_picked_holds_children_then_creates_exactly_the_picked(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path, manifest_text("picked"))
    code, result, text = run(sim, manifest)
    assert code == 0, text
    assert result["created"] == 5
    assert "held for review: 5 parent(s) of step banner (from.only: picked)" in text
    assert prompts(sim) == [f"picture {n}" for n in "abcde"]
    head = report(manifest)
    assert sorted(t["step"] for t in head["tasks"]) == ["hero"] * 5  # nothing failed, held
    banner = head["review"]["steps"]["banner"]
    assert banner["held"] == 5
    assert banner["admitted"] == 0
    assert head["review"]["steps"]["hero"] == {
        "picked": 0,
        "rejected": 0,
        "undecided": 5,
    }
    assert "5 parent(s) held for review" in (tmp_path / "out" / "report.md").read_text()

    pick(manifest, ["hero@n=b#1", "hero@n=d#1"], rejected=["hero@n=a#1"])
    code, plan_text = cli("plan", str(manifest), "--no-lock", "--out", str(tmp_path / "out"))
    assert code == 0, plan_text
    assert "review: 2 picked, 1 rejected, 2 undecided (step hero)" in plan_text
    assert "review: step banner: 2 tasks from picked parents, 3 parents held for review" in (
        plan_text
    )
    before = len(sim_tasks(sim))
    code, result, text = run(sim, manifest)
    assert code == 0, text
    assert result["created"] == 2
    assert len(sim_tasks(sim)) == before + 2
    assert prompts(sim)[:2] == ["banner of b", "banner of d"]
    head = report(manifest)
    assert head["review"]["steps"]["hero"] == {"picked": 2, "rejected": 1, "undecided": 2}
    assert head["review"]["steps"]["banner"]["held"] == 3
    done = sorted(t["readable_id"] for t in head["tasks"] if t["step"] == "banner")
    assert done == ["hero@n=b#1/banner#1", "hero@n=d#1/banner#1"]

    # the same decisions again: nothing more is created
    code, result, text = run(sim, manifest)
    assert code == 0, text
    assert result["created"] == 0
    assert len(sim_tasks(sim)) == before + 2


def test_not_rejected_chains_all_but_the_rejected(sim: SimulatorThread, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, manifest_text("picked"))  # the parents first
    code, result, text = run(sim, manifest)
    assert code == 0, text
    write_manifest(tmp_path, manifest_text("not-rejected"))  # the same task keys
    pick(manifest, [], rejected=["hero@n=c#1", "hero@n=e#1"])
    code, result, text = run(sim, manifest)
    assert code == 0, text
    assert result["created"] == 3
    assert [p for p in prompts(sim) if p.startswith("banner")] == [
        "banner of a",
        "banner of b",
        "banner of d",
    ]


def test_no_review_flag_ignores_the_file(sim: SimulatorThread, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, manifest_text("picked"))
    code, result, text = run(sim, manifest)
    assert code == 0, text
    write_manifest(tmp_path, manifest_text("not-rejected"))
    pick(manifest, [], rejected=["hero@n=a#1"])
    code, result, text = run(sim, manifest, "--no-review")
    assert code == 0, text
    assert result["created"] == 5  # every banner: the rejection was ignored


def test_bad_review_file_exit_2_before_anything_is_sent(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    manifest = write_manifest(tmp_path, manifest_text("picked"))
    (tmp_path / "manifest.review.json").write_text('{"format": 1, "manifest": "manifest.yaml"}')
    out = tmp_path / "out"
    proc = spawn_run(
        manifest,
        out,
        "--no-lock",
        base_url=sim.base_url,
        api_key=KEY,
        logs=tmp_path / "logs",
        tag="bad",
    )
    assert proc.proc.wait(timeout=60) == 2
    text = proc.output()
    assert "manifest.review.json: missing required key 'decisions'" in text
    assert "Traceback" not in text
    assert sim_tasks(sim) == []


def test_held_chains_in_a_multi_image_parent_follow_the_gate(tmp_path: Path) -> None:
    """A parent's second image is chained at run time (plan/children.py): the gate holds it
    as it holds image 0, and admits both once the parent is picked."""
    with quick_sim(KEY, results_per_task=2) as sim:
        manifest = write_manifest(tmp_path, manifest_text("picked"))
        code, result, text = run(sim, manifest)
        assert code == 0, text
        assert result["created"] == 5
        pick(manifest, ["hero@n=a#1"])
        code, result, text = run(sim, manifest)
        assert code == 0, text
        assert result["created"] == 2
        assert [p for p in prompts(sim) if p.startswith("banner")] == ["banner of a"] * 2


def test_merge_holds_the_same_tasks_as_run(sim: SimulatorThread, tmp_path: Path) -> None:
    """A merge of a gated run exits like the run (0): the held chained tasks are not counted
    unfinished."""
    import subprocess
    import sys

    from tests.run.support import clean_env

    manifest = write_manifest(tmp_path, manifest_text("picked"))
    code, _, text = run(sim, manifest)
    assert code == 0, text
    argv = [sys.executable, "-m", "flux_pipeline", "merge", str(manifest), "--from"]
    argv += [str(tmp_path / "out"), "--out", str(tmp_path / "merged")]
    done = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())
    assert merged["buckets"]["not started"] == 0
    assert merged["review"]["steps"]["banner"]["held"] == 5


def test_new_decisions_rewrite_a_report_the_state_left_current(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    """A rejection creates nothing and changes no row of the state DB, yet the report must
    count it: the report's head records the decisions it was made with."""
    manifest = write_manifest(tmp_path, manifest_text("picked"))
    code, _, text = run(sim, manifest)
    assert code == 0, text
    pick(manifest, [], rejected=["hero@n=a#1"])
    code, result, text = run(sim, manifest)
    assert code == 0, text
    assert result["created"] == 0
    assert report(manifest)["review"]["steps"]["hero"]["rejected"] == 1


def test_regenerate_rejected_makes_new_images_of_the_rejected_only(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    """One command regenerates what the reviewer rejected (plan/generations.py): a new key
    each, paid once, the others untouched; the new images are undecided, so their chained
    tasks stay held until picked."""
    manifest = write_manifest(tmp_path, manifest_text("picked"))
    code, result, text = run(sim, manifest)
    assert code == 0, text
    pick(manifest, ["hero@n=b#1"], rejected=["hero@n=a#1", "hero@n=c#1"])
    before = {t["readable_id"]: t["key"] for t in report(manifest)["tasks"]}
    code, plan_text = cli(
        "plan", str(manifest), "--no-lock", "--out", str(tmp_path / "out"), "--regenerate-rejected"
    )
    assert code == 0, plan_text
    assert "--regenerate: 2 task(s) to a new generation" in plan_text
    assert "would create 3 task(s)" in plan_text  # a, c again; b's banner
    code, result, text = run(sim, manifest, "--regenerate-rejected")
    assert code == 0, text
    assert result["created"] == 3
    after = {t["readable_id"]: t["key"] for t in report(manifest)["tasks"]}
    changed = sorted(rid for rid, key in after.items() if before.get(rid) != key)
    assert changed == ["hero@n=a#1", "hero@n=b#1/banner#1", "hero@n=c#1"]
    head = report(manifest)
    assert head["review"]["steps"]["hero"] == {"picked": 1, "rejected": 0, "undecided": 4}
    code, result, text = run(sim, manifest)  # the new generations stay, nothing re-made
    assert code == 0, text
    assert result["created"] == 0
