"""SimulatorThread and the `flux-pipeline sim` command."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from click.testing import CliRunner

from flux_pipeline.simulator import ManualClock, SimConfig, SimulatorThread
from flux_pipeline.simulator.cli import sim as sim_command

from .helpers import AUTH, CREATE

LINE = re.compile(r"^flux-pipeline simulator listening on (http://127\.0\.0\.1:(\d+))$")


def test_thread_serves_on_a_free_loopback_port() -> None:
    with SimulatorThread(SimConfig(), port=0) as sim:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sim.base_url)
        assert sim.port > 0
        with httpx.Client(trust_env=False) as client:
            created = client.post(
                f"{sim.base_url}{CREATE}", json={"input": {"prompt": "x"}}, headers=AUTH
            )
        assert created.json()["code"] == 200
        stats = sim.stats()
        assert stats["creates"] == 1
        assert stats["requests_by_endpoint"] == {"create": 1}


def test_thread_manual_clock_and_faults_helpers() -> None:
    clock = ManualClock()
    with SimulatorThread(SimConfig(), clock=clock) as sim:
        sim.advance(10)
        assert clock() == ManualClock()() + 10
        assert sim.set_faults(error_rate=0.25)["error_rate"] == 0.25


def test_thread_refuses_non_loopback_hosts() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SimulatorThread(SimConfig(), host="0.0.0.0")


@contextmanager
def sim_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flux_pipeline", "sim", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().rstrip("\n")
        match = LINE.match(line)
        assert match, (line, proc.stderr.read() if proc.stderr and proc.poll() is not None else "")
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_announces_its_port_serves_and_exits_0_on_signals(signum: int) -> None:
    with sim_process("--task-seconds", "0.1", "--api-key", "k1", "--manual-clock") as (proc, url):
        with httpx.Client(base_url=url, trust_env=False) as client:
            created = client.post(
                CREATE, json={"input": {"prompt": "x"}}, headers={"Authorization": "Bearer k1"}
            )
            assert created.json()["code"] == 200
            advanced = client.post("/_sim/clock", json={"advance": 5})
            assert advanced.status_code == 200
            assert client.get("/_sim/stats").json()["tasks_by_state"]["success"] == 1
        proc.send_signal(signum)
        assert proc.wait(timeout=15) == 0


def test_cli_refuses_a_public_host() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flux_pipeline", "sim", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "loopback" in result.stderr
    assert result.stdout == ""


def test_cli_help_lists_every_knob() -> None:
    result = CliRunner().invoke(sim_command, ["--help"])
    assert result.exit_code == 0
    for flag in (
        "--host", "--port", "--api-key", "--task-seconds", "--task-spread", "--time-scale",
        "--max-concurrent", "--rpm", "--rate-window", "--credits", "--cost-pro", "--cost-max",
        "--result-ttl", "--block-word", "--unreachable-host", "--results-per-task",
        "--image-size", "--seed", "--manual-clock", "--error-rate", "--drop-rate",
        "--drop-after", "--slow-rate", "--slow-seconds", "--truncate-rate", "--errors-as-200",
        "--rate-limit-burst",
    ):  # fmt: skip
        assert flag in result.output
