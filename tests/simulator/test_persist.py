"""The simulator's state across restarts (``simulator/persist.py``, docs/simulator.md):
``flux-pipeline sim --state PATH`` over real HTTP, malformed state files, and the size and
cost of a state with 100,000 tasks."""

from __future__ import annotations

import base64
import json
import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from flux_pipeline.simulator import ManualClock, SimConfig, Simulator
from flux_pipeline.simulator.persist import StateError, StateFile
from flux_pipeline.simulator.validation import parse_create

from ..run.support import SimProcess, clean_env, wait_for
from .helpers import AUTH, CREATE, STATUS

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def create_task(client: httpx.Client, prompt: str, **inp: object) -> str:
    answer = client.post(CREATE, json={"input": {"prompt": prompt, **inp}}, headers=AUTH)
    assert answer.json()["code"] == 200, answer.text
    task_id = answer.json()["data"]["taskId"]
    assert isinstance(task_id, str)
    return task_id


def status(client: httpx.Client, task_id: str) -> dict[str, object]:
    answer = client.get(STATUS, params={"taskId": task_id}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert isinstance(data, dict)
    return data


def result_url(data: dict[str, object]) -> str:
    urls = json.loads(str(data["resultJson"]))["resultUrls"]
    assert isinstance(urls[0], str)
    return urls[0]


def test_sim_state_keeps_tasks_images_credits_and_its_port_across_a_restart(
    tmp_path: Path,
) -> None:
    state = tmp_path / "sim.db"
    args = ("--state", str(state), "--task-seconds", "1", "--task-spread", "0", "--credits", "100")
    with SimProcess(tmp_path, *args) as sim, httpx.Client(base_url=sim.base_url) as client:
        first_url = sim.base_url
        done = create_task(client, "a lighthouse at dusk")
        wait_for(lambda: status(client, done)["state"] == "success", timeout=20, what="success")
        before = status(client, done)
        image = client.get(result_url(before))
        assert image.status_code == 200
        inline = "data:image/png;base64," + base64.b64encode(PNG_1X1 * 40).decode()
        in_flight = create_task(client, "a ship in a bottle", image_urls=[inline])
        assert status(client, in_flight)["state"] in ("pending", "processing")
    # stopped (SIGTERM) before the second task was due: its time goes on while stopped
    with SimProcess(tmp_path, *args) as sim, httpx.Client(base_url=sim.base_url) as client:
        assert sim.base_url == first_url  # --port 0 with a state: the port served before
        assert status(client, done) == before
        again = client.get(result_url(before))
        assert again.content == image.content
        wait_for(lambda: status(client, in_flight)["state"] == "success", timeout=20, what="it")
        stats = sim.stats()
        assert stats["creates"] == 2
        assert stats["credits_spent"] == 10
        assert stats["credits_left"] == 90
        assert stats["tasks_by_state"]["success"] == 2
        created = status(client, create_task(client, "a lighthouse at dusk"))
        assert created["taskId"] not in (done, in_flight)
        assert sim.stats()["duplicate_creates"] == 1  # the same input as before the restart


def test_sim_state_on_another_port_still_accepts_its_old_result_urls(tmp_path: Path) -> None:
    state = tmp_path / "sim.db"
    args = ("--state", str(state), "--task-seconds", "0.2", "--task-spread", "0")
    with SimProcess(tmp_path, *args) as sim, httpx.Client(base_url=sim.base_url) as client:
        parent = create_task(client, "a red kite")
        wait_for(lambda: status(client, parent)["state"] == "success", timeout=20, what="it")
        old_url = result_url(status(client, parent))
    with (
        SimProcess(tmp_path, *args) as squatter,  # holds the port: the next one moves
        SimProcess(tmp_path, *args) as sim,
        httpx.Client(base_url=sim.base_url) as client,
    ):
        assert squatter.base_url in old_url
        assert sim.base_url not in old_url
        new_url = result_url(status(client, parent))  # the task's URLs follow the simulator
        assert new_url.startswith(sim.base_url)
        assert client.get(new_url).status_code == 200
        child = create_task(client, "the kite, in the rain", image_urls=[old_url])
        gone = create_task(client, "a missing one", image_urls=[old_url.replace(parent, "x")])
        wait_for(lambda: status(client, gone)["state"] == "failed", timeout=20, what="gone")
        wait_for(lambda: status(client, child)["state"] == "success", timeout=20, what="child")
        assert status(client, gone)["failCode"] == "INVALID_IMAGE_URL"
        assert sim.stats()["requests_by_endpoint"].get("results_internal", 0) == 0


def _sqlite(path: Path, *statements: str) -> None:
    db = sqlite3.connect(path)
    with db:
        for statement in statements:
            db.execute(statement)
    db.close()


def _saved_state(path: Path) -> None:
    """A good state with one task, written by the simulator itself."""
    state = StateFile.open(path)
    sim = Simulator(SimConfig(), ManualClock(), state)
    sim.create("sim-key", parse_create({"input": {"prompt": "p"}}), "http://127.0.0.1:9")
    sim.save()
    state.close()


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xffnot a database" * 100)


def _json(path: Path) -> None:
    path.write_text('{"tasks": []}', encoding="utf-8")


def _other_tables(path: Path) -> None:
    _sqlite(path, "CREATE TABLE tasks (key TEXT)", "INSERT INTO tasks VALUES ('x')")


def _trigger(path: Path) -> None:
    _saved_state(path)
    _sqlite(path, "CREATE TRIGGER t AFTER INSERT ON tasks BEGIN DELETE FROM meta; END")


def _bad_time(path: Path) -> None:
    _saved_state(path)
    _sqlite(path, "UPDATE tasks SET due = 'soon'")


def _bad_request(path: Path) -> None:
    _saved_state(path)
    _sqlite(path, """UPDATE tasks SET request = '{"input": {"prompt": ""}}'""")


def _deep_request(path: Path) -> None:
    _saved_state(path)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE tasks SET request = ?", ("[" * 100_000 + "]" * 100_000,))
    db.close()


def _bad_stats(path: Path) -> None:
    _saved_state(path)
    db = sqlite3.connect(path)
    meta = json.loads(db.execute("SELECT value FROM meta").fetchone()[0])
    db.close()
    meta["stats"]["creates"] = -3
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = ?", (json.dumps(meta),))
    db.close()


def _truncated(path: Path) -> None:
    _saved_state(path)
    path.write_bytes(path.read_bytes()[:1500])


MALFORMED = [
    _garbage,
    _json,
    _other_tables,
    _trigger,
    _bad_time,
    _bad_request,
    _deep_request,
    _bad_stats,
]


@pytest.mark.parametrize("make", [*MALFORMED, _truncated], ids=lambda f: f.__name__.strip("_"))
def test_a_malformed_state_is_refused_by_load_with_one_line(tmp_path: Path, make: object) -> None:
    path = tmp_path / "sim.db"
    assert callable(make)
    make(path)
    with pytest.raises(StateError) as caught:
        StateFile.load(path)
    assert "\n" not in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("make", MALFORMED, ids=lambda f: f.__name__.strip("_"))
def test_sim_refuses_a_malformed_state_with_exit_2_and_leaves_it(
    tmp_path: Path, make: object
) -> None:
    path = tmp_path / "sim.db"
    assert callable(make)
    make(path)
    content = path.read_bytes()
    result = subprocess.run(
        [sys.executable, "-m", "flux_pipeline", "sim", "--port", "0", "--state", str(path)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "simulator state not loaded" in result.stderr
    assert path.read_bytes() == content


def test_open_afresh_sets_a_malformed_state_aside(tmp_path: Path) -> None:
    path = tmp_path / "sim.db"
    _garbage(path)
    state = StateFile.open(path, afresh=True)
    assert state.saved is None
    assert state.problem is not None
    assert path.with_name("sim.db.bad").read_bytes().startswith(b"\x00\xffnot")
    state.close()
    assert StateFile.load(path) is None  # an empty, valid state until the first save


PERSISTED = 20_000  # tasks in the state of the size test


@pytest.mark.slow
def test_a_state_of_20000_tasks_stays_small_and_saves_what_changed(tmp_path: Path) -> None:
    """Task records only (no images), each written once and updated once: the first save is
    one insert per task, the save after they all finished one small update each, and a save
    with nothing new writes only the counters. (20,000 tasks: what is measured is the bytes
    and the writes per task, which do not depend on how many there are.)"""
    path = tmp_path / "sim.db"
    clock = ManualClock()
    state = StateFile.open(path)
    config = SimConfig(task_seconds=10, max_concurrent=2 * PERSISTED, rpm=10**9)
    sim = Simulator(config, clock, state)
    prompt = "A watercolor of the Acme lamp on a plain background, soft light, centred"
    request = parse_create({"input": {"prompt": prompt, "aspect_ratio": "16:9"}})
    for _ in range(PERSISTED):
        sim.create("sim-key", request, "http://127.0.0.1:9")
    started = time.perf_counter()
    sim.save()
    inserts = time.perf_counter() - started
    size = path.stat().st_size
    assert size < PERSISTED * 300, size  # bytes per task: its record, no image
    clock.advance(3600)
    sim.settle()  # every task finishes (the simulator's own work, not the save's)
    started = time.perf_counter()
    sim.save()
    updates = time.perf_counter() - started
    started = time.perf_counter()
    sim.save()
    assert time.perf_counter() - started < 0.5  # nothing changed: the counters only
    state.close()
    assert path.stat().st_size < PERSISTED * 350  # finished: a few more bytes per record
    assert inserts < 30.0, inserts
    assert updates < max(30.0, 2 * inserts), updates
    saved = StateFile.load(path)
    assert saved is not None
    assert len(saved.tasks) == PERSISTED
    assert all(task.completed is not None for task in saved.tasks)
    restored = Simulator(config, ManualClock(clock()), StateFile(path, saved))
    assert restored.snapshot()["tasks_by_state"]["success"] == PERSISTED
    assert math.isclose(restored.snapshot()["credits_spent"], 5 * PERSISTED)


def test_time_goes_on_while_stopped_tasks_finish_and_results_expire(tmp_path: Path) -> None:
    path = tmp_path / "sim.db"
    clock = ManualClock()
    config = SimConfig(task_seconds=10, task_spread=0)
    state = StateFile.open(path)
    sim = Simulator(config, clock, state)
    callback = {"request_type": "callback", "callback_url": "http://127.0.0.1:9/cb"}
    first = sim.create("sim-key", parse_create({"input": {"prompt": "a"}}), "http://h:1")
    clock.advance(20)
    sim.settle()
    second = sim.create(
        "sim-key", parse_create({"input": {"prompt": "b"}, **callback}), "http://h:1"
    )
    sim.save()
    state.close()
    assert sim.status("sim-key", second)["state"] in ("pending", "processing")

    def restarted(after: float) -> Simulator:
        return Simulator(config, ManualClock(clock() + after), StateFile.open(path))

    later = restarted(60)  # the second task's time passed while stopped
    later.settle()
    assert later.status("sim-key", second)["state"] == "success"
    assert (
        later.status("sim-key", second)["completeTime"]
        == sim.status("sim-key", second)["createTime"] + 10_000
    )
    assert later.stats.callbacks_skipped == 1  # it fell due while no one could be called
    assert later.result_available(later.task_for(None, first), 0)
    expired = restarted(15 * 24 * 3600)  # 15 days of wall time: the first result is gone
    assert not expired.result_available(expired.task_for(None, first), 0)
    assert expired.result_available(expired.task_for(None, second), 0)
