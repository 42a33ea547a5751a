"""The report files of real runs (simulator over loopback): report.md, index.html and
junit.xml say the same as report.json, for a run with successes, failures and chained
edits, an interrupted run, and a run stopped early then finished."""

from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import anyio
import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.simulator import SimConfig, SimulatorThread

from ..run.support import (
    admin_of,
    await_for,
    chained_manifest,
    report_tasks,
    run_inprocess,
    write_manifest,
)
from .support import card_of, junit_cases, parse_gallery

KEY = "report-key"
FOX_INK = "shot@subject=fox,style=ink#1"
SKULL_INK = "shot@subject=skull,style=ink#1"
SKULL_OIL = "shot@subject=skull,style=oil#1"


@pytest.mark.anyio
async def test_successes_failures_and_chained_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2 subjects x 2 styles, each edited once; every "skull" prompt is blocked. Exit 1:
    4 done (2 shots, their 2 edits), 2 failed, 2 edits never started."""
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    manifest = write_manifest(tmp_path, chained_manifest("mixed", ["fox", "skull"], ["ink", "oil"]))
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=0.2, block_words=("skull",))
    with SimulatorThread(config) as sim:
        result = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
    assert result.outcome.exit_code == 1, result.outcome
    tasks = report_tasks(out)
    states = {rid: t["state"] for rid, t in tasks.items()}
    # "succeeded" too: a task downloaded at the very end may show so (the xfail in
    # tests/run/test_report_consistency.py); the files below must agree with report.json
    assert sum(state in ("downloaded", "succeeded") for state in states.values()) == 4
    counts = Counter(states.values())
    fail_msg = tasks[SKULL_INK]["failMsg"]
    assert fail_msg
    assert tasks[SKULL_INK]["failCode"] == "CONTENT_VIOLATION"

    # report.md
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "**finished with failures** (exit 1)" in md
    assert counts["failed"] == counts["planned"] == 2
    for state, n in counts.items():
        assert f"| {state} | {n} |" in md, (state, md)
    assert "| **total** | 8 |" in md
    assert "- time taken: " in md
    assert "- tasks created (billed) in this run: 6" in md
    assert "## Failures (2)" in md
    assert f"- **`CONTENT_VIOLATION`** (2): `{SKULL_INK}`, `{SKULL_OIL}`" in md
    assert "## Resume" not in md
    assert summary.read_text(encoding="utf-8") == md

    # index.html
    gallery = parse_gallery(out / "index.html")
    assert gallery.scripts == 0
    assert len(gallery.cards) == 8
    for src in (str(img["src"]) for img in gallery.images):
        assert not src.startswith(("/", "file:", "http")), src
        assert (out / unquote(src)).is_file(), src
    for rid, task in tasks.items():
        card = card_of(gallery, rid)
        own = [o["path"] for o in task["outputs"]]
        if task["parent"] is None:
            assert card.images == own, rid
        else:  # lineage: the parent's image, then its own
            parent = tasks[task["parent"]]
            expected = [o["path"] for o in parent["outputs"]] + own
            assert card.images == expected, rid
        assert task["state"] in card.classes
    for rid in (SKULL_INK, SKULL_OIL):
        card = card_of(gallery, rid)
        assert "CONTENT_VIOLATION" in card.text
        assert tasks[rid]["failMsg"] in card.text
    edit_of_skull = card_of(gallery, SKULL_INK + "/edit#1")
    assert "not started: its parent failed" in edit_of_skull.text
    headings = [text for _, text in gallery.headings]
    assert headings == [
        "step shot",
        "subject=fox",
        "subject=skull",
        "step edit",
    ]
    fox_edit = card_of(gallery, FOX_INK + "/edit#1")
    assert "subject=fox, style=ink \u2192 edit #1" in fox_edit.text

    # junit.xml
    cases = junit_cases(out / "junit.xml")
    assert set(cases) == set(tasks)
    failures = {rid: case.find("failure") for rid, case in cases.items()}
    assert {rid for rid, f in failures.items() if f is not None} == {SKULL_INK, SKULL_OIL}
    failure = failures[SKULL_INK]
    assert failure is not None
    assert failure.attrib["type"] == "CONTENT_VIOLATION"
    assert failure.attrib["message"] == f"CONTENT_VIOLATION: {fail_msg}"
    skipped = {rid for rid, case in cases.items() if case.find("skipped") is not None}
    assert skipped == {rid for rid, state in states.items() if state in ("planned", "succeeded")}
    assert {SKULL_INK + "/edit#1", SKULL_OIL + "/edit#1"} <= skipped
    assert cases[FOX_INK].attrib["classname"] == "mixed.shot"

    # `flux-pipeline report` rewrites them offline, the same
    for name in ("index.html", "junit.xml", "report.md"):
        (out / name).unlink()
    code = await anyio.to_thread.run_sync(
        lambda: run_cli(["report", str(manifest), "--out", str(out)])
    )
    assert code == 0
    after = parse_gallery(out / "index.html")
    fresh = report_tasks(out)  # rewritten too, from the closed DB
    assert len(after.cards) == 8
    assert {str(img["src"]) for img in after.images} == {
        o["path"] for t in fresh.values() for o in t["outputs"]
    }
    assert {str(img["src"]) for img in gallery.images} <= {str(i["src"]) for i in after.images}
    assert set(junit_cases(out / "junit.xml")) == set(tasks)
    assert "## Failures (2)" in (out / "report.md").read_text(encoding="utf-8")


@pytest.mark.anyio
async def test_interrupted_run_reports_how_to_resume(tmp_path: Path) -> None:
    """A run cancelled while its tasks are in flight (what Ctrl-C in the middle of the engine
    amounts to) still writes every report; report.md says it was interrupted and shows the
    command that resumes it."""
    manifest = write_manifest(tmp_path, chained_manifest("halted", ["fox", "owl"], ["ink"]))
    out = tmp_path / "out dir"
    argv = ("run", str(manifest), "--out", str(out))
    config = SimConfig(api_keys=(KEY,), task_seconds=60.0, task_spread=0.0)
    with SimulatorThread(config) as sim:
        admin = admin_of(sim)

        async def created_both() -> bool:
            return int((await admin.astats())["creates"]) == 2

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: run_inprocess(
                        manifest, out, base_url=sim.base_url, api_key=KEY, argv=argv
                    )
                )
                await await_for(created_both, within=10, what="both roots created")
                await await_for(lambda: _submitted_in_db(out), within=10, what="taskIds recorded")
                scope.cancel()
    tasks = report_tasks(out)
    assert {t["state"] for rid, t in tasks.items() if "/" not in rid} == {"submitted"}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "**interrupted** (resumable)" in md
    assert "- stopped: interrupted" in md
    assert "## Resume" in md
    assert "4 task(s) not finished" in md
    assert f"```sh\nflux-pipeline {shlex.join(argv)}\n```" in md
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["run"]["stop_reason"] == "interrupted"
    gallery = parse_gallery(out / "index.html")
    assert gallery.images == []
    in_flight = [c for c in gallery.cards if "submitted" in c.classes]
    assert len(in_flight) == 2
    assert all("in flight at the API" in c.text for c in in_flight)
    assert sum("planned" in c.classes for c in gallery.cards) == 2
    cases = junit_cases(out / "junit.xml")
    assert all(case.find("skipped") is not None for case in cases.values())


async def _submitted_in_db(out: Path) -> bool:
    from ..run.support import db_rows, state_path

    rows = await anyio.to_thread.run_sync(db_rows, state_path(out))
    return sum(r.state == "submitted" for r in rows.values()) == 2


@pytest.mark.anyio
async def test_stopped_early_shows_resume_then_finished_does_not(tmp_path: Path) -> None:
    """``--max-new-tasks 2``: exit 3 and a Resume section; the same command again finishes
    (exit 0) and the report no longer has one."""
    manifest = write_manifest(
        tmp_path, chained_manifest("capped", ["fox", "owl"], ["ink"], chained=False)
    )
    out = tmp_path / "out"
    argv = ("run", str(manifest), "--max-new-tasks", "1")
    config = SimConfig(api_keys=(KEY,), task_seconds=0.2)
    with SimulatorThread(config) as sim:
        first = await run_inprocess(
            manifest, out, base_url=sim.base_url, api_key=KEY, max_new_tasks=1, argv=argv
        )
        md = (out / "report.md").read_text(encoding="utf-8")
        # not necessarily 1: the created task may show as "succeeded" (see the xfail in
        # tests/run/test_report_consistency.py); what matters is that the report agrees
        unfinished = sum(t["state"] != "downloaded" for t in report_tasks(out).values())
        second = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
    assert first.outcome.exit_code == 3, first.outcome
    assert "**stopped early (resumable: run the same command again)** (exit 3)" in md
    assert "## Resume" in md
    assert f"{unfinished} task(s) not finished" in md
    assert unfinished >= 1
    assert f"flux-pipeline {shlex.join(argv)}" in md
    assert second.outcome.exit_code == 0, second.outcome
    done = (out / "report.md").read_text(encoding="utf-8")
    assert "**all done** (exit 0)" in done
    assert "## Resume" not in done
    assert "## Failures" not in done
    outputs = [o["path"] for t in report_tasks(out).values() for o in t["outputs"]]
    assert [img["src"] for img in parse_gallery(out / "index.html").images] == outputs
