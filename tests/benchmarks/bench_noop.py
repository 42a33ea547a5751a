"""Benchmark: the intact check of a no-op rerun over 100,000 downloaded outputs.

Run: ``python tests/benchmarks/bench_noop.py [--outputs N] [--bytes B] [--keep DIR]``

It writes N output files of B bytes (1,000 a directory) and their rows into a state DB, then
times, each over the whole set, in this process:

- the size-only check ``run`` used before the done rule (one ``stat`` an output);
- ``verify_downloaded`` (flux_pipeline/run/verify.py) with every memo holding: one ``stat``
  an output, nothing read (what a no-op rerun does);
- the same without memos (rows of an older DB, or files touched): every file hashed;
- reading the rows back from the state DB (``Store.records``), and committing the memos of
  N hashed files (``Store.refresh_memos``, one batch).

Figures only, no pass/fail: hashing scales with B (result images are 1-2 MB each).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from flux_pipeline.run.store import Store, import_records, open_store
from flux_pipeline.run.verify import Verification, verify_downloaded
from flux_pipeline.states import OutputRecord, TaskRecord, TaskState

PER_DIRECTORY = 1000


def _record(i: int, output: OutputRecord) -> TaskRecord:
    return TaskRecord(
        key=f"k{i:07d}",
        readable_id=f"gen/n-{i}",
        step="gen",
        parent_key=None,
        parent_output_index=None,
        state=TaskState.DOWNLOADED,
        task_id=f"t{i}",
        request_json="{}",
        output=f"gen/{i}",
        output_format="png",
        result_urls=(output.url,),
        fail_code=None,
        fail_msg=None,
        attempts=1,
        api_create_time=None,
        api_complete_time=None,
        cost_time=None,
        first_submitted_at=0.0,
        submitted_at=0.0,
        finished_at=0.0,
        downloaded_at=0.0,
        updated_at=0.0,
        outputs=[output],
    )


def write_outputs(out: Path, count: int, size: int) -> list[TaskRecord]:
    """``count`` files of ``size`` bytes (each different) and their records, memos set."""
    records = []
    filler = os.urandom(max(0, size - 8))
    for i in range(count):
        path = f"d{i // PER_DIRECTORY:04d}/{i:07d}.png"
        target = out / path
        if i % PER_DIRECTORY == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
        content = (i.to_bytes(8, "big") + filler)[:size]
        target.write_bytes(content)
        output = OutputRecord(
            index=0,
            path=path,
            url=f"https://results.test/{i}.png",
            bytes=size,
            sha256=hashlib.sha256(content).hexdigest(),
            mtime_ns=target.stat().st_mtime_ns,
        )
        records.append(_record(i, output))
    return records


def size_only(records: list[TaskRecord], out: Path) -> set[str]:
    """The check ``run`` made before the done rule (run/downloads.py ``file_intact``)."""

    def intact(path: Path, size: int) -> bool:
        try:
            return path.stat().st_size == size
        except OSError:
            return False

    return {
        r.key
        for r in records
        if r.state is TaskState.DOWNLOADED
        and r.outputs
        and all(intact(out / o.path, o.bytes) for o in r.outputs)
    }


def timed(label: str, fn: Callable[[], object], repeat: int) -> object:
    """Run ``fn`` ``repeat`` times; print the best and the worst wall time."""
    seconds = []
    result: object = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    print(f"{label:<46} best {min(seconds):7.3f} s   worst {max(seconds):7.3f} s")
    return result


async def store_figures(path: Path, records: list[TaskRecord], out: Path) -> None:
    import_records(path, records)  # the task rows (their outputs without memos) ...
    async with open_store(path) as store:  # ... and the outputs as the downloader writes them
        for record in records:
            store.mark_downloaded(record.key, record.outputs)
        await store.flush_and_wait()
    store = await Store.open(path)
    try:
        started = time.perf_counter()
        read = await store.records()
        print(
            f"{'Store.records(): rows and outputs read back':<58} "
            f"{time.perf_counter() - started:8.3f} s"
        )
        found = verify_downloaded(read.values(), out)
        if found.hashed or len(found.intact) != len(records):
            raise SystemExit(f"memos lost in the DB: {found.hashed} hashed")
        memos = [(r.key, 0, r.outputs[0].mtime_ns or 0) for r in records]
        started = time.perf_counter()
        store.refresh_memos(memos)
        await store.flush()
        print(
            f"{f'Store.refresh_memos: {len(memos):,} memos, one batch':<58} "
            f"{time.perf_counter() - started:8.3f} s (batches: {store.batches})"
        )
    finally:
        await store.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outputs", type=int, default=100_000)
    parser.add_argument("--bytes", type=int, default=4096, help="size of each file [4096]")
    parser.add_argument("--repeat", type=int, default=3, help="timings of each check [3]")
    parser.add_argument("--keep", type=Path, help="write the files and the DB here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        out = root / "out"
        print(f"writing {args.outputs:,} files of {args.bytes:,} bytes under {out} ...")
        records = write_outputs(out, args.outputs, args.bytes)
        unmemoised = [
            dataclasses.replace(r, outputs=[dataclasses.replace(r.outputs[0], mtime_ns=None)])
            for r in records
        ]
        n = len(records)
        before = timed(
            f"before: size only ({n:,} stat)", lambda: size_only(records, out), args.repeat
        )
        assert isinstance(before, set)
        assert len(before) == n
        memo = timed(
            f"after, memo holds ({n:,} stat, no read)",
            lambda: verify_downloaded(records, out),
            args.repeat,
        )
        fresh = timed(
            f"after, no memo ({n:,} stat + hash)",
            lambda: verify_downloaded(unmemoised, out),
            args.repeat,
        )
        for found, hashed in ((memo, 0), (fresh, n)):
            assert isinstance(found, Verification)
            assert found.hashed == hashed
            assert len(found.intact) == n
        anyio.run(store_figures, root / "state.sqlite3", records, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
