"""Counts that add up: for one state, the run's outcome (its last line), report.json's
``buckets``, report.md and ``status`` show the same buckets and the same verdict; "created
(billed)" counts only taskIds the API returned.

The state: a chained batch where two shots fail (content violation: their edits are blocked),
then one finished shot and another shot's edit are forced back to ``submitting`` (what a lost
answer leaves). A plain rerun holds both: exit 1 (a rerun makes no progress), the one
message names them and what ``--resubmit-ambiguous`` costs at most.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from flux_pipeline.cli.run_cmd import _summary
from flux_pipeline.outcome import Buckets
from flux_pipeline.simulator import SimConfig, SimulatorThread

from .support import (
    acli_json,
    admin_of,
    chained_manifest,
    cli,
    db_execute,
    load_report,
    lock_file,
    run_inprocess,
    state_path,
    write_manifest,
)

KEY = "counts-key"


def _buckets(data: dict[str, int]) -> Buckets:
    return Buckets(**{name.replace(" ", "_"): n for name, n in data.items()})


@pytest.mark.anyio
async def test_run_report_and_status_show_the_same_buckets(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path, chained_manifest("counts", ["fox", "skull", "owl", "bear"], ["ink", "oil"])
    )
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=0.2, block_words=("skull",))
    root, edit = "shot@subject=fox,style=ink#1", "shot@subject=owl,style=oil#1/edit#1"
    with SimulatorThread(config) as sim:
        first = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        assert first.outcome.buckets == Buckets(done=12, failed=2, blocked=2)
        assert first.outcome.created == 14  # the two refused edits were never created
        changed = db_execute(
            state_path(out),
            "UPDATE tasks SET state = 'submitting', task_id = NULL WHERE readable_id IN (?, ?)",
            (root, edit),
        )
        assert changed == 2
        lock_file(manifest).unlink()  # what such a crash leaves: no lock knows their taskIds
        held = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        creates = (await admin_of(sim).astats())["creates"]
        status = await acli_json("status", str(manifest), "--json", "--out", str(out))
        code, text = await anyio.to_thread.run_sync(
            lambda: cli("status", str(manifest), "--out", str(out))
        )

    outcome = held.outcome
    # the held shot's own edit is downloaded (its row says so): done, as the report says
    expected = Buckets(done=10, failed=2, blocked=2, ambiguous=2)
    assert outcome.buckets == expected
    assert outcome.exit_code == 1
    assert outcome.created == 0
    assert creates == 14
    report = load_report(out)
    assert _buckets(report["buckets"]) == expected
    assert report["run"]["exit_code"] == 1
    assert _buckets(status["buckets"]) == expected
    assert status["verdict"]["exit_code"] == 1

    line = _summary(outcome, str(out))
    summary = expected.summary()
    assert f"finished with failures: {summary}; 0 task(s) created (billed)" in line
    message = (
        f"2 ambiguous task(s) held (create sent, answer lost: may have been billed): "
        f"{root}, {edit}."
    )
    assert message in line
    assert "at most 2 more task(s) billed" in line

    md = (out / "report.md").read_text()
    assert f"Tasks: {summary}" in md
    assert "at most 2 more task(s) billed" in md
    assert "## Resume" not in md  # a rerun makes no progress: nothing to resume

    assert code == 0
    assert f"finished with failures (exit 1): {summary}" in text
    assert message in text
