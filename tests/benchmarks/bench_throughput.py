"""Benchmark: throughput, request budget and overhead of ``flux-pipeline run``
against the simulator, beside a naive client (a script, not a test; prints figures, never
asserts).

    python tests/benchmarks/bench_throughput.py [--quick] [--scenarios throughput,overhead,scale]
        [--tasks 2000] [--task-seconds 3] [--task-spread 0.75] [--in-flight 100] [--rpm 10000]
        [--overhead-tasks 20000] [--scale-tasks 100000] [--image-size 32] [--keep] [--json PATH]

Scenarios (each client run gets a fresh ``flux-pipeline sim`` subprocess, so its stats are
that client's alone):

throughput
    The real API scaled on time by 10: tasks of 3 s (spread 0.75 s), 100 in flight,
    10,000 requests a minute (the same requests per task as 1,000 in flight x 30 s). Runs
    ``flux-pipeline run`` in async mode, in callback mode, and ``naive_client.py`` (the
    upstream advice: wait 20 s then poll every 3 s, scaled), each as a subprocess.
overhead
    Near-instant tasks, no rate limit: the engine's own cost (tasks/s, CPU per task, share
    of the run spent in SQLite writes from ``report.json`` ``run.engine_stats``).
scale
    100,000 near-instant tasks run to completion (peak RSS), then the same command again on
    the finished state (time to exit 0 with nothing to do), then again with the state DB
    deleted and the lock file kept (adoption: time, exit 0, no create). Every run is a
    user's: the lock file, the thumbnails and the reports on.

Definitions, identical for every client:
- throughput = tasks that finished ÷ (last time a finish was detected − first create sent),
  from per-task timestamps (flux-pipeline: ``report.json`` ``first_submitted``/``finished``;
  naive: its own records); concurrency bound = in flight ÷ configured mean task time;
- requests per task = (create + status requests the simulator received, 429s included) ÷
  tasks; downloads are counted apart; 429 share = 429 answers ÷ those requests;
- detection lag = when the client learned a task finished − the API's ``completeTime``;
- zero-lag reference = the throughput of a client that detects every completion at once and
  refills the slot immediately, on the same costTimes in the same order (list scheduling on
  ``in_flight`` slots): what ramp-up and the last wave's tail alone cost at this task count;
- CPU = user + system seconds of the client process, peak RSS = its ``ru_maxrss``, both from
  ``os.wait4``; tasks lost = planned − downloaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # mypy sees tests/benchmarks as part of the tests package
    from tests.benchmarks._bench_support import (
        API_KEY,
        Measured,
        SimParams,
        SimProcess,
        check,
        clean_env,
        fmt,
        percentile,
        run_measured,
        simulator,
        table,
    )
else:  # run as a script: this file's directory is on sys.path
    from _bench_support import (
        API_KEY,
        Measured,
        SimParams,
        SimProcess,
        check,
        clean_env,
        fmt,
        percentile,
        run_measured,
        simulator,
        table,
    )

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCENARIOS = ("throughput", "overhead", "scale")
REAL_TASK_SECONDS = 30.0  # the upstream advice is written for it: wait 20 s, poll every 3 s

# Targets (docs/performance.md)
ASYNC_BOUND_SHARE = 0.93
ASYNC_429_SHARE = 0.005
ASYNC_VS_NAIVE = 1.1
CALLBACK_REFERENCE_SHARE = 0.99  # of the zero-lag reference on the same costTimes
CALLBACK_REQUESTS_PER_TASK = 2.1
SCALE_RSS_MB = 400.0
SCALE_NOOP_SECONDS = 10.0
SCALE_NOOP_RSS_MB = 300.0
SCALE_ADOPT_SECONDS = 15.0

# near-instant tasks: the simulator's floor is min(1, mean/2)
INSTANT = {"task_seconds": 0.01, "task_spread": 0.0}
HUGE_RPM = 1_000_000_000
HUGE_CONCURRENCY = 1_000_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientRun:
    """What one client did in one scenario: the figures the tables print."""

    label: str
    planned: int
    measured: Measured
    stats: dict[str, Any]
    created_at: list[float]  # per finished task: first create sent (time.time())
    detected_at: list[float]  # when the client learned it had finished
    complete_ms: list[int]  # the API's completeTime
    cost_ms: list[int]
    downloaded: int
    engine_stats: dict[str, Any] | None = None
    elapsed: float | None = None  # as the client reports it (flux-pipeline: run.elapsed)
    sim_cpu: float | None = None
    in_flight: int = 0  # the API's concurrency limit (0: not relevant)
    code: str = ""  # git HEAD (+ uncommitted product files) when the client started

    @property
    def finished(self) -> int:
        return len(self.detected_at)

    @property
    def lost(self) -> int:
        return self.planned - self.downloaded

    @property
    def span(self) -> float:
        if not self.detected_at:
            return float("nan")
        return max(self.detected_at) - min(self.created_at)

    @property
    def throughput(self) -> float:
        span = self.span
        return self.finished / span if span > 0 else float("nan")

    @property
    def api_requests(self) -> int:
        by = self.stats.get("requests_by_endpoint", {})
        return int(by.get("create", 0)) + int(by.get("status", 0))

    @property
    def downloads(self) -> int:
        return int(self.stats.get("requests_by_endpoint", {}).get("results", 0))

    @property
    def rate_limited(self) -> int:
        return int(self.stats.get("rate_limited", 0))

    def per_task(self, value: float) -> float:
        return value / self.planned if self.planned else float("nan")

    @property
    def lags(self) -> list[float]:
        return [d - c / 1000.0 for d, c in zip(self.detected_at, self.complete_ms, strict=True)]

    @property
    def ideal_throughput(self) -> float:
        """Tasks/s of a zero-lag client on these costTimes, in creation order: each of
        ``in_flight`` slots takes the next task the moment its previous one completes."""
        if not self.cost_ms or len(self.cost_ms) != len(self.created_at) or not self.in_flight:
            return float("nan")
        order = sorted(range(len(self.cost_ms)), key=self.created_at.__getitem__)
        slots = [0.0] * min(self.in_flight, len(order))
        span = 0.0
        for i in order:
            end = heapq.heappop(slots) + self.cost_ms[i] / 1000.0
            span = max(span, end)
            heapq.heappush(slots, end)
        return len(order) / span if span > 0 else float("nan")

    def figures(self) -> dict[str, Any]:
        lags = self.lags
        m = self.measured
        return {
            "planned": self.planned,
            "finished": self.finished,
            "downloaded": self.downloaded,
            "lost": self.lost,
            "exit_code": m.returncode,
            "timed_out": m.timed_out,
            "wall_seconds": m.wall,
            "span_seconds": self.span,
            "tasks_per_second": self.throughput,
            "ideal_tasks_per_second": self.ideal_throughput,
            "api_requests": self.api_requests,
            "requests_per_task": self.per_task(self.api_requests),
            "downloads": self.downloads,
            "rate_limited": self.rate_limited,
            "rate_limited_share": (
                self.rate_limited / self.api_requests if self.api_requests else None
            ),
            "lag_p50_seconds": percentile(lags, 50),
            "lag_p95_seconds": percentile(lags, 95),
            "lag_max_seconds": max(lags) if lags else None,
            "cpu_seconds": m.cpu,
            "cpu_seconds_per_task": self.per_task(m.cpu),
            "peak_rss_mb": m.maxrss_mb,
            "mean_cost_seconds": (
                statistics.fmean(c for c in self.cost_ms if c) / 1000.0
                if any(self.cost_ms)
                else None
            ),
            "sim_max_concurrent_seen": self.stats.get("max_concurrent_seen"),
            "sim_creates": self.stats.get("creates"),
            "sim_duplicate_creates": self.stats.get("duplicate_creates"),
            "sim_cpu_seconds": self.sim_cpu,
            "engine_stats": self.engine_stats,
            "code": self.code,
            "elapsed_seconds": self.elapsed,
            "stderr_tail": m.stderr_tail if m.returncode != 0 or self.lost else None,
        }


# --- clients --------------------------------------------------------------------------------


def write_manifest(directory: Path, tasks: int) -> Path:
    """``tasks`` root tasks: one ``lines:`` axis over a file of ``tasks`` numbers."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "n.txt").write_text("".join(f"{i}\n" for i in range(1, tasks + 1)))
    manifest = directory / "bench.yaml"
    manifest.write_text(
        """\
version: 1
name: bench
defaults:
  provider: auto
  input: {mode: pro, aspect_ratio: "1:1", output_format: png}
steps:
  - id: img
    matrix:
      n: {lines: n.txt}
    prompt: "benchmark image {{ n }}"
""",
        encoding="utf-8",
    )
    return manifest


def child_env(base_url: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return clean_env(
        APIXO_API_KEY=API_KEY,
        APIXO_BASE_URL=base_url,
        PYTHONPATH=str(REPO) + (os.pathsep + path if path else ""),
    )


def flux_argv(
    manifest: Path, out: Path, *, max_active: int, rpm: int, request_type: str
) -> list[str]:
    argv = [sys.executable, "-m", "flux_pipeline", "run", str(manifest), "--out", str(out)]
    argv += ["--max-active", str(max_active), "--rpm", str(rpm)]
    if request_type != "async":
        argv += ["--request-type", request_type]
    return argv


def read_report(out: Path) -> dict[str, Any]:
    path = out / "report.json"
    if not path.exists():
        return {"tasks": [], "run": {}}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def run_flux(
    label: str,
    sim: SimProcess,
    work: Path,
    manifest: Path,
    planned: int,
    *,
    max_active: int,
    rpm: int,
    request_type: str,
    timeout: float,
    out: Path | None = None,
) -> ClientRun:
    out = out or work / f"out-{label}"
    code = git_describe()  # others may commit while the benchmark runs
    measured = run_measured(
        flux_argv(manifest, out, max_active=max_active, rpm=rpm, request_type=request_type),
        env=child_env(sim.url),
        log_dir=work / "logs",
        name=label,
        timeout=timeout,
    )
    stats = sim.stats()
    report = read_report(out)
    created, detected, complete, cost = [], [], [], []
    downloaded = 0
    for task in report["tasks"]:
        ts = task["timestamps"]
        if task["state"] == "downloaded":
            downloaded += 1
        if ts["finished"] is not None and ts["api_complete"] is not None:
            created.append(float(ts["first_submitted"]))
            detected.append(float(ts["finished"]))
            complete.append(int(ts["api_complete"]))
            cost.append(int(task["costTime"] or 0))
    run = report.get("run", {})
    return ClientRun(
        label=label,
        planned=planned,
        measured=measured,
        stats=stats,
        created_at=created,
        detected_at=detected,
        complete_ms=complete,
        cost_ms=cost,
        downloaded=downloaded,
        engine_stats=run.get("engine_stats"),
        elapsed=run.get("elapsed_seconds"),
        code=code,
    )


def run_naive(
    sim: SimProcess,
    work: Path,
    planned: int,
    *,
    concurrency: int,
    first_wait: float,
    poll_every: float,
    sleep_on_429: float,
    timeout: float,
) -> ClientRun:
    results = work / "naive-results.json"
    argv = [
        sys.executable,
        str(HERE / "naive_client.py"),
        "--base-url",
        sim.url,
        "--api-key",
        API_KEY,
        "--tasks",
        str(planned),
        "--concurrency",
        str(concurrency),
        "--first-wait",
        repr(first_wait),
        "--poll-every",
        repr(poll_every),
        "--sleep-on-429",
        repr(sleep_on_429),
        "--deadline",
        repr(timeout),
        "--out",
        str(work / "out-naive"),
        "--results",
        str(results),
    ]
    code = git_describe()
    measured = run_measured(
        argv, env=child_env(sim.url), log_dir=work / "logs", name="naive", timeout=timeout + 60
    )
    stats = sim.stats()
    data: dict[str, Any] = (
        json.loads(results.read_text(encoding="utf-8")) if results.exists() else {"tasks": []}
    )
    created, detected, complete, cost = [], [], [], []
    downloaded = 0
    for task in data["tasks"]:
        if task["downloaded"] is not None:
            downloaded += 1
        if task["learned_done"] is not None and task["completeTime"] is not None:
            created.append(float(task["created"]))
            detected.append(float(task["learned_done"]))
            complete.append(int(task["completeTime"]))
            cost.append(int(task["costTime"] or 0))
    return ClientRun(
        label="naive",
        planned=planned,
        measured=measured,
        stats=stats,
        created_at=created,
        detected_at=detected,
        complete_ms=complete,
        cost_ms=cost,
        downloaded=downloaded,
        elapsed=(data["finished"] - data["started"]) if "finished" in data else None,
        code=code,
    )


# --- scenarios ------------------------------------------------------------------------------


def with_sim(run: ClientRun, sim: SimProcess) -> ClientRun:
    return dataclasses.replace(run, sim_cpu=sim.cpu, in_flight=sim.params.max_concurrent)


def scenario_throughput(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    work = root / "throughput"
    params = SimParams(
        max_concurrent=args.in_flight,
        rpm=args.rpm,
        task_seconds=args.task_seconds,
        task_spread=args.task_spread,
        image_size=args.image_size,
        seed=args.seed,
    )
    bound = args.in_flight / args.task_seconds
    timeout = max(120.0, 4.0 * args.tasks / bound + 60.0)
    scale = args.task_seconds / REAL_TASK_SECONDS
    first_wait = args.naive_first_wait if args.naive_first_wait is not None else 20.0 * scale
    poll_every = args.naive_poll_every if args.naive_poll_every is not None else 3.0 * scale
    runs: list[ClientRun] = []
    for label, request_type in (("fp-async", "async"), ("fp-callback", "callback"), ("naive", "")):
        progress(f"throughput: {label}, {args.tasks} tasks ...")
        # a manifest of its own: a run writes its lock file next to its manifest, and the
        # next client would adopt the results of this one (docs/lockfile.md)
        manifest = write_manifest(work / f"manifest-{label}", args.tasks)
        with simulator(params, work / "logs", f"sim-{label}") as sim:
            if request_type:
                run = run_flux(
                    label,
                    sim,
                    work,
                    manifest,
                    args.tasks,
                    max_active=args.in_flight,
                    rpm=args.rpm,
                    request_type=request_type,
                    timeout=timeout,
                )
            else:
                run = run_naive(
                    sim,
                    work,
                    args.tasks,
                    concurrency=args.in_flight,
                    first_wait=first_wait,
                    poll_every=poll_every,
                    sleep_on_429=args.naive_429_sleep,
                    timeout=timeout,
                )
        runs.append(with_sim(run, sim))
        progress(f"  {label}: {run.measured.wall:.1f} s, exit {run.measured.returncode}")
    fig = {r.label: r.figures() for r in runs}
    a, c, n = fig["fp-async"], fig["fp-callback"], fig["naive"]

    def ratio(x: Any, y: Any) -> float | None:
        return x / y if isinstance(x, float | int) and isinstance(y, float | int) and y else None

    ratios = {
        "async_vs_naive_throughput": ratio(a["tasks_per_second"], n["tasks_per_second"]),
        "callback_vs_naive_throughput": ratio(c["tasks_per_second"], n["tasks_per_second"]),
        "async_vs_naive_cpu_per_task": ratio(a["cpu_seconds_per_task"], n["cpu_seconds_per_task"]),
        "callback_vs_naive_cpu_per_task": ratio(
            c["cpu_seconds_per_task"], n["cpu_seconds_per_task"]
        ),
    }
    for f in fig.values():
        f["bound_share"] = f["tasks_per_second"] / bound
        f["reference_share"] = ratio(f["tasks_per_second"], f["ideal_tasks_per_second"])
    share_429 = a["rate_limited_share"]
    targets = [
        (
            f"async >= {ASYNC_BOUND_SHARE:.0%} of the concurrency bound",
            a["bound_share"] >= ASYNC_BOUND_SHARE,
            f"{a['bound_share']:.1%}",
        ),
        (
            f"async <= {ASYNC_429_SHARE:.1%} of requests answered 429",
            share_429 is not None and share_429 <= ASYNC_429_SHARE,
            f"{share_429:.2%}" if share_429 is not None else "n/a",
        ),
        ("async: no task lost", a["lost"] == 0, str(a["lost"])),
        (
            f"async >= {ASYNC_VS_NAIVE}x naive throughput",
            _ge(ratios["async_vs_naive_throughput"], ASYNC_VS_NAIVE),
            f"{fmt(ratios['async_vs_naive_throughput'], 3)}x",
        ),
        (
            f"callback >= {CALLBACK_REFERENCE_SHARE:.0%} of the zero-lag reference",
            _ge(c["reference_share"], CALLBACK_REFERENCE_SHARE),
            pct(c["reference_share"]),
        ),
        (
            f"callback <= {CALLBACK_REQUESTS_PER_TASK} requests per task",
            c["requests_per_task"] <= CALLBACK_REQUESTS_PER_TASK,
            fmt(c["requests_per_task"]),
        ),
        ("callback: no task lost", c["lost"] == 0, str(c["lost"])),
        (
            "async: client CPU per task <= naive's",
            a["cpu_seconds_per_task"] <= n["cpu_seconds_per_task"],
            f"{fmt(ratios['async_vs_naive_cpu_per_task'], 3)}x naive",
        ),
        (
            "callback: client CPU per task <= naive's",
            c["cpu_seconds_per_task"] <= n["cpu_seconds_per_task"],
            f"{fmt(ratios['callback_vs_naive_cpu_per_task'], 3)}x naive",
        ),
    ]
    return {
        "parameters": {
            "tasks": args.tasks,
            "task_seconds": args.task_seconds,
            "task_spread": args.task_spread,
            "in_flight": args.in_flight,
            "rpm": args.rpm,
            "image_size": args.image_size,
            "seed": args.seed,
            "naive_first_wait": first_wait,
            "naive_poll_every": poll_every,
            "naive_429_sleep": args.naive_429_sleep,
            "concurrency_bound_tasks_per_second": bound,
        },
        "clients": fig,
        "ratios": ratios,
        "targets": [{"target": t, "met": ok, "value": v} for t, ok, v in targets],
    }


def _ge(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def instant_params(args: argparse.Namespace, image_size: int) -> SimParams:
    return SimParams(
        max_concurrent=HUGE_CONCURRENCY,
        rpm=HUGE_RPM,
        task_seconds=INSTANT["task_seconds"],
        task_spread=INSTANT["task_spread"],
        image_size=image_size,
        seed=args.seed,
    )


def scenario_overhead(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    work = root / "overhead"
    manifest = write_manifest(work / "manifest", args.overhead_tasks)
    progress(f"overhead: fp-async, {args.overhead_tasks} near-instant tasks ...")
    with simulator(instant_params(args, args.image_size), work / "logs", "sim") as sim:
        run = run_flux(
            "fp-async",
            sim,
            work,
            manifest,
            args.overhead_tasks,
            max_active=args.overhead_max_active,
            rpm=args.overhead_rpm,
            request_type="async",
            timeout=max(300.0, args.overhead_tasks / 20.0),
        )
    run = with_sim(run, sim)
    progress(f"  fp-async: {run.measured.wall:.1f} s, exit {run.measured.returncode}")
    f = run.figures()
    es = run.engine_stats or {}
    write_s = es.get("store_write_seconds")
    elapsed = run.elapsed
    f["sqlite_write_share"] = (
        write_s / elapsed if isinstance(write_s, float | int) and elapsed else None
    )
    f["wall_tasks_per_second"] = run.planned / run.measured.wall
    return {
        "parameters": {
            "tasks": args.overhead_tasks,
            "max_active": args.overhead_max_active,
            "rpm": args.overhead_rpm,
            "image_size": args.image_size,
            **INSTANT,
        },
        "client": f,
    }


def outputs_on(out: Path, manifest: Path) -> dict[str, Any]:
    """What a user's run leaves beside its images: the lock file, thumbnails, the reports."""
    thumbs = out / ".flux-pipeline" / "thumbs"
    lock = manifest.with_name(manifest.stem + ".lock.json")
    reports = ("report.json", "report.md", "index.html", "junit.xml")
    return {
        "lock_bytes": lock.stat().st_size if lock.is_file() else None,
        "thumbnails": sum(1 for _ in thumbs.iterdir()) if thumbs.is_dir() else 0,
        "reports": sum((out / name).is_file() for name in reports),
    }


def delete_state_db(out: Path) -> None:
    """The state DB (and its WAL files) gone, the lock file beside the manifest kept."""
    for suffix in ("", "-wal", "-shm"):
        (out / ".flux-pipeline" / f"state.sqlite3{suffix}").unlink(missing_ok=True)


def scenario_scale(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    work = root / "scale"
    manifest = write_manifest(work / "manifest", args.scale_tasks)
    out = work / "out-scale"
    result: dict[str, Any] = {
        "parameters": {
            "tasks": args.scale_tasks,
            "max_active": args.overhead_max_active,
            "rpm": args.overhead_rpm,
            "image_size": args.scale_image_size,
            **INSTANT,
        }
    }
    with simulator(instant_params(args, args.scale_image_size), work / "logs", "sim") as sim:
        for label in ("first", "rerun", "adopt"):
            progress(f"scale: {label}, {args.scale_tasks} near-instant tasks ...")
            if label == "adopt":
                delete_state_db(out)
            before = sim.stats()
            run = run_flux(
                f"scale-{label}",
                sim,
                work,
                manifest,
                args.scale_tasks,
                max_active=args.overhead_max_active,
                rpm=args.overhead_rpm,
                request_type="async",
                timeout=max(900.0, args.scale_tasks / 20.0),
                out=out,
            )
            f = run.figures()
            by_before = before.get("requests_by_endpoint", {})
            f["api_requests"] = run.api_requests - sum(
                int(by_before.get(k, 0)) for k in ("create", "status")
            )
            f["downloads"] = run.downloads - int(by_before.get("results", 0))
            f["creates"] = int(run.stats.get("creates") or 0) - int(before.get("creates") or 0)
            f["wall_tasks_per_second"] = run.planned / run.measured.wall
            f |= outputs_on(out, manifest)
            result[label] = f
            progress(f"  {label}: {run.measured.wall:.1f} s, exit {run.measured.returncode}")
    result["targets"] = scale_targets(result)
    if args.scale_tasks < 100_000:
        for t in result["targets"]:
            t["target"] += f" (run at {args.scale_tasks} tasks)"
    return result


def scale_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    first, rerun, adopt = result["first"], result["rerun"], result["adopt"]
    planned = result["parameters"]["tasks"]
    return [
        {
            "target": f"100k: peak RSS <= {SCALE_RSS_MB:.0f} MB",
            "met": first["peak_rss_mb"] <= SCALE_RSS_MB,
            "value": f"{first['peak_rss_mb']:.0f} MB",
        },
        {
            "target": f"no-op rerun exits 0 in <= {SCALE_NOOP_SECONDS:.0f} s",
            "met": rerun["exit_code"] == 0 and rerun["wall_seconds"] <= SCALE_NOOP_SECONDS,
            "value": f"exit {rerun['exit_code']} in {rerun['wall_seconds']:.1f} s",
        },
        {
            "target": f"no-op rerun: peak RSS <= {SCALE_NOOP_RSS_MB:.0f} MB",
            "met": rerun["peak_rss_mb"] <= SCALE_NOOP_RSS_MB,
            "value": f"{rerun['peak_rss_mb']:.0f} MB",
        },
        {
            "target": f"adoption (state DB deleted, lock kept) exits 0 in <= "
            f"{SCALE_ADOPT_SECONDS:.0f} s, 0 creates",
            "met": adopt["exit_code"] == 0
            and adopt["wall_seconds"] <= SCALE_ADOPT_SECONDS
            and adopt["creates"] == 0,
            "value": f"exit {adopt['exit_code']} in {adopt['wall_seconds']:.1f} s, "
            f"{adopt['creates']} creates",
        },
        {"target": "100k: no task lost", "met": first["lost"] == 0, "value": str(first["lost"])},
        {
            "target": "lock file, thumbnails and reports written",
            "met": bool(first["lock_bytes"])
            and first["thumbnails"] == planned
            and first["reports"] == 4,
            "value": f"lock {fmt(first['lock_bytes'], 0)} bytes, {first['thumbnails']} "
            f"thumbnails, {first['reports']}/4 reports",
        },
    ]


# --- printing -------------------------------------------------------------------------------


def ms(seconds: Any) -> str:
    return fmt(seconds * 1000.0, 0) if isinstance(seconds, float | int) else "n/a"


def pct(value: Any, digits: int = 1) -> str:
    return f"{value * 100:.{digits}f}%" if isinstance(value, float | int) else "n/a"


def client_rows(figs: Sequence[dict[str, Any]], bound: float | None) -> list[list[str]]:
    def row(name: str, cell: Any) -> list[str]:
        return [name, *(cell(f) for f in figs)]

    rows = [
        row("tasks planned / downloaded", lambda f: f"{f['planned']} / {f['downloaded']}"),
        row("tasks lost", lambda f: str(f["lost"])),
        row("exit code", lambda f: str(f["exit_code"]) + (" (timeout)" if f["timed_out"] else "")),
        row("wall time, s", lambda f: fmt(f["wall_seconds"], 1)),
        row("first create → last detection, s", lambda f: fmt(f["span_seconds"], 1)),
        row("throughput, tasks/s", lambda f: fmt(f["tasks_per_second"])),
    ]
    if bound is not None:
        rows += [
            row("  share of concurrency bound", lambda f: pct(f["tasks_per_second"] / bound)),
            row("zero-lag client, same costTimes", lambda f: fmt(f["ideal_tasks_per_second"])),
            row("  share of concurrency bound", lambda f: pct(f["ideal_tasks_per_second"] / bound)),
        ]
    rows += [
        row("API requests (create+status)", lambda f: fmt(f["api_requests"])),
        row("  per task", lambda f: fmt(f["requests_per_task"])),
        row("downloads per task", lambda f: fmt(f["downloads"] / f["planned"])),
        row("429s received", lambda f: fmt(f["rate_limited"])),
        row("  share of requests", lambda f: pct(f["rate_limited_share"], 2)),
        row("detection lag p50, ms", lambda f: ms(f["lag_p50_seconds"])),
        row("detection lag p95, ms", lambda f: ms(f["lag_p95_seconds"])),
        row("detection lag max, ms", lambda f: ms(f["lag_max_seconds"])),
        row("client CPU, s", lambda f: fmt(f["cpu_seconds"])),
        row("client CPU per task, ms", lambda f: ms(f["cpu_seconds_per_task"])),
        row("client peak RSS, MB", lambda f: fmt(f["peak_rss_mb"], 0)),
        row("mean observed costTime, s", lambda f: fmt(f["mean_cost_seconds"], 3)),
        row("sim: max tasks in flight", lambda f: fmt(f["sim_max_concurrent_seen"])),
        row("sim: duplicate creates", lambda f: fmt(f["sim_duplicate_creates"])),
        row("sim: CPU, s", lambda f: fmt(f["sim_cpu_seconds"])),
    ]
    return rows


def print_code(named: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Which product code each run used: others may commit while the benchmark runs."""
    codes = {f["code"] for _, f in named}
    if len(codes) == 1:
        print(f"code under test: {codes.pop()}")
    else:
        print("code under test: " + "; ".join(f"{n} @ {f['code']}" for n, f in named))


def print_targets(targets: Sequence[dict[str, Any]]) -> None:
    print("targets:")
    for t in targets:
        print(f"  {check(t['met'])} {t['target']}: {t['value']}")


def print_throughput(r: dict[str, Any]) -> None:
    p = r["parameters"]
    bound = p["concurrency_bound_tasks_per_second"]
    figs = [r["clients"][k] for k in ("fp-async", "fp-callback", "naive")]
    costs = [f["mean_cost_seconds"] for f in figs if f["mean_cost_seconds"]]
    observed = statistics.fmean(costs) if costs else None
    print(
        f"\n== throughput: {p['tasks']} tasks, {p['in_flight']} in flight, task "
        f"{p['task_seconds']:g} s ± {p['task_spread']:g} s, {p['rpm']:,} requests/min, "
        f"images {p['image_size']} px"
    )
    print(
        f"concurrency bound = {p['in_flight']} ÷ {p['task_seconds']:g} s = {bound:.2f} tasks/s "
        f"(with the observed mean costTime {fmt(observed, 3)} s: "
        f"{fmt(p['in_flight'] / observed if observed else None)} tasks/s); "
        f"request budget {p['rpm'] / 60:.1f}/s = "
        f"{p['rpm'] / 60 / bound:.2f} requests per task at the bound"
    )
    print(
        f"naive: wait {p['naive_first_wait']:g} s, poll every {p['naive_poll_every']:g} s, "
        f"sleep {p['naive_429_sleep']:g} s on a 429"
    )
    print()
    print(table(["", "fp async", "fp callback", "naive"], client_rows(figs, bound)))
    q = r["ratios"]
    print()
    print(
        f"flux-pipeline ÷ naive: throughput async {fmt(q['async_vs_naive_throughput'], 3)}x, "
        f"callback {fmt(q['callback_vs_naive_throughput'], 3)}x; CPU per task async "
        f"{fmt(q['async_vs_naive_cpu_per_task'], 3)}x, callback "
        f"{fmt(q['callback_vs_naive_cpu_per_task'], 3)}x"
    )
    print(
        "share of the zero-lag reference (same costTimes, no detection lag; ramp-up and tail "
        "included): "
        + ", ".join(
            f"{name} {pct(f['tasks_per_second'] / f['ideal_tasks_per_second'])}"
            for name, f in zip(("async", "callback", "naive"), figs, strict=True)
        )
    )
    print_targets(r["targets"])
    print_code(list(zip(("fp async", "fp callback", "naive"), figs, strict=True)))
    for f, name in zip(figs, ("fp async", "fp callback", "naive"), strict=True):
        if f["stderr_tail"]:
            print(f"\n{name}: stderr tail:\n{f['stderr_tail']}")


def print_overhead(r: dict[str, Any]) -> None:
    p, f = r["parameters"], r["client"]
    es = f["engine_stats"] or {}
    print(
        f"\n== overhead: {p['tasks']} near-instant tasks ({p['task_seconds']} s), no rate limit, "
        f"--max-active {p['max_active']} --rpm {p['rpm']:,}"
    )
    print()
    rows = client_rows([f], None)
    rows.insert(6, ["throughput (tasks ÷ wall), tasks/s", fmt(f["wall_tasks_per_second"])])
    rows += [
        ["engine elapsed, s", fmt(f["elapsed_seconds"], 2)],
        ["SQLite write time, s", fmt(es.get("store_write_seconds"), 2)],
        ["  share of engine elapsed", pct(f["sqlite_write_share"])],
        [
            "SQLite batches / writes",
            f"{fmt(es.get('store_batches'))} / {fmt(es.get('store_writes'))}",
        ],
    ]
    print(table(["", "fp async"], rows))
    print(
        "SQLite write time: wall time the state writer spent in BEGIN ... COMMIT batches "
        "(report.json run.engine_stats.store_write_seconds), over the engine's elapsed time"
        if es
        else "SQLite write time: n/a (report.json has no run.engine_stats)"
    )
    print_code([("fp async", f)])
    if f["stderr_tail"]:
        print(f"\nstderr tail:\n{f['stderr_tail']}")


def print_scale(r: dict[str, Any]) -> None:
    p = r["parameters"]
    runs = [r["first"], r["rerun"], r["adopt"]]
    first = runs[0]
    print(
        f"\n== scale: {p['tasks']:,} near-instant tasks, images {p['image_size']} px, "
        f"--max-active {p['max_active']}"
    )
    print()

    def row(name: str, cell: Any, first_only: bool = False) -> list[str]:
        return [name, *(cell(f) if not first_only or f is first else "-" for f in runs)]

    rows = [
        row("exit code", lambda f: str(f["exit_code"])),
        row("tasks downloaded / lost", lambda f: f"{f['downloaded']} / {f['lost']}"),
        row("wall time, s", lambda f: fmt(f["wall_seconds"], 2)),
        row("throughput (tasks ÷ wall), tasks/s", lambda f: fmt(f["wall_tasks_per_second"]), True),
        row("creates at the simulator", lambda f: fmt(f["creates"])),
        row("API requests", lambda f: fmt(f["api_requests"])),
        row("downloads", lambda f: fmt(f["downloads"])),
        row("client CPU, s", lambda f: fmt(f["cpu_seconds"])),
        row("client CPU per task, ms", lambda f: ms(f["cpu_seconds_per_task"]), True),
        row("client peak RSS, MB", lambda f: fmt(f["peak_rss_mb"], 0)),
        row("lock file, bytes", lambda f: fmt(f["lock_bytes"], 0)),
        row("thumbnails", lambda f: fmt(f["thumbnails"])),
        row("report files (of 4)", lambda f: str(f["reports"])),
    ]
    print(table(["", "run to completion", "rerun (nothing to do)", "adoption (DB deleted)"], rows))
    print_targets(r["targets"])
    print_code([("run", first), ("rerun", runs[1]), ("adoption", runs[2])])
    for name, f in zip(("run", "rerun", "adoption"), runs, strict=True):
        if f["stderr_tail"]:
            print(f"\n{name}: stderr tail:\n{f['stderr_tail']}")


# --- main -----------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "flux_pipeline"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = len(dirty.splitlines())
    return head + (f" + {changed} uncommitted file(s) in flux_pipeline/" if changed else "")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Throughput benchmark: flux-pipeline vs a naive client on the simulator."
    )
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of scenarios")
    p.add_argument("--tasks", type=int, help="throughput: tasks per client [2000]")
    p.add_argument("--task-seconds", type=float, default=3.0, help="throughput: mean task time")
    p.add_argument("--task-spread", type=float, default=0.75, help="throughput: std. deviation")
    p.add_argument("--in-flight", type=int, default=100, help="API concurrency limit")
    p.add_argument("--rpm", type=int, default=10_000, help="API requests per minute")
    p.add_argument("--image-size", type=int, default=32, help="result images, px")
    p.add_argument("--seed", type=int, default=1, help="simulator seed")
    p.add_argument("--naive-first-wait", type=float, help="default: 20 s x task-seconds / 30")
    p.add_argument("--naive-poll-every", type=float, help="default: 3 s x task-seconds / 30")
    p.add_argument("--naive-429-sleep", type=float, default=1.0, help="naive: sleep on a 429")
    p.add_argument("--overhead-tasks", type=int, help="[20000]")
    p.add_argument("--overhead-max-active", type=int, default=1000)
    p.add_argument("--overhead-rpm", type=int, default=10_000_000)
    p.add_argument("--scale-tasks", type=int, help="[100000]")
    p.add_argument("--scale-image-size", type=int, default=16)
    p.add_argument(
        "--quick", action="store_true", help="smoke test: 300 / 2,000 / 3,000 tasks by default"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--workdir", type=Path, help="parent of the temporary directory")
    p.add_argument("--json", type=Path, help="write every figure to this file")
    args = p.parse_args(argv)
    defaults = (300, 2000, 3000) if args.quick else (2000, 20_000, 100_000)
    for name, default in zip(("tasks", "overhead_tasks", "scale_tasks"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenario_list) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {SCENARIOS}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is not None:  # a --workdir that does not exist yet is made
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench-throughput-", dir=args.workdir))
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "commit": git_describe(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    results["machine"]["load_average_at_start"] = load
    print(
        f"bench_throughput: commit {results['commit']}; {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}; load average {load}; work dir {root}"
    )
    runners = {
        "throughput": (scenario_throughput, print_throughput),
        "overhead": (scenario_overhead, print_overhead),
        "scale": (scenario_scale, print_scale),
    }
    try:
        for name in args.scenario_list:
            scenario, show = runners[name]
            started = time.monotonic()
            results[name] = scenario(args, root)
            results[name]["bench_seconds"] = time.monotonic() - started
            show(results[name])
            sys.stdout.flush()
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        if args.keep:
            print(f"\nkept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
