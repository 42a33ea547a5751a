"""Benchmark: the ``kill -9`` table. What each crash of ``flux-pipeline run`` leaves ambiguous,
next to what it really lost.

A 500-task manifest (root tasks, distinct prompts) runs against a ``flux-pipeline sim``
subprocess (0.2 s tasks; half the answers slowed 0.3 s after processing, so lost answers are
likely; ``--rpm 1200`` so most tasks wait for a budget token). The run is killed with SIGKILL
at 20 seeded moments (a seeded number of new creates, or of status requests once every task
is created) and resumed after each with ``--resubmit-ambiguous``. Per kill the table prints:

- ambiguous: tasks newly left ``submitting`` (the resume must hold or resubmit them);
- lost: creates the simulator received during that run whose taskId the state DB never
  recorded (``GET /_sim/tasks``, mapped to tasks by prompt through ``request_json``);
- diff: ambiguous - lost; unmatched: ambiguous tasks with no lost create at all (a task
  held for nothing: resubmitting it would not pay twice, but the run cannot know).

Exactly once wants diff and unmatched near 0 (at most the creates caught between their
``submitting`` row and their bytes leaving). ``tests/run/test_kill_table.py`` is the small
always-run version. Usage: ``python tests/benchmarks/bench_kill_table.py [--tasks N]
[--kills K] [--seed S]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.run.support import format_kill_table, kill_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-kill-") as work:
        rows = kill_table(Path(work), tasks=args.tasks, kills=args.kills, seed=args.seed)
    print(f"kill -9 table: {args.tasks} tasks, {args.kills} kills, seed {args.seed}")
    print(format_kill_table(rows))
    total_ambiguous = sum(r.ambiguous for r in rows)
    total_lost = sum(r.lost for r in rows)
    print(
        f"total: {total_ambiguous} ambiguous, {total_lost} lost answers, "
        f"{total_ambiguous - total_lost} difference, {sum(r.unmatched for r in rows)} unmatched "
        f"({time.monotonic() - started:.1f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
