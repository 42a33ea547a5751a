"""``--regenerate PATTERN`` end to end (plan/generations.py, docs/keys.md): ``plan`` and ``run``
as subprocesses against the simulator over real HTTP, its counters the measure of what was
paid for.

A deliberate regeneration is a new key (a generation counter recorded in the state DB and the
lock file): the chosen tasks and their chained edits are created again, nothing else; the old
generation's record stays in the lock; the new image replaces the old at its path only once it
is downloaded; a rerun without the flag, or with the state DB deleted, creates nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.simulator import SimConfig, SimulatorThread

from .support import (
    admin_of,
    chained_manifest,
    clean_env,
    report_tasks,
    run_argv,
    sha256_of,
    write_manifest,
)

KEY = "regenerate-key"
MUG = "shot@subject=mug,style=ink#1"
MUG_EDIT = MUG + "/edit#1"


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig(api_keys=(KEY,), task_seconds=0.1, task_spread=0.0)) as s:
        yield s


def _run(sim: SimulatorThread, manifest: Path, out: Path, *extra: str) -> str:
    done = subprocess.run(
        run_argv(manifest, out, *extra),
        env=clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _plan(manifest: Path, out: Path, *extra: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "flux_pipeline", "plan", str(manifest), "--out", str(out), *extra],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _status(*argv: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "flux_pipeline", "status", "--json", *argv],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _creates(sim: SimulatorThread) -> int:
    creates: int = admin_of(sim).stats()["creates"]
    return creates


def _lock(manifest: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(manifest.with_name("shots.lock.json").read_text())
    return document


def _setup(sim: SimulatorThread, tmp_path: Path) -> tuple[Path, Path]:
    text = chained_manifest("shots", ["mug", "cup"], ["ink"])
    manifest = write_manifest(tmp_path, text, "shots.yaml")
    out = tmp_path / "out"
    _run(sim, manifest, out)
    assert _creates(sim) == 4
    return manifest, out


def test_regenerate_makes_a_new_generation_of_the_chosen_tasks_only(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    manifest, out = _setup(sim, tmp_path)
    before = report_tasks(out)
    old_key = before[MUG]["key"]
    old_file = out / before[MUG]["outputs"][0]["path"]
    old_sha = sha256_of(old_file)

    code, text = _plan(manifest, out, "--regenerate", "shot@subject=mug*", "--json")
    assert code == 0, text
    document = json.loads(text[text.index("{") :])
    assert document["cost"]["tasks"] == 2  # the mug and its edit, nothing else
    code, text = _plan(manifest, out, "--regenerate", "shot@subject=mug*")
    assert "--regenerate: 1 task(s) to a new generation" in text
    assert f"{MUG} (generation 1)" in text
    assert "would create 2 task(s)" in text
    assert f"new            {MUG}  (generation: 0 -> 1)" in text  # against the lock

    text = _run(sim, manifest, out, "--regenerate", "shot@subject=mug*")
    assert _creates(sim) == 6, text  # two more: the mug and its chained edit
    after = report_tasks(out)
    assert after[MUG]["key"] != old_key
    assert after[MUG]["outputs"][0]["path"] == before[MUG]["outputs"][0]["path"]
    assert sha256_of(old_file) != old_sha  # the new image, at the same path
    assert after[MUG_EDIT]["key"] != before[MUG_EDIT]["key"]
    cup = "shot@subject=cup,style=ink#1"
    assert after[cup]["key"] == before[cup]["key"]

    lock = _lock(manifest)["tasks"]
    assert lock[old_key]["state"] == "done"  # the old generation's record stays
    assert lock[old_key]["outputs"][0]["sha256"] == old_sha
    new = lock[after[MUG]["key"]]
    assert (new["generation"], new["regenerates"]) == (1, old_key)
    assert "generation" not in lock[after[cup]["key"]]
    code, text = _plan(manifest, out, "--json")
    review = json.loads(text[text.index("{") :])["lock"]
    assert review["counts"]["orphaned"] == 0  # the old generations are not orphans
    assert review["counts"]["superseded"] == 2  # the mug's generation 0 and its edit's
    assert {e["readable_id"] for e in review["superseded"]} == {MUG, MUG_EDIT}

    for where in ([str(manifest)], ["--out", str(out)]):  # the old generation is not a task
        code, text = _status(*where)
        assert code == 0, text
        assert json.loads(text)["buckets"]["done"] == 4

    _run(sim, manifest, out)  # without the flag: generation 1 is the task now
    assert _creates(sim) == 6
    shutil.rmtree(out / ".flux-pipeline")  # the state DB is lost: the lock knows
    text = _run(sim, manifest, out)
    assert _creates(sim) == 6, text
    assert report_tasks(out)[MUG]["key"] == after[MUG]["key"]

    _run(sim, manifest, out, "--regenerate", "shot@subject=mug*")  # asked again: generation 2
    assert _creates(sim) == 8
    assert _lock(manifest)["tasks"][report_tasks(out)[MUG]["key"]]["generation"] == 2


def test_a_failed_regeneration_keeps_the_old_image(sim: SimulatorThread, tmp_path: Path) -> None:
    """The new image replaces the old only once it is downloaded: a regeneration the API
    refuses (a second simulator that blocks the word "mug") leaves the old file at its path,
    and its record in the lock."""
    manifest, out = _setup(sim, tmp_path)
    before = report_tasks(out)
    old_file = out / before[MUG]["outputs"][0]["path"]
    old_sha = sha256_of(old_file)
    config = SimConfig(api_keys=(KEY,), task_seconds=0.1, task_spread=0.0, block_words=("mug",))
    with SimulatorThread(config) as strict:
        done = subprocess.run(
            run_argv(manifest, out, "--regenerate", MUG),
            env=clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=strict.base_url),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 1, done.stdout + done.stderr  # the new generation failed
        assert _creates(strict) == 1  # the mug's generation 1; its edit is blocked
    assert sha256_of(old_file) == old_sha
    lock = _lock(manifest)["tasks"]
    assert lock[before[MUG]["key"]]["state"] == "done"
    failed = [e for e in lock.values() if e.get("generation") == 1]
    assert [(e["id"], e["state"]) for e in failed] == [(MUG, "failed")]
    # asked again: generation 1 finished (failed), so generation 2 is made, and it works here
    _run(sim, manifest, out, "--regenerate", MUG)
    assert _creates(sim) == 6
    assert sha256_of(old_file) != old_sha
    assert _lock(manifest)["tasks"][report_tasks(out)[MUG]["key"]]["generation"] == 2


def test_regenerate_refuses_a_pattern_that_matches_nothing(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, chained_manifest("shots", ["mug"], ["ink"]), "shots.yaml")
    code, text = _plan(manifest, tmp_path / "out", "--regenerate", "shoot")
    assert code == 2
    assert "--regenerate 'shoot' matches no step id" in text
    assert "did you mean 'shot'" in text
    assert "Traceback" not in text


def test_a_never_finished_task_is_not_regenerated(sim: SimulatorThread, tmp_path: Path) -> None:
    """Nothing to regenerate before a first generation: the task runs as planned, once."""
    manifest = write_manifest(tmp_path, chained_manifest("shots", ["mug"], ["ink"]), "shots.yaml")
    out = tmp_path / "out"
    text = _run(sim, manifest, out, "--regenerate", "shot")
    assert "never finished a first generation" in text
    assert _creates(sim) == 2


def test_an_edited_generation_in_the_lock_is_refused_before_any_create(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    """The lock is untrusted input: a generation it claims under a key the manifest does not
    make for it (an edited lock) would create, and bill, a task nobody asked for. Refused with
    one line, exit 2, before anything is sent; as is a half-written generation."""
    manifest, out = _setup(sim, tmp_path)
    _run(sim, manifest, out, "--regenerate", MUG)
    assert _creates(sim) == 6
    lock_path = manifest.with_name("shots.lock.json")
    good = lock_path.read_text()
    document = json.loads(good)
    key = next(k for k, e in document["tasks"].items() if e.get("generation") == 1)
    entry = document["tasks"].pop(key)
    entry["generation"] = 7
    document["tasks"]["f" * 64] = entry
    lock_path.write_text(json.dumps(document))
    shutil.rmtree(out / ".flux-pipeline")
    done = subprocess.run(
        run_argv(manifest, out),
        env=clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "generation 7 of task shot@subject=mug,style=ink#1 is recorded under another key" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
    assert _creates(sim) == 6
    document = json.loads(good)
    document["tasks"][key]["generation"] = 0
    lock_path.write_text(json.dumps(document))
    code, text = _plan(manifest, out)
    assert code == 2
    assert "'generation' (at least 1) and 'regenerates' come together" in text
