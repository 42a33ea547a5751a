"""The API key appears in nothing a run writes or prints (docs/secrets.md: never printed, logged,
stored or written to a report)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from flux_pipeline.simulator import Faults, SimConfig, SimulatorThread

from .support import chained_manifest, clean_env, run_argv, write_manifest

SECRET = "apx-Secret-7f3kQ9zW2vLx"
WRONG = "apx-Wrong-Mb4nT8pR1cYe"


def needles(key: str) -> list[bytes]:
    raw = key.encode()
    return [raw, base64.b64encode(raw), base64.b64encode(b"Bearer " + raw), raw[::-1]]


@pytest.mark.slow
def test_api_key_is_in_no_file_and_no_output(tmp_path: Path) -> None:
    """Three runs with a distinctive key against a simulator that accepts it: async mode with
    5xx and dropped connections (so errors get reported) and the state DB outside the output
    directory, with $GITHUB_STEP_SUMMARY set; callback mode; and a run with another distinctive
    key the API rejects (401). Every byte of every file under the test's directory (outputs,
    reports, state DB with its WAL files, step summary, captured stdout/stderr) is searched
    for either key, raw, reversed or base64-encoded."""
    manifest = write_manifest(tmp_path, chained_manifest("secrets", ["fox", "owl"], ["ink", "oil"]))
    summary = tmp_path / "step-summary.md"
    outputs: list[str] = []
    faults = Faults(error_rate=0.2, drop_rate=0.1, drop_after=True)
    config = SimConfig(api_keys=(SECRET,), task_seconds=0.3, faults=faults, seed=11)

    def run(key: str, out: str, *extra: str) -> int:
        env = clean_env(APIXO_API_KEY=key, APIXO_BASE_URL=sim.base_url)
        env["GITHUB_STEP_SUMMARY"] = str(summary)
        result = subprocess.run(
            # each run its own lock: the rejected one must not adopt what the others paid for
            run_argv(manifest, tmp_path / out, "--lock", str(tmp_path / f"{out}.lock"), *extra),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        outputs.extend([result.stdout, result.stderr])
        return result.returncode

    with SimulatorThread(config) as sim:
        state = tmp_path / "elsewhere" / "state.sqlite3"
        codes = [run(SECRET, "async", "--state", str(state), "--resubmit-ambiguous")]
        # held after repeated drops (exit 1), or downloads to retry (exit 3): resume
        while codes[-1] in (1, 3) and len(codes) < 4:
            codes.append(run(SECRET, "async", "--state", str(state), "--resubmit-ambiguous"))
        sim.set_faults(error_rate=0.0, drop_rate=0.0)
        callback = run(SECRET, "callback", "--request-type", "callback")
        rejected = run(WRONG, "rejected")
        stats = sim.stats()

    assert codes[-1] == 0, outputs
    assert callback == 0, outputs
    assert rejected == 2, outputs
    assert stats["server_errors"] > 0
    assert summary.stat().st_size > 0
    assert (tmp_path / "async" / "report.json").is_file()
    assert (tmp_path / "callback" / "report.json").is_file()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert state in files
    assert any(p.suffix == ".png" for p in files)
    for path in files:
        data = path.read_bytes()
        for key in (SECRET, WRONG):
            for needle in needles(key):
                assert needle not in data, f"{path} contains the API key {needle!r}"
    printed = "\n".join(outputs)
    assert "401" in printed  # the rejection is reported...
    for key in (SECRET, WRONG):  # ... without the key
        assert key not in printed
        assert key[4:12] not in printed  # nor a telling fragment of it
