"""Benchmark: build, write and read back a lock file of 100,000 entries (docs/lockfile.md).

Run: ``python tests/benchmarks/bench_lockfile.py [--entries N] [--keep DIR]``

The entries are what a finished run of 100,000 one-image tasks leaves (a taskId, one output,
one result URL, a request with a prompt). Prints the seconds to make the entries from state DB
records (``lock_entries``), to write the file (``write_lock``: text and atomic write), a
rewrite that changes nothing (compared, not written), to read and check it (``load_lock``),
a run's lock keeper's first write and its write at a stop with 1% of the tasks changed
(run/lock_keeper.py: only their blocks are made again), and the file's size.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flux_pipeline.plan.expand import load_plan  # noqa: E402
from flux_pipeline.report.lockfile import load_lock, lock_entries  # noqa: E402
from flux_pipeline.report.locktext import write_lock  # noqa: E402
from flux_pipeline.run.lock_keeper import LockKeeper  # noqa: E402
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState  # noqa: E402

MANIFEST = """\
version: 1
name: bench
defaults:
  input: {mode: pro, aspect_ratio: "1:1", output_format: png}
steps:
  - id: shot
    prompt: a product shot
"""


def records(count: int) -> dict[str, TaskRecord]:
    found = {}
    now = time.time()
    for i in range(count):
        key = hashlib.sha256(f"task {i}".encode()).hexdigest()
        task_id = f"task_{i:016x}"
        url = f"https://cdn.example.com/results/{task_id}/0.png"
        found[key] = TaskRecord(
            key=key,
            readable_id=f"shot@n={i}#1",
            step="shot",
            parent_key=None,
            parent_output_index=None,
            state=TaskState.DOWNLOADED,
            task_id=task_id,
            request_json=(
                '{"input":{"aspect_ratio":"1:1","mode":"pro","output_format":"png",'
                f'"prompt":"a product shot, variant {i}, soft light"}},"provider":"auto"}}'
            ),
            output=f"shot/n-{i}-1",
            output_format="png",
            result_urls=(url,),
            fail_code=None,
            fail_msg=None,
            attempts=1,
            api_create_time=None,
            api_complete_time=None,
            cost_time=None,
            first_submitted_at=now,
            submitted_at=now,
            finished_at=now,
            downloaded_at=now,
            updated_at=now,
            outputs=[
                OutputRecord(
                    index=0,
                    path=f"shot/n-{i}-1.png",
                    url=url,
                    bytes=20_000 + i,
                    sha256=hashlib.sha256(key.encode()).hexdigest(),
                )
            ],
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = directory / "bench.yaml"
        manifest.write_text(MANIFEST, encoding="utf-8")
        plan = load_plan(manifest)
        rows = records(args.entries)
        lock = directory / "bench.lock.json"

        started = time.perf_counter()
        entries = lock_entries(plan, rows, None)
        built = time.perf_counter() - started

        started = time.perf_counter()
        assert write_lock(lock, plan.name, entries)
        written = time.perf_counter() - started

        started = time.perf_counter()
        assert not write_lock(lock, plan.name, entries)  # the same text: left as it is
        unchanged = time.perf_counter() - started

        started = time.perf_counter()
        loaded = load_lock(lock, plan=plan, out_dir=directory / "out")
        read = time.perf_counter() - started
        assert loaded is not None
        assert len(loaded.entries) == args.entries

        # a run's lock keeper (run/lock_keeper.py): its first write makes every block; the
        # write at a stop remakes only the blocks of the tasks written since (1% here)
        keeper = LockKeeper(directory / "keeper.lock.json", plan, None)
        started = time.perf_counter()
        keeper.write(rows)
        first = time.perf_counter() - started
        changed = dict(list(rows.items())[: max(1, args.entries // 100)])
        for record in changed.values():
            record.attempts += 1
        started = time.perf_counter()
        assert keeper.write(changed, changed=True)
        at_stop = time.perf_counter() - started

        size = lock.stat().st_size
    print(f"lock file of {args.entries:,} entries: {size / 1e6:.1f} MB")
    print(f"  entries from state DB records: {built:6.2f} s")
    print(f"  write (text + atomic write):   {written:6.2f} s")
    print(f"  rewrite, nothing changed:      {unchanged:6.2f} s (compared, not written)")
    print(f"  read and check (load_lock):    {read:6.2f} s")
    print(f"  a run's keeper, first write:   {first:6.2f} s (every entry)")
    print(f"  a run's keeper, write at stop: {at_stop:6.2f} s ({len(changed):,} tasks changed)")


if __name__ == "__main__":
    main()
