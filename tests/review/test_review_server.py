"""``flux-pipeline review`` end to end: a real run against the simulator, then the server as a
subprocess on port 0, spoken to over real HTTP: the decisions API, the review file it writes,
static files confined to the output directory, the loopback-only rules, a clean stop."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.report.reviewfile import Decision, read_review, write_review
from tests.run.support import clean_env, quick_sim, spawn_run, write_manifest

KEY = "sim-review-server-key"
MANIFEST = """\
version: 1
name: served
defaults:
  input: {mode: pro, aspect_ratio: "1:1", output_format: png}
steps:
  - id: hero
    matrix:
      n: [a, b, c]
    prompt: "picture {{ n }}"
  - id: banner
    from: {step: hero, only: picked}
    prompt: "banner of {{ parent.n }}"
"""
ORPHAN = "f" * 64


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the manifest and the output of one finished run."""
    root = tmp_path_factory.mktemp("review")
    manifest = write_manifest(root, MANIFEST)
    with quick_sim(KEY) as sim:
        proc = spawn_run(
            manifest,
            root / "out",
            "--no-lock",
            base_url=sim.base_url,
            api_key=KEY,
            logs=root / "logs",
            tag="run",
        )
        assert proc.proc.wait(timeout=120) == 0, proc.output()
    return root


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    lines: list[str]
    root: Path
    reader: threading.Thread

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Signal the server, wait for its exit code, close its pipe."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        kind = answer.getheader("content-type") or ""
        return answer.status, json.loads(data) if "json" in kind else data

    def put(self, key: str, payload: object) -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        return self.request(
            "PUT", f"/api/decisions/{key}", body, {"Content-Type": "application/json"}
        )


def start(root: Path, *extra: str) -> Served:
    argv = [sys.executable, "-m", "flux_pipeline", "review", str(root / "manifest.yaml")]
    argv += ["--out", str(root / "out"), "--no-open", "--port", "0", *extra]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env()
    )
    assert proc.stdout is not None
    lines: list[str] = []
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "serving" in line:
                found.put(line)
        found.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    line = found.get(timeout=60)
    if line is None:
        proc.wait(timeout=30)
        reader.join(timeout=10)
        proc.stdout.close()
        raise AssertionError("".join(lines))
    port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
    return Served(proc, port, lines, root, reader)


@pytest.fixture
def served(project: Path) -> Iterator[Served]:
    (project / "manifest.review.json").unlink(missing_ok=True)
    server = start(project)
    try:
        yield server
    finally:
        server.stop()


def keys(root: Path) -> dict[str, dict[str, Any]]:
    report = json.loads((root / "out" / "report.json").read_text())
    return {t["readable_id"]: t for t in report["tasks"]}


def test_put_and_get_write_the_review_file_at_once(served: Served) -> None:
    hero = keys(served.root)["hero@n=b#1"]
    assert served.request("GET", "/api/decisions") == (200, {"decisions": {}})
    status, answer = served.put(hero["key"], {"decision": "picked", "id": "forged", "step": "x"})
    assert (status, answer) == (200, {"decisions": {hero["key"]: "picked"}})
    path = served.root / "manifest.review.json"
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    review = read_review(path, manifest="manifest.yaml")
    assert review is not None
    # the plan's id and step are written, never the body's
    assert review.decisions == {hero["key"]: Decision("picked", "hero@n=b#1", "hero")}
    assert served.put(hero["key"], {"decision": "clear"}) == (200, {"decisions": {}})
    assert served.request("GET", "/api/decisions") == (200, {"decisions": {}})
    assert json.loads(path.read_text())["decisions"] == {}


def test_unknown_key_404_bad_body_400(served: Served) -> None:
    hero = keys(served.root)["hero@n=a#1"]["key"]
    status, answer = served.put("0" * 64, {"decision": "picked"})
    assert status == 404
    assert "error" in answer
    assert served.put("../../etc", {"decision": "picked"})[0] == 404
    for body in (
        b"not json",
        b"[]",
        b'{"decision": "maybe"}',
        b'{"decision": "picked", "extra": 1}',
        b'{"decision": "picked", "id": 5}',
        b'{"decision": NaN}',
        b"\xff\xfe",
    ):
        status, answer = served.request("PUT", f"/api/decisions/{hero}", body)
        assert status == 400, body
        assert isinstance(answer, dict)
        assert "error" in answer
    assert not (served.root / "manifest.review.json").exists()


def test_body_over_4_kib_is_413(served: Served) -> None:
    hero = keys(served.root)["hero@n=a#1"]["key"]
    big = json.dumps({"decision": "picked", "id": "x" * 5000}).encode()
    assert served.request("PUT", f"/api/decisions/{hero}", big)[0] == 413
    # no Content-Length: the body is read only up to the cap
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.putrequest("PUT", f"/api/decisions/{hero}")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"x" * 3000
    for _ in range(3):
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    assert conn.getresponse().status == 413
    conn.close()


def test_static_files_confined_to_the_output_directory(served: Served) -> None:
    out = served.root / "out"
    status, page = served.request("GET", "/")
    assert status == 200
    assert page == (out / "index.html").read_bytes()
    assert served.request("GET", "/report.json")[0] == 200
    (served.root / "secret.txt").write_text("outside")
    (out / "escape.txt").unlink(missing_ok=True)
    os.symlink(served.root / "secret.txt", out / "escape.txt")
    (out / "inside.txt").unlink(missing_ok=True)
    os.symlink(out / "report.md", out / "inside.txt")
    for path in (
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/..%2fsecret.txt",
        "//etc/passwd",
        "/escape.txt",
        "/.flux-pipeline/state.sqlite3",
        "/.flux-pipeline",
        "/%00",
        "/.flux-pipeline/../../secret.txt",
    ):
        status, body = served.request("GET", path)
        assert status == 404, path
        assert b"outside" not in (body if isinstance(body, bytes) else b"")
    assert served.request("GET", "/inside.txt")[0] == 200


def test_another_host_or_origin_is_refused(served: Served) -> None:
    assert served.request("GET", "/api/decisions", headers={"Host": "evil.example"})[0] == 403
    hero = keys(served.root)["hero@n=a#1"]["key"]
    body = json.dumps({"decision": "picked"}).encode()
    headers = {"Origin": "http://evil.example", "Content-Type": "application/json"}
    assert served.request("PUT", f"/api/decisions/{hero}", body, headers)[0] == 403
    assert not (served.root / "manifest.review.json").exists()
    ok = {"Origin": f"http://127.0.0.1:{served.port}"}
    assert served.request("PUT", f"/api/decisions/{hero}", body, ok)[0] == 200


def test_sigterm_and_sigint_stop_with_exit_0(project: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        server = start(project)
        assert server.stop(sig) == 0, "".join(server.lines)


def test_a_non_loopback_bind_is_refused(project: Path) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.1", "localhost"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "flux_pipeline",
                "review",
                str(project / "manifest.yaml"),
                "--out",
                str(project / "out"),
                "--no-open",
                "--host",
                host,
            ],
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
        )
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "listens on 127.0.0.1 only" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_orphaned_decisions_are_kept_and_reported(project: Path) -> None:
    path = project / "manifest.review.json"
    write_review(path, "manifest.yaml", {ORPHAN: Decision("picked", "gone@x#1", "gone")})
    server = start(project)
    try:
        assert any("1 decision for tasks no longer planned" in line for line in server.lines)
        hero = keys(project)["hero@n=c#1"]["key"]
        status, answer = server.put(hero, {"decision": "rejected"})
        assert status == 200
        assert answer == {"decisions": {ORPHAN: "picked", hero: "rejected"}}
        review = read_review(path)
        assert review is not None
        assert set(review.decisions) == {ORPHAN, hero}
    finally:
        assert server.stop() == 0


def test_no_review_serves_but_saves_nothing(project: Path) -> None:
    (project / "manifest.review.json").unlink(missing_ok=True)
    server = start(project, "--no-review")
    try:
        hero = keys(project)["hero@n=a#1"]["key"]
        assert server.put(hero, {"decision": "picked"})[0] == 409
        assert not (project / "manifest.review.json").exists()
    finally:
        assert server.stop() == 0
