"""Real HTTP through a small hostile proxy in front of the simulator: one bad answer about
one task harms that task only, and no taskId the API issued is ever lost.

The proxy forwards every request to a ``SimulatorThread`` and rewrites chosen answers: the
status of the first task created answered 400 or 302, a status body nested 100,000 deep, a
``costTime`` beyond 64 bits, a result URL that is not a URL. The run is in-process
(``runner.execute``) over loopback HTTP.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from flux_pipeline.run import poller
from flux_pipeline.run.api import CREATE_PATH, STATUS_PATH
from flux_pipeline.run.retry import RetryPolicy
from flux_pipeline.simulator import SimConfig, SimulatorThread

from ..support import chained_manifest, db_rows, run_inprocess, state_path, write_manifest

KEY = "hostile-key"
Answer = tuple[int, dict[str, str], bytes]
# (task id, upstream answer) -> a rewritten answer, or None to pass it on unchanged
Rewrite = Callable[[str, Answer], Answer | None]

pytestmark = pytest.mark.anyio


class HostileProxy:
    """Forwards to ``upstream``; status answers go through ``rewrite``. Records every taskId
    the API issued in a create answer, in order."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rewrite: Rewrite | None = None
        self.issued: list[str] = []
        self.status_calls: dict[str, int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the API: no create answer is lost

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.handle(self)

            def do_POST(self) -> None:
                proxy.handle(self)

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # 40 creates at once: none refused or reset
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HostileProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def first(self) -> str:
        with self._lock:
            return self.issued[0]

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length) if length else None
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        with httpx.Client(base_url=self.upstream, trust_env=False, timeout=30) as client:
            upstream = client.request(request.command, request.path, headers=headers, content=body)
        answer: Answer = (
            upstream.status_code,
            {"content-type": "application/json"},
            upstream.content,
        )
        url = urlsplit(request.path)
        if url.path == CREATE_PATH and upstream.status_code == 200:
            task_id = (json.loads(upstream.content).get("data") or {}).get("taskId")
            if task_id:
                with self._lock:
                    self.issued.append(task_id)
        if url.path == STATUS_PATH:
            task_id = parse_qs(url.query).get("taskId", [""])[0]
            with self._lock:
                self.status_calls[task_id] = self.status_calls.get(task_id, 0) + 1
            if self.rewrite is not None:
                answer = self.rewrite(task_id, answer) or answer
        status, extra, content = answer
        request.send_response(status)
        for name, value in extra.items():
            request.send_header(name, value)
        request.send_header("content-length", str(len(content)))
        request.end_headers()
        request.wfile.write(content)


_FORWARDED = ("authorization", "content-type", "user-agent")
JSON = {"content-type": "application/json"}


@pytest.fixture
def proxy() -> Iterator[HostileProxy]:
    config = SimConfig(api_keys=(KEY,), task_seconds=0.4, task_spread=0.05)
    with SimulatorThread(config, host="127.0.0.1", port=0) as sim, HostileProxy(sim.base_url) as p:
        yield p


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(poller, "ERROR_BACKOFF_BASE", 0.01)


QUICK_RETRY = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02)


async def run(proxy: HostileProxy, manifest: Path, out: Path) -> Any:
    result = await run_inprocess(
        manifest, out, base_url=proxy.base_url, api_key=KEY, retry=QUICK_RETRY
    )
    return result.outcome


def forty(tmp_path: Path) -> Path:
    subjects = [f"s{i}" for i in range(10)]
    text = chained_manifest("hostile", subjects, ["a", "b", "c", "d"], chained=False)
    return write_manifest(tmp_path, text)


def only_first(proxy: HostileProxy, answer: Answer) -> Rewrite:
    return lambda task_id, upstream: answer if task_id == proxy.first else None


REFUSED = {
    400: (400, JSON, b'{"code": 400, "message": "bad"}'),
    302: (302, {"location": "http://elsewhere.test/"}, b""),
}
DEEP = (
    200,
    {"content-type": "application/json"},
    b'{"code": 200, "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
)


@pytest.mark.parametrize("answer", ["400", "302", "deep"])
async def test_one_bad_status_answer_holds_one_task_and_loses_no_taskid(
    tmp_path: Path, proxy: HostileProxy, answer: str
) -> None:
    manifest, out = forty(tmp_path), tmp_path / "out"
    proxy.rewrite = only_first(proxy, DEEP if answer == "deep" else REFUSED[int(answer)])
    outcome = await run(proxy, manifest, out)
    assert outcome.exit_code == 3  # resumable: the held task is polled again by a rerun
    assert outcome.buckets.done == 39
    assert outcome.buckets.in_flight == 1
    rows = db_rows(state_path(out))
    assert len(proxy.issued) == 40
    assert {r.task_id for r in rows.values()} == set(proxy.issued)  # every taskId stored
    held = next(r for r in rows.values() if r.task_id == proxy.first)
    assert held.state == "submitted"
    calls = proxy.status_calls[proxy.first]
    assert poller.STATUS_ATTEMPTS <= calls <= poller.STATUS_ATTEMPTS * QUICK_RETRY.attempts

    proxy.rewrite = None  # the API answers again: the rerun polls it and creates nothing
    again = await run(proxy, manifest, out)
    assert again.exit_code == 0
    assert again.created == 0
    assert len(proxy.issued) == 40


async def test_a_cost_time_beyond_64_bits_loses_nothing(
    tmp_path: Path, proxy: HostileProxy
) -> None:
    def huge(task_id: str, upstream: Answer) -> Answer:
        status, headers, content = upstream
        body = json.loads(content)
        if isinstance(body.get("data"), dict):
            body["data"]["costTime"] = 2**70
        return status, headers, json.dumps(body).encode()

    manifest, out = forty(tmp_path), tmp_path / "out"
    proxy.rewrite = huge
    outcome = await run(proxy, manifest, out)
    assert outcome.exit_code == 0
    assert outcome.buckets.done == 40
    rows = db_rows(state_path(out))
    assert {r.task_id for r in rows.values()} == set(proxy.issued)
    again = await run(proxy, manifest, out)  # the state DB is fine: nothing to do
    assert again.exit_code == 0
    assert again.created == 0


async def test_a_result_url_that_is_not_a_url_fails_that_task_on_every_run(
    tmp_path: Path, proxy: HostileProxy
) -> None:
    def bad_url(task_id: str, upstream: Answer) -> Answer | None:
        status, headers, content = upstream
        body = json.loads(content)
        data = body.get("data")
        if task_id != proxy.first or not isinstance(data, dict) or not data.get("resultJson"):
            return None
        data["resultJson"] = json.dumps({"resultUrls": ["http://[::1"]})
        return status, headers, json.dumps(body).encode()

    manifest, out = forty(tmp_path), tmp_path / "out"
    proxy.rewrite = bad_url
    outcome = await run(proxy, manifest, out)
    assert outcome.exit_code == 1  # one task failed, the others done
    assert (outcome.buckets.done, outcome.buckets.failed) == (39, 1)
    bad = next(r for r in db_rows(state_path(out)).values() if r.task_id == proxy.first)
    assert bad.state == "failed"
    proxy.rewrite = None
    again = await run(proxy, manifest, out)  # the stored URL blocks nothing
    assert again.exit_code == 1
    assert again.created == 0
