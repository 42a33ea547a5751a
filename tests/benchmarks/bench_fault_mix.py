"""Benchmark: a run under mixed faults pays once; callback mode resolves lost answers itself.

A script, not a test (``tests/run/test_faults.py`` and ``tests/run/test_callback_resolution.py``
assert the same properties on smaller runs). Two scenarios against ``flux-pipeline sim``
subprocesses (0.3 s tasks):

1. async, faults: 5% of API connections dropped before processing (nothing created), 3% of
   requests processed and then their answer lost (a create billed, its taskId never seen),
   5% answered 5xx, every error answered with HTTP 200 (the code only in the body). The same
   command runs until it no longer exits 3; then, as a user would after reading the message,
   once more with ``--resubmit-ambiguous``.
2. callback, answers lost after creating (5%): the callback names the task's key, so every
   lost answer is resolved by its callback and confirmed with one status call.

Per run it prints the exit code, the buckets line and the simulator's counts: creates, distinct
inputs and duplicate creates. "No duplicate the user did not ask for": duplicates stay 0 until
``--resubmit-ambiguous`` is given, and then are at most the tasks held ambiguous.

Usage: ``python tests/benchmarks/bench_fault_mix.py [--tasks N]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.run.support import SimProcess, clean_env, run_argv, write_manifest  # noqa: E402

KEY = "sim-key"


def manifest(tasks: int) -> str:
    half = max(1, tasks // 2)
    return (
        "version: 1\nname: faults\n"
        "defaults: {input: {mode: pro, aspect_ratio: '1:1', output_format: png}}\n"
        "steps:\n"
        f"  - id: shot\n    matrix: {{n: {list(range(half))}}}\n"
        "    prompt: 'shot number {{ n }}'\n"
        "  - id: edit\n    from: shot\n    prompt: 'the same, at night'\n"
    )


def last_lines(text: str) -> str:
    keep = [line for line in text.splitlines() if "flux-pipeline:" in line and "/" not in line[:40]]
    return "\n      ".join(keep[-3:])


def run(sim: SimProcess, path: Path, out: Path, *extra: str) -> int:
    env = clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url)
    done = subprocess.run(
        run_argv(path, out, *extra), env=env, capture_output=True, text=True, timeout=600
    )
    stats = sim.stats()
    print(
        f"  exit {done.returncode} {' '.join(extra)}\n      {last_lines(done.stderr)}\n"
        f"      simulator: creates {stats['creates']}, distinct inputs "
        f"{stats['distinct_inputs']}, duplicate creates {stats['duplicate_creates']}, "
        f"lost after {stats['lost_after']}, drops {stats['drops']}"
    )
    return done.returncode


def scenario(tmp: Path, name: str, tasks: int, sim_args: list[str], extra: list[str]) -> None:
    print(f"== {name}: {tasks} tasks; sim {' '.join(sim_args)}")
    work = tmp / name
    work.mkdir()
    path = write_manifest(work, manifest(tasks))
    out = work / "out"
    with SimProcess(work, "--task-seconds", "0.3", "--seed", "7", *sim_args) as sim:
        for _ in range(6):
            code = run(sim, path, out, *extra)
            if code != 3:
                break
        if code == 1:
            run(sim, path, out, *extra, "--resubmit-ambiguous")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        faults = ["--drop-rate", "0.05", "--lost-after-rate", "0.03", "--error-rate", "0.05"]
        scenario(tmp, "async-faults", args.tasks, [*faults, "--errors-as-200"], [])
        scenario(
            tmp,
            "callback-lost-answers",
            args.tasks,
            ["--lost-after-rate", "0.05"],
            ["--request-type", "callback"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
