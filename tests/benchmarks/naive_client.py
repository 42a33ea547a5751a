"""The naive baseline of the throughput benchmark: a client written the way the upstream page
advises, faithfully (a script, not a test).

    python tests/benchmarks/naive_client.py --base-url URL --api-key K --tasks N \
        --concurrency 100 --first-wait 2.0 --poll-every 0.3 --out DIR --results JSON

asyncio + one shared ``httpx.AsyncClient`` (as many connections as tasks in flight), an
``asyncio.Semaphore(concurrency)`` held by each task from its create to the end of its
download. Per task: create (on a 429 sleep ``--sleep-on-429`` s and retry), sleep
``--first-wait``, then poll every ``--poll-every`` s (on a 429 sleep and retry) until the task
has finished; on success parse ``resultJson`` and download each URL to a file. Nothing
artificial slows it down. It records, per task, when it sent the first create
(``created``), when it learned the task had finished (``learned_done``, ``time.time()``),
the API's ``completeTime`` and ``costTime``, and writes them as JSON to ``--results``.

Every loop is bounded (``--max-attempts`` network errors per request, ``--deadline`` overall).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

CREATE_PATH = "/api/v1/generateTask/flux-kontext"
STATUS_PATH = "/api/v1/statusTask/flux-kontext"


@dataclass
class TaskRecord:
    index: int
    task_id: str | None = None
    created: float | None = None  # first create sent, time.time()
    learned_done: float | None = None  # the status call that said finished returned
    downloaded: float | None = None
    state: str | None = None
    completeTime: int | None = None  # the API's spelling
    costTime: int | None = None
    error: str | None = None


@dataclass
class Counters:
    requests: int = 0  # create + status, including those answered 429
    creates: int = 0
    statuses: int = 0
    downloads: int = 0
    rate_limited: int = 0
    network_errors: int = 0
    errors: list[str] = field(default_factory=list)


class GiveUpError(Exception):
    """A request failed too often; the task is abandoned (counted as lost)."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    tasks: int
    concurrency: int
    first_wait: float
    poll_every: float
    sleep_on_429: float
    max_attempts: int
    out: Path
    prompt: str


class NaiveClient:
    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.counters = Counters()
        self.slots = asyncio.Semaphore(settings.concurrency)

    async def _api(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One API call: a 429 (HTTP or body code) sleeps and retries; the envelope's data."""
        errors = 0
        while True:
            self.counters.requests += 1
            try:
                response = await self.client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                self.counters.network_errors += 1
                errors += 1
                if errors >= self.settings.max_attempts:
                    raise GiveUpError(f"{method} {path}: {exc!r}") from exc
                await asyncio.sleep(1.0)
                continue
            try:
                body = response.json()
            except ValueError:
                body = {}
            code = body.get("code", response.status_code) if isinstance(body, dict) else 0
            if response.status_code == 429 or code == 429:
                self.counters.rate_limited += 1
                await asyncio.sleep(self.settings.sleep_on_429)
                continue
            if response.status_code != 200 or code != 200:
                errors += 1
                if errors >= self.settings.max_attempts:
                    raise GiveUpError(f"{method} {path}: HTTP {response.status_code} {body!r}")
                await asyncio.sleep(1.0)
                continue
            data = body.get("data")
            if not isinstance(data, dict):
                raise GiveUpError(f"{method} {path}: no data in {body!r}")
            return data

    async def run_task(self, record: TaskRecord) -> None:
        s = self.settings
        async with self.slots:
            try:
                record.created = time.time()
                body = {
                    "request_type": "async",
                    "provider": "auto",
                    "input": {
                        "mode": "pro",
                        "prompt": s.prompt.format(n=record.index + 1),
                        "aspect_ratio": "1:1",
                        "output_format": "png",
                    },
                }
                self.counters.creates += 1
                created = await self._api("POST", CREATE_PATH, json=body)
                task_id = str(created["taskId"])
                record.task_id = task_id
                await asyncio.sleep(s.first_wait)
                while True:
                    self.counters.statuses += 1
                    data = await self._api("GET", STATUS_PATH, params={"taskId": task_id})
                    state = data.get("state")
                    if state in ("success", "failed"):
                        record.learned_done = time.time()
                        record.state = str(state)
                        record.completeTime = data.get("completeTime")
                        record.costTime = data.get("costTime")
                        break
                    await asyncio.sleep(s.poll_every)
                if state == "success":
                    urls = json.loads(data["resultJson"])["resultUrls"]
                    for i, url in enumerate(urls):
                        await self._download(url, s.out / f"{record.index + 1}-{i}.png")
                    record.downloaded = time.time()
            except (GiveUpError, KeyError, ValueError, httpx.HTTPError) as exc:
                record.error = repr(exc)
                if len(self.counters.errors) < 20:
                    self.counters.errors.append(f"task {record.index}: {exc!r}")

    async def _download(self, url: str, dest: Path) -> None:
        for attempt in range(1, self.settings.max_attempts + 1):
            self.counters.downloads += 1
            try:
                response = await self.client.get(url)
                response.raise_for_status()
            except httpx.HTTPError:
                if attempt == self.settings.max_attempts:
                    raise
                await asyncio.sleep(1.0)
                continue
            dest.write_bytes(response.content)
            return


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(
        tasks=args.tasks,
        concurrency=args.concurrency,
        first_wait=args.first_wait,
        poll_every=args.poll_every,
        sleep_on_429=args.sleep_on_429,
        max_attempts=args.max_attempts,
        out=Path(args.out),
        prompt=args.prompt,
    )
    settings.out.mkdir(parents=True, exist_ok=True)
    connections = args.connections or settings.concurrency
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    records = [TaskRecord(index=i) for i in range(settings.tasks)]
    started = time.time()
    async with httpx.AsyncClient(
        base_url=args.base_url,
        headers={"Authorization": f"Bearer {args.api_key}"},
        limits=limits,
        timeout=httpx.Timeout(30.0),
        trust_env=False,
    ) as client:
        naive = NaiveClient(client, settings)
        jobs = [asyncio.ensure_future(naive.run_task(r)) for r in records]
        _, pending = await asyncio.wait(jobs, timeout=args.deadline)
        for job in pending:
            job.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10.0)
    return {
        "started": started,
        "finished": time.time(),
        "settings": {k: str(v) for k, v in asdict(settings).items()},
        "counters": asdict(naive.counters),
        "timed_out": len(pending),
        "tasks": [asdict(r) for r in records],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--first-wait", type=float, default=20.0, help="seconds after create")
    parser.add_argument("--poll-every", type=float, default=3.0, help="seconds between polls")
    parser.add_argument("--sleep-on-429", type=float, default=1.0)
    parser.add_argument(
        "--connections", type=int, default=0, help="httpx pool size [default: concurrency]"
    )
    parser.add_argument("--max-attempts", type=int, default=10, help="errors per request")
    parser.add_argument("--deadline", type=float, default=3600.0, help="seconds for the run")
    parser.add_argument("--prompt", default="benchmark image {n}")
    parser.add_argument("--out", required=True, help="directory for the images")
    parser.add_argument("--results", required=True, help="JSON file of per-task timestamps")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    Path(args.results).write_text(json.dumps(result), encoding="utf-8")
    tasks = result["tasks"]
    ok = sum(1 for t in tasks if t["downloaded"] is not None)
    print(f"naive client: {ok}/{len(tasks)} tasks downloaded", file=sys.stderr)
    return 0 if ok == len(tasks) else 1


if __name__ == "__main__":
    sys.exit(main())
