"""``--json`` of ``validate``, ``run`` and ``status``: one JSON object on stdout each, of the
shapes docs/cli.md documents; ``run``'s against the simulator over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flux_pipeline.cli import run_cli

from ..run.support import SimProcess, clean_env, roots_manifest, run_argv, write_manifest

KEY = "sim-key"
BUCKETS = {"done", "failed", "blocked", "ambiguous", "expired", "in flight", "not started"}
RUN_KEYS = {
    "exit_code",
    "verdict",
    "buckets",
    "total",
    "created",
    "cost",
    "elapsed_seconds",
    "stop_reason",
    "last_error",
    "ambiguous",
    "out_dir",
    "state_db",
    "reports",
}


def test_validate_json_lists_counts_and_located_diagnostics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_manifest(tmp_path, roots_manifest("good", 3), "good.yaml")
    bad = write_manifest(
        tmp_path, "version: 1\nname: bad\nsteps:\n  - id: s\n    promt: p\n", "b.yaml"
    )
    assert run_cli(["validate", "--json", str(good), str(bad)]) == 2
    document = json.loads(capsys.readouterr().out)
    assert set(document) == {"ok", "exit_code", "errors", "manifests"}
    assert (document["ok"], document["exit_code"]) == (False, 2)
    first, second = document["manifests"]
    assert first == {
        "path": str(good),
        "ok": True,
        "name": "good",
        "tasks": 3,
        "steps": {"shot": 3},
        "diagnostics": [],
        "warnings": [],
    }
    assert (second["path"], second["ok"], second["tasks"]) == (str(bad), False, None)
    assert document["errors"] == len(second["diagnostics"]) >= 1
    diagnostic = second["diagnostics"][0]
    assert set(diagnostic) == {"file", "line", "column", "message"}
    assert diagnostic["line"] == 4
    assert any("promt" in d["message"] for d in second["diagnostics"])  # with a did-you-mean


def test_validate_json_of_valid_manifests_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_manifest(tmp_path, roots_manifest("good", 2), "good.yaml")
    assert run_cli(["validate", "--json", str(good)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["ok"], document["exit_code"], document["errors"]) == (True, 0, 0)


def test_run_json_and_status_json_after_a_run_with_a_failure(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path,
        "version: 1\nname: mixed\nsteps:\n  - id: shot\n    matrix:\n"
        "      subject: [cat, dog, forbidden fruit]\n    prompt: 'a {{ subject }}'\n",
    )
    out = tmp_path / "out"
    with SimProcess(tmp_path, "--task-seconds", "0.05", "--block-word", "forbidden") as sim:
        done = subprocess.run(
            run_argv(manifest, out, "--json"),
            env=clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=sim.base_url),
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # one object; progress stays on stderr
    summary = json.loads(lines[0])
    assert set(summary) == RUN_KEYS
    assert summary["exit_code"] == 1
    assert summary["verdict"] == "finished with failures"
    assert set(summary["buckets"]) == BUCKETS
    assert (summary["buckets"]["done"], summary["buckets"]["failed"]) == (2, 1)
    assert summary["total"] == 3
    assert summary["created"] >= 2
    assert summary["out_dir"] == str(out)
    assert Path(summary["state_db"]).is_file()
    assert set(summary["reports"]) == {"json", "markdown", "html", "junit"}
    for path in summary["reports"].values():
        assert Path(path).is_file()
    report = json.loads(Path(summary["reports"]["json"]).read_text(encoding="utf-8"))
    assert report["manifest"]["name"] == "mixed"
    assert KEY not in done.stdout

    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "flux_pipeline",
            "status",
            "--json",
            str(manifest),
            "--out",
            str(out),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert set(state) == {
        "state_db",
        "counts",
        "buckets",
        "verdict",
        "planned_total",
        "ambiguous",
        "last_run",
    }
    assert state["buckets"] == summary["buckets"]
    assert state["verdict"] == {"exit_code": 1, "text": "finished with failures"}
    assert state["planned_total"] == 3
    assert state["counts"]["downloaded"] == 2
    assert state["last_run"]["exit_code"] == 1
