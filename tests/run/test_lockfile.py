"""The lock file and adoption (docs/lockfile.md), end to end: ``flux-pipeline run`` as a
subprocess against the simulator over real HTTP, the simulator's own counters as the measure
of what was paid for.

The state DB is a cache that CI loses: with it deleted, a rerun adopts the lock (or, with no
lock either, ``report.json``) and creates nothing it already paid for.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.simulator import SimConfig, SimulatorThread

from .support import (
    admin_of,
    chained_manifest,
    clean_env,
    db_rows,
    report_tasks,
    run_argv,
    sha256_of,
    spawn_run,
    state_path,
    wait_for,
    write_manifest,
)

KEY = "lock-key"


def _sim() -> SimulatorThread:
    return SimulatorThread(SimConfig(api_keys=(KEY,), task_seconds=0.1, task_spread=0.0))


def _run(
    sim: SimulatorThread, manifest: Path, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_argv(manifest, out, *extra),
        env=clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run(
        [sys.executable, "-m", "flux_pipeline", *argv],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _creates(sim: SimulatorThread) -> int:
    creates: int = admin_of(sim).stats()["creates"]
    return creates


def _drop_state(out: Path) -> None:
    shutil.rmtree(out / ".flux-pipeline")


def _lock(manifest: Path) -> Path:
    return manifest.with_name(manifest.stem + ".lock.json")


def _manifest(tmp_path: Path, styles: list[str], name: str = "locked") -> Path:
    text = chained_manifest(name, ["fox", "owl"], styles, chained=False)
    return write_manifest(tmp_path, text, name="shots.yaml")


def _edit_lock(path: Path, change: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    for entry in data["tasks"].values():
        change(entry)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def test_state_db_deleted_then_rerun_creates_nothing_and_keeps_the_lock(tmp_path: Path) -> None:
    """A finished run, a no-op rerun (the lock byte-identical), then the state DB deleted: the
    rerun adopts the lock, creates nothing (the simulator's count), exits 0, and the lock is
    still byte-identical."""
    manifest = _manifest(tmp_path, ["ink", "oil"])
    out = tmp_path / "out"
    with _sim() as sim:
        first = _run(sim, manifest, out)
        assert first.returncode == 0, first.stderr
        assert _creates(sim) == 4
        lock_text = _lock(manifest).read_bytes()
        entries = json.loads(lock_text)["tasks"]
        assert {e["state"] for e in entries.values()} == {"done"}
        assert len(entries) == 4
        noop = _run(sim, manifest, out)
        assert noop.returncode == 0, noop.stderr
        assert _lock(manifest).read_bytes() == lock_text
        _drop_state(out)
        again = _run(sim, manifest, out)
        assert again.returncode == 0, again.stderr
        assert _creates(sim) == 4
    assert "adopted 4 task(s) from the lock" in again.stderr
    assert "0 task(s) created" in again.stderr
    assert _lock(manifest).read_bytes() == lock_text
    assert {r.state for r in db_rows(state_path(out)).values()} == {"downloaded"}


def test_only_report_json_left_is_adopted(tmp_path: Path) -> None:
    """No state DB and no lock (an unzipped CI artifact): ``status`` and the rerun adopt
    ``report.json``; the rerun creates nothing, exits 0, and writes the lock again."""
    manifest = _manifest(tmp_path, ["ink", "oil"])
    out = tmp_path / "out"
    with _sim() as sim:
        assert _run(sim, manifest, out).returncode == 0
        lock_text = _lock(manifest).read_bytes()
        _drop_state(out)
        _lock(manifest).unlink()
        shown = _cli("status", str(manifest), "--out", str(out), "--json")
        again = _run(sim, manifest, out)
        assert again.returncode == 0, again.stderr
        assert _creates(sim) == 4
    assert "adopted 4 task(s) from the report" in again.stderr
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["counts"]["downloaded"] == 4  # status adopts it too
    rewritten = json.loads(_lock(manifest).read_text(encoding="utf-8"))["tasks"]
    original = json.loads(lock_text)["tasks"]
    assert rewritten.keys() == original.keys()
    for key, entry in original.items():
        assert rewritten[key]["outputs"] == entry["outputs"]
        assert rewritten[key]["taskId"] == entry["taskId"]


def test_one_more_matrix_value_adds_only_the_new_tasks_lines(tmp_path: Path) -> None:
    """Adding a style adds two tasks: the lock's diff adds their lines and changes none of
    the other tasks' (JSON's comma after a block aside, when a new task sorts last)."""
    manifest = _manifest(tmp_path, ["ink", "oil"])
    out = tmp_path / "out"
    with _sim() as sim:
        assert _run(sim, manifest, out).returncode == 0
        before = _lock(manifest).read_text(encoding="utf-8")
        _manifest(tmp_path, ["ink", "oil", "wax"])
        grown = _run(sim, manifest, out)
        assert grown.returncode == 0, grown.stderr
        assert _creates(sim) == 6
    after = _lock(manifest).read_text(encoding="utf-8")
    new_keys = json.loads(after)["tasks"].keys() - json.loads(before)["tasks"].keys()
    assert len(new_keys) == 2
    new_lines = _block_lines(after, new_keys)
    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    removed, added = _lines_of(diff, "- "), _lines_of(diff, "+ ")
    assert all(line == "    }" for line in removed), removed  # only a comma gained, if any
    assert len(removed) <= 1
    assert set(added) <= set(new_lines) | {"    },"}
    assert len(added) == len(new_lines) + len(removed)
    assert sum(1 for line in added if line.strip().startswith('"id"')) == 2
    print(_short_diff(before, after))


def _lines_of(diff: list[str], prefix: str) -> list[str]:
    return [line[2:] for line in diff if line.startswith(prefix)]


def _short_diff(before: str, after: str) -> str:
    return "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), n=1))


def _block_lines(text: str, keys: set[str]) -> list[str]:
    """The lines of the lock's blocks of ``keys`` (from the key line to its closing brace)."""
    lines = text.splitlines()
    found: list[str] = []
    inside = False
    for line in lines:
        match = re.match(r'^    "([0-9a-f]{64})": \{$', line)
        if match:
            inside = match.group(1) in keys
        if inside:
            found.append(line)
            if line in ("    }", "    },"):
                inside = False
    return found


def test_edit_run_revert_run_restores_the_first_image_without_a_create(tmp_path: Path) -> None:
    """edit prompt -> run -> revert -> run: the last run creates nothing, downloads the first
    variant again from its still valid URL (the file on disk is the second variant's), and
    ``plan`` says so before the run; with the DB deleted the same holds through the lock."""
    first_text = chained_manifest("revert", ["fox"], ["ink"], chained=False)
    manifest = write_manifest(tmp_path, first_text)
    out = tmp_path / "out"
    with _sim() as sim:
        assert _run(sim, manifest, out).returncode == 0
        (task,) = report_tasks(out).values()
        image = out / task["outputs"][0]["path"]
        first_sha = sha256_of(image)
        write_manifest(tmp_path, first_text.replace("drawn in", "painted in"))
        assert _run(sim, manifest, out).returncode == 0
        assert _creates(sim) == 2
        assert sha256_of(image) != first_sha
        changed = json.loads(_cli("plan", str(manifest), "--out", str(out), "--json").stdout)
        write_manifest(tmp_path, first_text)
        planned = json.loads(_cli("plan", str(manifest), "--out", str(out), "--json").stdout)
        reverted = _run(sim, manifest, out)
        assert reverted.returncode == 0, reverted.stderr
        assert _creates(sim) == 2
        assert sha256_of(image) == first_sha
        # again with the state DB gone: the lock holds both keys, the same path
        write_manifest(tmp_path, first_text.replace("drawn in", "painted in"))
        _drop_state(out)
        assert _run(sim, manifest, out).returncode == 0
        write_manifest(tmp_path, first_text)
        _drop_state(out)
        assert _run(sim, manifest, out).returncode == 0
        assert _creates(sim) == 2
    assert sha256_of(image) == first_sha
    assert [t["reason"] for t in planned["tasks"]] == ["done but output missing"]
    assert [t["action"] for t in planned["tasks"]] == ["download"]
    assert planned["lock"]["counts"]["unchanged"] == 1
    assert changed["lock"]["counts"] == changed["lock"]["counts"] | {"unchanged": 1, "new": 0}


def test_an_expired_entry_is_expired_not_created_until_regenerate_expired(tmp_path: Path) -> None:
    """State DB and image gone, the lock's expiry in the past: ``plan`` says expired, the run
    creates nothing (exit 1, expired); ``--regenerate-expired`` creates it again (exit 0)."""
    manifest = write_manifest(tmp_path, chained_manifest("exp", ["fox"], ["ink"], chained=False))
    out = tmp_path / "out"
    with _sim() as sim:
        assert _run(sim, manifest, out).returncode == 0
        (task,) = report_tasks(out).values()
        (out / task["outputs"][0]["path"]).unlink()
        _drop_state(out)
        _edit_lock(_lock(manifest), lambda e: e.update(urls_expire="2001-01-01T00:00:00Z"))
        shown = _cli("plan", str(manifest), "--out", str(out))
        planned = json.loads(_cli("plan", str(manifest), "--out", str(out), "--json").stdout)
        held = _run(sim, manifest, out)
        assert _creates(sim) == 1
        regenerated = _run(sim, manifest, out, "--regenerate-expired")
        assert _creates(sim) == 2
    assert [t["reason"] for t in planned["tasks"]] == ["expired"]
    assert "--regenerate-expired" in shown.stdout
    assert held.returncode == 1, held.stderr
    assert "1 expired" in held.stderr
    assert regenerated.returncode == 0, regenerated.stderr
    (entry,) = json.loads(_lock(manifest).read_text(encoding="utf-8"))["tasks"].values()
    assert entry["state"] == "done"
    assert entry["attempts"] == 2


def test_an_ambiguous_entry_without_a_db_stays_ambiguous(tmp_path: Path) -> None:
    """A lock entry ambiguous (create sent, answer lost) and no state DB: ``status`` and the
    run hold it ambiguous (exit 1), it is not created as new."""
    manifest = _manifest(tmp_path, ["ink"])
    out = tmp_path / "out"
    with _sim() as sim:
        assert _run(sim, manifest, out).returncode == 0
        target = "shot@subject=fox,style=ink#1"

        def lose(entry: dict[str, Any]) -> None:
            if entry["id"] == target:
                entry.update(state="ambiguous", taskId=None, outputs=[], result_urls=[])
                entry.update(urls_expire=None)

        _edit_lock(_lock(manifest), lose)
        for path in out.rglob("*.png"):
            path.unlink()
        _drop_state(out)
        status = json.loads(_cli("status", str(manifest), "--out", str(out), "--json").stdout)
        held = _run(sim, manifest, out)
        assert _creates(sim) == 2
    assert status["ambiguous"] == [target]
    assert held.returncode == 1, held.stderr
    assert "ambiguous" in held.stderr
    states = {r.readable_id: r.state for r in db_rows(state_path(out)).values()}
    assert states == {target: "submitting", "shot@subject=owl,style=ink#1": "downloaded"}
    entries = json.loads(_lock(manifest).read_text(encoding="utf-8"))["tasks"].values()
    assert {e["id"]: e["state"] for e in entries}[target] == "ambiguous"


def _md_rows(text: str, title: str) -> set[str]:
    """The task ids of the Markdown table under heading ``title``."""
    section = text.split(f"#### {title}", 1)[1].split("####", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))


def test_plan_markdown_lists_new_unchanged_and_orphaned_tasks(tmp_path: Path) -> None:
    """styles [ink, oil] run; then [ink, wax]: ``plan --format md`` lists exactly the wax
    tasks as new, the ink ones as unchanged and the oil ones as orphaned; the run creates the
    new ones and the lock keeps the orphaned (paid for)."""
    manifest = _manifest(tmp_path, ["ink", "oil"])
    out = tmp_path / "out"
    with _sim() as sim:
        assert _run(sim, manifest, out).returncode == 0
        _manifest(tmp_path, ["ink", "wax"])
        shown = _cli("plan", str(manifest), "--out", str(out), "--format", "md")
        assert _run(sim, manifest, out).returncode == 0
        assert _creates(sim) == 6
    assert shown.returncode == 0, shown.stderr
    ids = {f"shot@subject={s},style={t}#1" for s in ("fox", "owl") for t in ("ink", "oil", "wax")}
    assert _md_rows(shown.stdout, "New") == {i for i in ids if "wax" in i}
    assert _md_rows(shown.stdout, "Unchanged") == {i for i in ids if "ink" in i}
    assert _md_rows(shown.stdout, "Orphaned") == {i for i in ids if "oil" in i}
    assert "2 new, 2 unchanged, 2 orphaned" in shown.stdout
    entries = json.loads(_lock(manifest).read_text(encoding="utf-8"))["tasks"].values()
    assert {e["id"] for e in entries} == ids


def _valid_lock(tmp_path: Path) -> tuple[Path, Path, dict[str, Any]]:
    manifest = _manifest(tmp_path, ["ink"])
    out = tmp_path / "out"
    with _sim() as sim:
        assert _run(sim, manifest, out).returncode == 0
    return manifest, out, json.loads(_lock(manifest).read_text(encoding="utf-8"))


def _first(data: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = next(iter(data["tasks"].values()))
    return entry


MALFORMED: dict[str, Callable[[dict[str, Any]], object]] = {
    "not json": lambda d: "{not json",
    "not utf-8": lambda d: b"\xff\xfe{",
    "a list": lambda d: [],
    "format 3": lambda d: d | {"format": 3},
    "no tasks": lambda d: {k: v for k, v in d.items() if k != "tasks"},
    "tasks a list": lambda d: d | {"tasks": []},
    "bad key": lambda d: d | {"tasks": {"nothex": _first(d)}},
    "other manifest": lambda d: d | {"manifest": "another"},
    "escaping path": lambda d: _first(d)["outputs"][0].update(path="../../etc/x.png"),
    "absolute path": lambda d: _first(d)["outputs"][0].update(path="/etc/x.png"),
    "bad state": lambda d: _first(d).update(state="paid"),
    "bad sha": lambda d: _first(d)["outputs"][0].update(sha256="zz"),
    "bad object": lambda d: _first(d)["outputs"][0].update(object="../../secret"),
    "bytes text": lambda d: _first(d)["outputs"][0].update(bytes="12"),
    "bad expiry": lambda d: _first(d).update(urls_expire="tomorrow"),
    "done, no outputs": lambda d: _first(d).update(outputs=[]),
    "url not http": lambda d: _first(d).update(result_urls=["file:///etc/passwd"]),
    "deep request": lambda d: _first(d).update(request=json.loads("[" * 80 + "]" * 80)),
}


def test_a_malformed_lock_is_one_line_exit_2_and_nothing_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every variant of a broken lock: ``run``, ``plan`` and ``status`` exit 2 with one line
    naming the file, no traceback; the run sends nothing (the CLI in this process, and once
    as a subprocess)."""
    manifest, out, data = _valid_lock(tmp_path)
    lock = _lock(manifest)
    _drop_state(out)
    with _sim() as sim:
        monkeypatch.setenv("APIXO_API_KEY", KEY)
        monkeypatch.setenv("APIXO_BASE_URL", sim.base_url)
        for name, change in MALFORMED.items():
            copy = json.loads(json.dumps(data))
            result = change(copy)
            content = copy if result is None else result
            if isinstance(content, bytes):
                lock.write_bytes(content)
            else:
                text = content if isinstance(content, str) else json.dumps(content)
                lock.write_text(text, encoding="utf-8")
            for command in ("run", "plan", "status"):
                code = run_cli([command, str(manifest), "--out", str(out)])
                captured = capsys.readouterr()
                lines = captured.err.strip().splitlines()
                assert code == 2, (name, command, captured.err)
                assert len(lines) == 1, (name, command, lines)
                assert str(lock) in lines[0], (name, command, lines)
                assert "Traceback" not in captured.err + captured.out
        process = _run(sim, manifest, out)
        assert _creates(sim) == 0
    assert process.returncode == 2
    assert len(process.stderr.strip().splitlines()) == 1, process.stderr
    assert str(lock) in process.stderr
    assert not state_path(out).exists()


@pytest.mark.parametrize("flag", ["--no-lock", "--shard"])
def test_no_lock_and_shard_runs_write_no_lock(tmp_path: Path, flag: str) -> None:
    """``--no-lock`` neither reads nor writes it; a shard does not write it (``merge`` does)."""
    manifest = _manifest(tmp_path, ["ink"])
    out = tmp_path / "out"
    extra = ["--no-lock"] if flag == "--no-lock" else ["--shard", "1/1"]
    with _sim() as sim:
        done = _run(sim, manifest, out, *extra)
    assert done.returncode == 0, done.stderr
    assert not _lock(manifest).exists()


def test_a_run_stopped_by_sigterm_leaves_a_lock_that_a_rerun_without_db_polls(
    tmp_path: Path,
) -> None:
    """A cancelled CI job: SIGTERM once every task has its taskId. The lock written at the
    stop lists them ``submitted`` with their taskIds; with the state DB gone, the rerun polls
    them and downloads, creating nothing (the simulator's count), exit 0."""
    manifest = _manifest(tmp_path, ["ink", "oil"])
    out = tmp_path / "out"
    config = SimConfig(api_keys=(KEY,), task_seconds=3.0, task_spread=0.0)
    with SimulatorThread(config) as sim:
        run = spawn_run(
            manifest, out, base_url=sim.base_url, api_key=KEY, logs=tmp_path / "logs", tag="t"
        )
        try:
            wait_for(
                lambda: sum(1 for r in db_rows(state_path(out)).values() if r.task_id) == 4,
                timeout=60,
                what="four taskIds in the state DB",
            )
            run.proc.send_signal(signal.SIGTERM)
            assert run.proc.wait(timeout=60) == 3, run.output()
        finally:
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait(timeout=10)
        entries = json.loads(_lock(manifest).read_text(encoding="utf-8"))["tasks"].values()
        _drop_state(out)
        again = _run(sim, manifest, out)
        assert _creates(sim) == 4
    assert {e["state"] for e in entries} == {"submitted"}
    assert all(e["taskId"] for e in entries)
    assert again.returncode == 0, again.stderr
    assert "adopted 4 task(s) from the lock" in again.stderr
