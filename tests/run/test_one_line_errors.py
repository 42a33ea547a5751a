"""One line per error, always: text an API wrote (a taskId, a message) is printed with its
control characters escaped, so it can neither break a line nor forge one (run/caps.py
``one_line``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from flux_pipeline.run.api import CREATE_PATH, STATUS_PATH

from .support import (
    Answer,
    Exchange,
    HostileProxy,
    clean_env,
    cli,
    quick_sim,
    roots_manifest,
    run_argv,
    state_path,
    write_manifest,
)

KEY = "one-line-key-0123"
FORGED = "\n::error file=x.yaml::forged\r\nflux-pipeline: all done"


def test_an_api_taskid_with_newlines_prints_as_one_line(tmp_path: Path) -> None:
    """The API gives a taskId holding a newline and a workflow command, then refuses the
    status call about it (401) with a message holding another: the run stops (exit 2) and
    its last error names that taskId, escaped, on one line."""
    manifest = write_manifest(tmp_path, roots_manifest("lines", 2))
    out = tmp_path / "out"

    def rule(exchange: Exchange, answer: Answer) -> Answer:
        if exchange.path == CREATE_PATH and exchange.json()["input"]["prompt"].endswith("0"):
            body = answer.payload()
            body["data"]["taskId"] += FORGED
            return Answer.of_json(body)
        if exchange.path == STATUS_PATH and FORGED in str(exchange.query("taskId")):
            return Answer.raw_json(json.dumps({"code": 401, "message": f"no{FORGED}"}), 401)
        return answer

    env = {"GITHUB_ACTIONS": "true"}
    with quick_sim(KEY) as sim, HostileProxy(sim.base_url, rule) as proxy:
        result = subprocess.run(
            run_argv(manifest, out),
            env=clean_env(APIXO_API_KEY=KEY, APIXO_BASE_URL=proxy.base_url, **env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    text = result.stdout + result.stderr
    assert result.returncode == 2, text
    lines = text.splitlines()
    assert not [line for line in lines if "forged" in line and line.startswith("::error")]
    assert "flux-pipeline: all done" not in [line.strip() for line in lines]
    assert any(
        line.startswith("flux-pipeline: last error: ") and "\\n::error file=x.yaml" in line
        for line in lines
    ), text
    code, status = cli("status", "--state", str(state_path(out)))
    assert code == 0, status
    assert not [line for line in status.splitlines() if line.startswith("::error")], status
    assert "flux-pipeline: all done" not in [line.strip() for line in status.splitlines()]
