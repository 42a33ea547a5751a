"""A real S3 API on loopback for the storage tests: moto's server, behind a small recording
proxy.

moto keeps no counters and does not refuse expired presigned URLs, so everything reaches it
through ``S3Proxy``: it records every request (method, path, query) and answers an expired
presigned GET 403 ``Request has expired``, as S3 does. boto3 (the run's, and the tests') and
the simulator's reference fetches all go through the proxy.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

ACCESS_KEY = "testing"
# distinctive, so a test can grep every output for it
SECRET_KEY = "s3cr3t-FLUXPIPELINE-aws-9d1f6b2c7e"
SESSION_TOKEN = "t0ken-FLUXPIPELINE-session-4a8e0c3f"
REGION = "us-east-1"


def aws_env(home: Path) -> dict[str, str]:
    """Dummy credentials (the standard chain reads them from the environment), no config
    files of the machine."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int


def _expired(query: dict[str, list[str]]) -> bool:
    date, expires = query.get("X-Amz-Date"), query.get("X-Amz-Expires")
    if not date or not expires:
        return False
    signed = datetime.strptime(date[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    return time.time() > signed + int(expires[0])


class S3Proxy:
    """Forwards to moto at ``upstream`` (host, port); ``seen`` lists every request."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.command == "GET" and _expired(query):
                    status, headers, content = 403, [], b"<Error><Code>AccessDenied</Code>"
                    content += b"<Message>Request has expired</Message></Error>"
                    headers.append(("Content-Type", "application/xml"))
                else:
                    conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                    forwarded = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    forwarded["Host"] = self.headers.get("Host", "")
                    conn.request(self.command, self.path, body=body, headers=forwarded)
                    answer = conn.getresponse()
                    status, content = answer.status, answer.read()
                    headers = [
                        (k, v)
                        for k, v in answer.getheaders()
                        if k.lower() not in ("transfer-encoding", "connection", "content-length")
                    ]
                    conn.close()
                with proxy._lock:
                    proxy.seen.append(Seen(self.command, parts.path, query, status))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests(self, method: str, under: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method and under in s.path]

    def clear(self) -> None:
        with self._lock:
            self.seen.clear()


@dataclass
class S3:
    """moto behind the proxy, and one fresh bucket."""

    proxy: S3Proxy
    bucket: str

    @property
    def endpoint(self) -> str:
        return self.proxy.url

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def keys(self, prefix: str = "") -> list[str]:
        answer = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in answer.get("Contents", []))

    def get(self, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return body


def moto_server() -> Iterator[tuple[str, int]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()
    finally:
        server.stop()


def new_s3(upstream: tuple[str, int]) -> Iterator[S3]:
    proxy = S3Proxy(upstream)
    proxy.start()
    try:
        s3 = S3(proxy=proxy, bucket=f"flux-{uuid.uuid4().hex[:12]}")
        s3.client().create_bucket(Bucket=s3.bucket)
        proxy.clear()
        yield s3
    finally:
        proxy.stop()
