"""When is a task done? (docs/resume.md): ``plan`` and ``run`` apply one rule, end to end
against the simulator: every output at its recorded size with its recorded SHA-256, the hash
skipped while the file's mtime_ns is the memo's.

Six downloaded tasks, one for each case: intact; same size but other bytes; touched (same
bytes, new mtime); deleted; truncated; and replaced by other bytes of the same size with the
mtime forced back (the memo's documented limit). Hashes are counted by wrapping
``media.sha256_file``, the one hash the rule calls.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from flux_pipeline import media
from flux_pipeline.simulator import SimConfig, SimulatorThread

from .support import (
    acli_json,
    admin_of,
    chained_manifest,
    check_outputs,
    rewritten_report,
    run_inprocess,
    sha256_of,
    spawn_run,
    state_path,
    write_manifest,
)

KEY = "done-key"
CASES = ("intact", "swapped", "touched", "deleted", "truncated", "forged")
REDOWNLOADED = {"swapped", "deleted", "truncated"}


class Hashes:
    """``media.sha256_file``, counted (the rule looks it up at each call)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.paths: list[Path] = []
        real = media.sha256_file

        def counted(path: Path) -> str:
            self.paths.append(Path(path))
            return real(path)

        monkeypatch.setattr(media, "sha256_file", counted)

    def take(self) -> list[str]:
        names = sorted(p.name for p in self.paths)
        self.paths.clear()
        return names


def other_bytes(content: bytes) -> bytes:
    """Same length, one byte different in the middle (as another image of the same size)."""
    middle = len(content) // 2
    return content[:middle] + bytes([content[middle] ^ 0xFF]) + content[middle + 1 :]


def memo_of(out: Path, path: Path) -> int | None:
    """The memo the state DB holds for the output file at ``path``."""
    db = sqlite3.connect(state_path(out))
    try:
        query = "SELECT mtime_ns FROM outputs WHERE path = ?"
        row = db.execute(query, (path.relative_to(out).as_posix(),)).fetchone()
    finally:
        db.close()
    value: int | None = row[0]
    return value


async def plan_reasons(manifest: Path, out: Path, ids: dict[str, str]) -> dict[str, str]:
    plan = await acli_json("plan", str(manifest), "--json", "--out", str(out))
    by_rid = {t["readable_id"]: t["reason"] for t in plan["tasks"]}
    return {case: by_rid[rid] for case, rid in ids.items()}


def damage(paths: dict[str, Path]) -> None:
    """Leave each case's file as its name says."""
    for case, path in paths.items():
        content = path.read_bytes()
        seen = path.stat()
        if case == "swapped":
            path.write_bytes(other_bytes(content))
            os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns + 3_000_000_000))
        elif case == "touched":
            os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns + 5_000_000_000))
        elif case == "deleted":
            path.unlink()
        elif case == "truncated":
            path.write_bytes(content[:-10])
        elif case == "forged":
            path.write_bytes(other_bytes(content))
            os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns))


@pytest.mark.anyio
async def test_plan_and_run_apply_one_done_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_manifest(
        tmp_path, chained_manifest("done", ["fox", "owl", "elk"], ["ink", "oil"], chained=False)
    )
    out = tmp_path / "out"
    hashes = Hashes(monkeypatch)
    with SimulatorThread(SimConfig(api_keys=(KEY,), task_seconds=0.1)) as sim:
        admin = admin_of(sim)
        first = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        assert first.outcome.exit_code == 0
        report = await rewritten_report(manifest, out)
        tasks = sorted(report["tasks"], key=lambda t: t["readable_id"])
        ids = {case: t["readable_id"] for case, t in zip(CASES, tasks, strict=True)}
        paths = {case: out / t["outputs"][0]["path"] for case, t in zip(CASES, tasks, strict=True)}
        right = {case: t["outputs"][0]["sha256"] for case, t in zip(CASES, tasks, strict=True)}
        assert hashes.take() == []  # the downloader's memos hold: nothing read

        damage(paths)
        inodes = {case: p.stat().st_ino for case, p in paths.items() if p.exists()}
        forged = paths["forged"].read_bytes()
        touched_memo = memo_of(out, paths["touched"])
        expected = {
            case: "done but output missing" if case in REDOWNLOADED else "done" for case in CASES
        }

        # plan: the rule, nothing written (the touched file is hashed again each time)
        for _ in range(2):
            assert await plan_reasons(manifest, out, ids) == expected
            assert hashes.take() == sorted([paths["swapped"].name, paths["touched"].name])
        assert memo_of(out, paths["touched"]) == touched_memo

        # run, the CLI in a subprocess: downloads exactly what plan called missing
        before = (await admin.astats())["requests_by_endpoint"]
        proc = spawn_run(
            manifest, out, base_url=sim.base_url, api_key=KEY, logs=tmp_path / "logs", tag="rerun"
        )
        assert await anyio.to_thread.run_sync(lambda: proc.proc.wait(timeout=120)) == 0, (
            proc.output()
        )
        after = (await admin.astats())["requests_by_endpoint"]
        assert after["results"] - before["results"] == len(REDOWNLOADED)
        assert after.get("create") == before.get("create")
        for case in CASES:
            if case in REDOWNLOADED:
                assert sha256_of(paths[case]) == right[case], case  # the right bytes again
            else:
                assert paths[case].stat().st_ino == inodes[case], case  # left alone
        assert paths["forged"].read_bytes() == forged  # the memo's limit: not noticed
        assert memo_of(out, paths["touched"]) == paths["touched"].stat().st_mtime_ns

        # everything memoised now: plan and a rerun read no file
        assert await plan_reasons(manifest, out, ids) == dict.fromkeys(CASES, "done")
        assert hashes.take() == []
        again = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        assert again.outcome.exit_code == 0
        assert again.outcome.created == 0
        assert hashes.take() == []
        final = (await admin.astats())["requests_by_endpoint"]
        assert final["results"] == after["results"]
    report = await rewritten_report(manifest, out)
    forged_path = paths["forged"].relative_to(out).as_posix()
    report["tasks"] = [
        t for t in report["tasks"] if t["outputs"][0]["path"] != forged_path
    ]  # its bytes are not the recorded ones (the limit)
    assert check_outputs(out, report) == len(CASES) - 1


@pytest.mark.anyio
async def test_a_touched_output_is_hashed_once_by_run_then_memoised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = write_manifest(tmp_path, chained_manifest("touch", ["fox"], ["ink"]))
    out = tmp_path / "out"
    hashes = Hashes(monkeypatch)
    with SimulatorThread(SimConfig(api_keys=(KEY,), task_seconds=0.1)) as sim:
        assert (
            await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
        ).outcome.exit_code == 0
        report: dict[str, Any] = await rewritten_report(manifest, out)
        paths = sorted(out / t["outputs"][0]["path"] for t in report["tasks"])
        assert len(paths) == 2  # the shot and its chained edit
        for path in paths:
            seen = path.stat()
            os.utime(path, ns=(seen.st_atime_ns, seen.st_mtime_ns + 2_000_000_000))
        runs = []
        for _ in range(2):
            rerun = await run_inprocess(manifest, out, base_url=sim.base_url, api_key=KEY)
            assert rerun.outcome.exit_code == 0
            assert rerun.outcome.created == 0
            runs.append(hashes.take())
        downloads = (await admin_of(sim).astats())["requests_by_endpoint"]["results"]
    assert runs == [sorted(p.name for p in paths), []]
    assert downloads == 2  # the first run's: touched files are not downloaded again
    for path in paths:
        assert memo_of(out, path) == path.stat().st_mtime_ns
