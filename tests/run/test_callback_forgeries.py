"""Forged callbacks against the receiver of a real CLI run: deep JSON, garbage, a body cut
off, a body that never ends, a wrong secret. Each is one counted line on standard error,
never a traceback, and the run finishes as if they never came (run/receiver.py)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx

from flux_pipeline.simulator import SimConfig, SimulatorThread

from .support import (
    admin_of,
    clean_env,
    roots_manifest,
    run_argv,
    sim_tasks,
    wait_for,
    write_manifest,
)

KEY = "forgeries-key-0123"


def _raw_post(url: httpx.URL, body: bytes, length: int) -> socket.socket:
    """A POST whose headers promise ``length`` bytes and whose body is ``body``: the socket
    is left open (close it to cut the body off)."""
    sock = socket.create_connection((url.host, url.port or 80), timeout=5)
    head = (
        f"POST {url.raw_path.decode()} HTTP/1.1\r\nhost: {url.host}\r\n"
        f"content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_forged_callbacks_are_one_counted_line_each_never_a_traceback(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, roots_manifest("forgeries", 1))
    config = SimConfig(api_keys=(KEY,), task_seconds=3.0, task_spread=0.0)
    with SimulatorThread(config) as sim:
        env = clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
        argv = run_argv(manifest, tmp_path / "out", "--request-type", "callback")
        with subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            wait_for(lambda: bool(sim_tasks(sim)), timeout=20, what="the run's create")
            task = sim_tasks(sim)[0]
            callback = admin_of(sim).task(task["taskId"])["request"]["callback_url"]
            url = httpx.URL(callback)
            with httpx.Client(trust_env=False, timeout=10) as client:
                deep = b"[" * 30_000 + b"]" * 30_000  # within the size cap, past the depth cap
                codes = [
                    client.post(callback, content=deep).status_code,
                    client.post(callback, content=b"\xff\x00garbage\n{").status_code,
                    client.post(callback, content=b'{"data": 7}').status_code,
                    client.post(url.copy_with(path="/callbacks/guess"), json={}).status_code,
                ]
            cut = _raw_post(url, b'{"data": {"taskId', 4096)
            cut.close()  # the client is gone mid-body
            stalled = _raw_post(url, b'{"data": ', 4096)  # the rest never comes
            try:
                stdout, stderr = proc.communicate(timeout=60)
            finally:
                stalled.close()
    assert codes == [400, 400, 400, 404]
    assert proc.returncode == 0, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert "Exception" not in stderr, stderr
    refused = [line for line in stderr.splitlines() if "callback refused" in line]
    assert any("malformed: callback nested deeper than 64 levels" in r for r in refused), stderr
    assert any("malformed: not JSON" in r for r in refused), stderr
    assert any("wrong secret" in r for r in refused), stderr
    assert any("incomplete" in r for r in refused), stderr
    assert any("unfinished: the run is ending" in r for r in refused), stderr
    assert all(line.startswith("flux-pipeline: ") for line in refused), refused
