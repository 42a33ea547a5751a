"""How a run ends (docs/exit-codes.md): credits running out, a rejected key, content
violations, unreachable reference images, expired results.

In-process runs (``runner.execute``) against a ``SimulatorThread`` over loopback HTTP, except
where the command line's own output is the subject (the 401 test runs the CLI).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import pytest

from flux_pipeline.run.runner import RunResult
from flux_pipeline.simulator import Faults, ManualClock, SimConfig, SimulatorThread

from .support import (
    acli_json,
    admin_of,
    await_for,
    chained_manifest,
    check_outputs,
    clean_env,
    db_execute,
    db_rows,
    db_states,
    load_report,
    report_tasks,
    rewritten_report,
    run_argv,
    run_inprocess,
    settled_report,
    state_path,
    write_manifest,
)

KEY = "endings-key"


# --- credits --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_credits_run_out_mid_batch_then_a_rerun_finishes(tmp_path: Path) -> None:
    """Credits for 5 of 9 root tasks: exit 3, the 5 created are finished and downloaded, the
    rest (4 roots, every edit) planned; after a top-up the same command finishes the batch,
    creating each remaining task once.

    The simulator has no runtime API to change its balance (only faults and the clock), so the
    top-up sets the in-process simulator's ``credits.balance``: a restart would lose the
    tasks whose result URLs the chained edits reference.
    """
    manifest = write_manifest(
        tmp_path, chained_manifest("credits", ["fox", "owl", "bear"], ["ink", "oil", "pastel"])
    )
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=0.3, credits=25.0, cost_pro=5.0)
    with SimulatorThread(config) as sim:
        admin = admin_of(sim)
        first = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        stats = await admin.astats()
        assert load_report(out)["run"]["exit_code"] == 3
        status = await acli_json("status", str(manifest), "--json", "--out", str(out))
        by_state = status["counts"]
        report = await rewritten_report(manifest, out)

        assert first.outcome.exit_code == 3, first.outcome
        assert first.outcome.stop_reason is not None
        assert "insufficient credits" in first.outcome.stop_reason.lower()
        assert stats["creates"] == 5
        assert stats["credits_left"] == 0
        assert by_state["downloaded"] == 5
        assert by_state["planned"] == 18 - 5
        assert sum(by_state.values()) == 18
        assert check_outputs(out, report) == 5
        # the refused creates left nothing ambiguous behind
        assert {r.state for r in db_rows(state_path(out)).values()} <= {"planned", "downloaded"}

        sim.simulator.credits.balance = 1000.0
        second = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        stats = await admin.astats()
        report = await settled_report(manifest, out, base_url=sim.base_url, api_key=KEY, code=0)

    assert second.outcome.exit_code == 0, second.outcome
    assert second.outcome.created == 13
    assert {t["state"] for t in report["tasks"]} == {"downloaded"}
    assert check_outputs(out, report) == 18
    assert stats["creates"] == 18
    assert stats["duplicate_creates"] == 0


# --- a rejected key -------------------------------------------------------------------------


def _run_with_wrong_key(tmp_path: Path, sim: SimulatorThread) -> subprocess.CompletedProcess[str]:
    manifest = write_manifest(
        tmp_path, chained_manifest("auth", ["fox", "owl", "bear", "hare"], ["ink", "oil", "pastel"])
    )
    return subprocess.run(
        run_argv(manifest, tmp_path / "out"),
        env=clean_env(APIXO_API_KEY="wrong-key-Zq9", APIXO_BASE_URL=sim.base_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# Half of the answers are held back 0.5 s: the first 401 comes back while other creates are
# still in flight, as with any real API.
AUTH_SIM = SimConfig(
    api_keys=(KEY,), task_seconds=0.3, faults=Faults(slow_rate=0.5, slow_seconds=0.5)
)


def test_wrong_key_exits_2_with_one_error_line_and_creates_nothing(tmp_path: Path) -> None:
    """A 401: exit 2, the rejection said once on stderr, no traceback, nothing created."""
    with SimulatorThread(AUTH_SIM) as sim:
        result = _run_with_wrong_key(tmp_path, sim)
        stats = sim.stats()
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    # paths are left out: pytest's temporary directory may hold "401" (pytest-of-root/pytest-401)
    text = result.stderr.replace(str(tmp_path), "<tmp>")
    rejected = [line for line in text.splitlines() if "401" in line]
    assert len(rejected) == 1, result.stderr
    assert "APIXO_API_KEY" in rejected[0]
    assert "wrong-key-Zq9" not in result.stderr
    assert stats["creates"] == 0
    assert stats["requests_by_endpoint"].get("status", 0) == 0


@pytest.mark.anyio
async def test_wrong_key_leaves_nothing_ambiguous_and_the_fixed_rerun_completes(
    tmp_path: Path,
) -> None:
    """After a 401 nothing was billed, so nothing may be ambiguous: no row left
    ``submitting``, the summary says 0 created, and rerunning with the right key (no extra
    flag) finishes the batch, creating every task once."""
    with SimulatorThread(AUTH_SIM) as sim:
        result = _run_with_wrong_key(tmp_path, sim)
        out = tmp_path / "out"
        left = db_rows(state_path(out))
        rerun = await run_inprocess(
            tmp_path / "manifest.yaml", out, base_url=sim.base_url, api_key=KEY
        )
        stats = await admin_of(sim).astats()
    assert result.returncode == 2
    assert [r.readable_id for r in left.values() if r.state == "submitting"] == []
    assert "; 0 task(s) created" in result.stderr
    assert rerun.outcome.exit_code == 0, rerun.outcome
    assert stats["creates"] == 24
    assert stats["duplicate_creates"] == 0


# --- tasks the API fails --------------------------------------------------------------------


@pytest.mark.anyio
async def test_content_violations_fail_those_tasks_exit_1_others_done(tmp_path: Path) -> None:
    """Prompts with a blocked word fail with CONTENT_VIOLATION (and their edits never run);
    everything else is downloaded; exit 1; a rerun retries nothing."""
    manifest = write_manifest(
        tmp_path, chained_manifest("violations", ["fox", "skull", "owl"], ["ink", "oil"])
    )
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=0.3, block_words=("skull",))
    with SimulatorThread(config) as sim:
        result = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        rerun = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        stats = await admin_of(sim).astats()
    assert result.outcome.exit_code == 1, result.outcome
    tasks = report_tasks(out)
    failed = {rid: t["failCode"] for rid, t in tasks.items() if t["state"] == "failed"}
    assert failed == {
        "shot@subject=skull,style=ink#1": "CONTENT_VIOLATION",
        "shot@subject=skull,style=oil#1": "CONTENT_VIOLATION",
    }
    assert all(t["failMsg"] for rid, t in tasks.items() if rid in failed)
    done = [rid for rid, t in tasks.items() if t["state"] == "downloaded"]
    assert len(done) == 8  # 4 shots + their 4 edits
    assert all("skull" not in rid for rid in done)
    never_run = {rid for rid, t in tasks.items() if t["state"] == "planned"}
    assert never_run == {f"{rid}/edit#1" for rid in failed}
    assert check_outputs(out, load_report(out)) == 8
    assert rerun.outcome.exit_code == 1
    assert rerun.outcome.created == 0
    assert stats["creates"] == 10


@pytest.mark.anyio
async def test_unreachable_reference_images_fail_invalid_image_url_exit_1(tmp_path: Path) -> None:
    """A reference image on a host the API cannot reach: those tasks fail with
    INVALID_IMAGE_URL, the others (same step, another host) are done; exit 1."""
    manifest = write_manifest(
        tmp_path,
        """\
version: 1
name: unreachable
defaults:
  input: {mode: pro, aspect_ratio: "1:1", output_format: jpeg}
image_sets:
  products:
    - {name: mug, url: "https://img.unreachable.test/mug.jpg"}
    - {name: tee, url: "https://cdn.example.com/tee.jpg"}
steps:
  - id: shot
    matrix:
      product: {image_set: products}
      style: [ink, oil]
    prompt: "the {{ product.name }} in {{ style }}"
    images: ["{{ product.url }}"]
""",
    )
    out = tmp_path / "out"
    config = SimConfig(
        api_keys=(KEY,), task_seconds=0.3, unreachable_hosts=("img.unreachable.test",)
    )
    with SimulatorThread(config) as sim:
        result = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        report = await settled_report(manifest, out, base_url=sim.base_url, api_key=KEY, code=1)
    assert result.outcome.exit_code == 1, result.outcome
    tasks = {t["readable_id"]: t for t in report["tasks"]}
    assert {rid: (t["state"], t["failCode"]) for rid, t in tasks.items()} == {
        "shot@product=mug,style=ink#1": ("failed", "INVALID_IMAGE_URL"),
        "shot@product=mug,style=oil#1": ("failed", "INVALID_IMAGE_URL"),
        "shot@product=tee,style=ink#1": ("downloaded", None),
        "shot@product=tee,style=oil#1": ("downloaded", None),
    }
    assert check_outputs(out, report) == 2


# --- expired results ------------------------------------------------------------------------


async def _run_while(
    manifest: Path, out: Path, sim: SimulatorThread, when_created: int, advance: float
) -> RunResult:
    """Run in-process; once ``when_created`` tasks exist, move the manual clock ``advance``."""
    admin = admin_of(sim)
    results: list[RunResult] = []

    async def run() -> None:
        results.append(await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY))

    async def created() -> bool:
        creates: int = (await admin.astats())["creates"]
        return creates >= when_created

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await await_for(created, within=20, what=f"{when_created} creates")
            await admin.aadvance(advance)
    return results[0]


@pytest.mark.anyio
async def test_results_that_expire_before_download_end_expired_exit_1_once(
    tmp_path: Path,
) -> None:
    """Manual clock, results live 60 s. (1) Tasks that succeed but whose results are already
    gone when the run gets to them: state ``expired``, exit 1. (2) What a crash between
    "succeeded" and the file landing leaves (a ``succeeded`` row, no file), and a downloaded
    task whose file was deleted, both resumed after the TTL: ``expired`` too. (3) Reruns
    then hold every expired task: exit 1, no API request, no download, ever."""
    config = SimConfig(api_keys=(KEY,), task_seconds=10.0, task_spread=0.0, result_ttl=60.0)
    late = write_manifest(
        tmp_path, chained_manifest("late", ["fox", "owl"], ["ink"], chained=False), "late.yaml"
    )
    timely = write_manifest(
        tmp_path,
        chained_manifest("timely", ["bear", "hare", "lynx"], ["oil"], chained=False),
        "timely.yaml",
    )
    late_out, timely_out = tmp_path / "late", tmp_path / "timely"
    with SimulatorThread(config, clock=ManualClock()) as sim:
        admin = admin_of(sim)
        # (1) the clock jumps past completion + TTL before the first poll sees success
        first = await _run_while(late, late_out, sim, when_created=2, advance=1000.0)
        assert first.outcome.exit_code == 1, first.outcome
        assert set(db_states(late_out).values()) == {"expired"}

        # (2) three tasks done in time, then two of them lose their files, one its row state
        done = await _run_while(timely, timely_out, sim, when_created=5, advance=20.0)
        assert done.outcome.exit_code == 0, done.outcome
        tasks = {t["readable_id"]: t for t in (await rewritten_report(timely, timely_out))["tasks"]}
        crashed, deleted = "shot@subject=bear,style=oil#1", "shot@subject=hare,style=oil#1"
        for rid in (crashed, deleted):
            (timely_out / tasks[rid]["outputs"][0]["path"]).unlink()
        changed = db_execute(
            state_path(timely_out),
            "UPDATE tasks SET state = 'succeeded', downloaded_at = NULL WHERE readable_id = ?",
            (crashed,),
        )
        assert changed == 1
        db_execute(
            state_path(timely_out), "DELETE FROM outputs WHERE key = ?", (tasks[crashed]["key"],)
        )
        await admin.aadvance(1000.0)
        resumed = await run_inprocess(timely, timely_out, base_url=sim.base_url, api_key=KEY)
        assert resumed.outcome.exit_code == 1, resumed.outcome
        assert resumed.outcome.created == 0
        assert db_states(timely_out) == {
            crashed: "expired",
            deleted: "expired",
            "shot@subject=lynx,style=oil#1": "downloaded",
        }

        # (3) nothing is retried by a plain rerun
        before = await admin.astats()
        for manifest, out in ((late, late_out), (timely, timely_out)):
            with anyio.fail_after(10):
                again = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
            assert again.outcome.exit_code == 1
            assert again.outcome.created == 0
        after = await admin.astats()
    assert after["requests_by_endpoint"] == before["requests_by_endpoint"]
    assert after["creates"] == 5
    late_tasks = report_tasks(late_out).values()  # written by the no-op rerun
    assert {(t["state"], t["failCode"]) for t in late_tasks} == {("expired", "RESULT_EXPIRED")}
    assert len(late_tasks) == 2
