"""Benchmark: status requests per second the simulator serves (a script, not a test).

    python tests/benchmarks/bench_simulator.py [--seconds 10] [--workers 16] [--tasks 200]

Starts ``python -m flux_pipeline sim --port 0 --task-seconds 0.1`` as a subprocess, creates
some tasks, then hammers ``GET /api/v1/statusTask/flux-kontext`` from this process with
concurrent httpx requests and prints requests/s and latency p50/p95. Target: >= 1,000 req/s.
Then, in this process, 100,000 tasks through the simulator's task table on a manual clock
(created over 30 simulated seconds, all settled): the seconds it takes (target: < 10 s).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time

import anyio
import httpx

CREATE = "/api/v1/generateTask/flux-kontext"
STATUS = "/api/v1/statusTask/flux-kontext"
AUTH = {"Authorization": "Bearer sim-key"}
LINE = re.compile(r"^flux-pipeline simulator listening on (http://\S+)$")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_simulator() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flux_pipeline",
            "sim",
            "--port",
            "0",
            "--task-seconds",
            "0.1",
            "--rpm",
            "100000000",
            "--max-concurrent",
            "1000000",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    match = LINE.match(line)
    if not match:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, match.group(1)


async def run(base_url: str, seconds: float, workers: int, tasks: int, server_pid: int) -> None:
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(
        base_url=base_url, headers=AUTH, limits=limits, trust_env=False, timeout=10
    ) as client:
        ids = []
        for i in range(tasks):
            response = await client.post(CREATE, json={"input": {"prompt": f"bench {i}"}})
            ids.append(response.json()["data"]["taskId"])
        latencies: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            # One client (one keep-alive connection) per worker: a shared httpx pool spends
            # more time arbitrating between waiters than sending requests.
            nonlocal errors
            n = offset
            async with httpx.AsyncClient(
                base_url=base_url, headers=AUTH, trust_env=False, timeout=10
            ) as own:
                # requests built once: the load generator, not the simulator, is what costs
                requests = [own.build_request("GET", STATUS, params={"taskId": i}) for i in ids]
                while time.perf_counter() < deadline:
                    request = requests[n % len(requests)]
                    n += 1
                    started = time.perf_counter()
                    response = await own.send(request)
                    latencies.append(time.perf_counter() - started)
                    if response.status_code != 200:
                        errors += 1

        began = time.perf_counter()
        server_cpu, client_cpu = cpu_seconds(server_pid), own_cpu_seconds()
        async with anyio.create_task_group() as tg:
            for offset in range(workers):
                tg.start_soon(worker, offset)
        elapsed = time.perf_counter() - began
        server_cpu = cpu_seconds(server_pid) - server_cpu
        client_cpu = own_cpu_seconds() - client_cpu
        stats = (await client.get("/_sim/stats")).json()

    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95)] * 1000
    print(
        f"status requests: {len(latencies)} in {elapsed:.1f} s = {len(latencies) / elapsed:,.0f}"
        f" req/s; latency p50 {p50:.1f} ms, p95 {p95:.1f} ms; {workers} concurrent;"
        f" non-200: {errors}"
    )
    per_request = 1e6 / max(1, len(latencies))
    print(
        f"CPU: simulator {server_cpu:.1f} s ({server_cpu * per_request:.0f} µs/request),"
        f" load generator {client_cpu:.1f} s ({client_cpu * per_request:.0f} µs/request);"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"simulator counted: {stats['requests_by_endpoint']}, tasks {stats['tasks_by_state']}")


def task_table_seconds(tasks: int = 100_000) -> float:
    from flux_pipeline.simulator.clock import ManualClock
    from flux_pipeline.simulator.config import SimConfig
    from flux_pipeline.simulator.core import Simulator
    from flux_pipeline.simulator.validation import parse_create

    clock = ManualClock()
    sim = Simulator(SimConfig(max_concurrent=2 * tasks), clock)
    request = parse_create({"input": {"prompt": "a castle"}})
    started = time.perf_counter()
    for _ in range(tasks):
        sim.settle()
        sim.create("sim-key", request, "http://s")
        clock.advance(30 / tasks)
    clock.advance(3600)
    sim.settle()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    proc, base_url = start_simulator()
    try:
        anyio.run(run, base_url, args.seconds, args.workers, args.tasks, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        print(f"simulator exited with {code}")
    print(f"task table: 100,000 tasks created and settled in {task_table_seconds():.2f} s (< 10)")


if __name__ == "__main__":
    main()
