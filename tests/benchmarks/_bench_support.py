"""Helpers of ``bench_throughput.py``: the simulator as a subprocess, measured child processes,
percentiles and plain-text tables. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

LISTENING = "flux-pipeline simulator listening on "
API_KEY = "sim-key"


@dataclass(frozen=True, kw_only=True)
class SimParams:
    """The flags of one ``flux-pipeline sim`` subprocess."""

    max_concurrent: int
    rpm: int
    task_seconds: float
    task_spread: float
    image_size: int
    seed: int = 1

    def argv(self) -> list[str]:
        return [
            "--max-concurrent",
            str(self.max_concurrent),
            "--rpm",
            str(self.rpm),
            "--task-seconds",
            repr(self.task_seconds),
            "--task-spread",
            repr(self.task_spread),
            "--image-size",
            str(self.image_size),
            "--seed",
            str(self.seed),
        ]


@dataclass(frozen=True, kw_only=True)
class Measured:
    """A finished child process: wall time and what ``wait4`` said about it."""

    returncode: int
    wall: float
    cpu_user: float
    cpu_sys: float
    maxrss_mb: float  # ru_maxrss is KiB on Linux
    timed_out: bool
    stderr_tail: str

    @property
    def cpu(self) -> float:
        return self.cpu_user + self.cpu_sys


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a child: no proxies for loopback, no CI step summary."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "github_step_summary")
    }
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _reap(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, Any] | None:
    """``wait4`` the child until ``deadline`` (monotonic); None if it is still running."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            code = os.waitstatus_to_exitcode(status)
            proc.returncode = code  # reaped here: Popen must not wait for it again
            return code, usage
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    log_dir: Path,
    name: str,
    timeout: float,
    cwd: Path | None = None,
) -> Measured:
    """Run ``argv`` to its end (killed after ``timeout`` s); stdout/stderr go to log files."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd)
        timed_out = False
        try:
            reaped = _reap(proc, started + timeout)
            if reaped is None:
                timed_out = True
                proc.send_signal(signal.SIGTERM)
                reaped = _reap(proc, time.monotonic() + 15.0)
            if reaped is None:
                proc.kill()
                reaped = _reap(proc, time.monotonic() + 15.0)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                _reap(proc, time.monotonic() + 15.0)
            raise
        wall = time.monotonic() - started
    if reaped is None:
        raise RuntimeError(f"{name}: pid {proc.pid} survived SIGKILL")
    code, usage = reaped
    return Measured(
        returncode=code,
        wall=wall,
        cpu_user=usage.ru_utime,
        cpu_sys=usage.ru_stime,
        maxrss_mb=usage.ru_maxrss / 1024.0,
        timed_out=timed_out,
        stderr_tail=_tail(err_path),
    )


class SimProcess:
    """``python -m flux_pipeline sim --port 0 ...`` in a subprocess of its own."""

    def __init__(self, params: SimParams, log_dir: Path, name: str) -> None:
        self.params = params
        log_dir.mkdir(parents=True, exist_ok=True)
        self._out_path = log_dir / f"{name}.stdout"
        self._err_path = log_dir / f"{name}.stderr"
        self._out = self._out_path.open("wb")
        self._err = self._err_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flux_pipeline", "sim", "--port", "0", *params.argv()],
            stdout=self._out,
            stderr=self._err,
            env=clean_env(),
        )
        self.url = self._wait_url(timeout=30.0)
        self.cpu: float | None = None  # user + sys, known once stopped

    def _wait_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self._out_path.read_text(errors="replace").splitlines():
                if line.startswith(LISTENING):
                    return line[len(LISTENING) :].strip()
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"simulator did not start: {_tail(self._err_path)}")

    def stats(self) -> dict[str, Any]:
        with httpx.Client(trust_env=False, timeout=30.0) as client:
            response = client.get(self.url + "/_sim/stats")
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            return data

    def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            reaped = _reap(self.proc, time.monotonic() + 10.0)
            if reaped is None:
                self.proc.kill()
                reaped = _reap(self.proc, time.monotonic() + 10.0)
            if reaped is not None:
                self.cpu = reaped[1].ru_utime + reaped[1].ru_stime
        self._out.close()
        self._err.close()


@contextlib.contextmanager
def simulator(params: SimParams, log_dir: Path, name: str) -> Iterator[SimProcess]:
    sim = SimProcess(params, log_dir, name)
    try:
        yield sim
    finally:
        sim.stop()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned plain text: the first column left, the others right."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def check(ok: bool | None) -> str:
    if ok is None:
        return "?"
    return "✓" if ok else "✗"
