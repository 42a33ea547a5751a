"""The composite action's last step: the run's summary (``run --json``) -> step outputs, a
line in the step summary and the step's exit code (docs/ci.md).

Reads the environment: FP_SUMMARY (the JSON the run printed; missing or empty when the run
never finished: cancelled, killed, crashed), FP_RESUMABLE_EXIT (the step's exit code for a
resumable stop, exit 3: "0" by default), GITHUB_OUTPUT, GITHUB_STEP_SUMMARY. Standard library
only: it runs with whatever Python the job has.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

RESUMABLE = 3
FAILED_BUCKETS = ("failed", "expired", "blocked")


def _append(variable: str, text: str) -> None:
    target = os.environ.get(variable)
    if target:
        with Path(target).open("a", encoding="utf-8") as fh:
            fh.write(text)


def _cost(cost: dict[str, object] | None) -> str:
    if not cost or cost.get("total") is None:
        return ""
    return f"{cost['total']} {cost.get('currency') or ''}".strip()


def _summary() -> dict[str, object] | None:
    path = Path(os.environ.get("FP_SUMMARY", ""))
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def outputs(summary: dict[str, object] | None) -> dict[str, str]:
    """The action's outputs (every one, empty when the run left no summary)."""
    if summary is None:
        keys = ("exit-code", "verdict", "total", "done", "failed", "unfinished", "created")
        return dict.fromkeys(keys, "") | {
            "cost": "",
            "resumable": "false",
            "report": "",
            "report-md": "",
        }
    buckets = summary.get("buckets")
    counts = buckets if isinstance(buckets, dict) else {}
    total = int(str(summary.get("total", 0)))
    done = int(counts.get("done", 0))
    failed = sum(int(counts.get(name, 0)) for name in FAILED_BUCKETS)
    reports = summary.get("reports")
    paths = reports if isinstance(reports, dict) else {}
    code = int(str(summary.get("exit_code")))
    cost = summary.get("cost")
    return {
        "exit-code": str(code),
        "verdict": str(summary.get("verdict", "")),
        "total": str(total),
        "done": str(done),
        "failed": str(failed),
        "unfinished": str(total - done - failed),
        "created": str(summary.get("created", 0)),
        "cost": _cost(cost if isinstance(cost, dict) else None),
        "resumable": "true" if code == RESUMABLE else "false",
        "report": str(paths.get("json") or ""),
        "report-md": str(paths.get("markdown") or ""),
    }


def main() -> int:
    summary = _summary()
    values = outputs(summary)
    _append("GITHUB_OUTPUT", "".join(f"{name}={value}\n" for name, value in values.items()))
    if summary is None:
        print(
            "::error title=flux-pipeline::the run ended without its summary (cancelled, timed "
            "out or killed: see its log above). The state DB and the lock file keep what was "
            "created: rerun to resume; nothing is paid twice."
        )
        return 1
    code = int(values["exit-code"])
    counts = f"{values['done']} of {values['total']} done, {values['failed']} failed"
    if code == RESUMABLE:
        reason = str(summary.get("stop_reason") or "a limit")
        when = "at the deadline" if reason.startswith("deadline") else "early"
        text = (
            f"stopped {when} ({reason}), resumable: {counts}, {values['unfinished']} to go. "
            "Rerun this job, or the next push continues where it stopped: tasks already "
            "created are polled, never paid twice."
        )
        print(f"::notice title=flux-pipeline stopped {when}, resumable::{text}")
        _append("GITHUB_STEP_SUMMARY", f"\n> [!NOTE]\n> **flux-pipeline** {text}\n")
        exit_code = os.environ.get("FP_RESUMABLE_EXIT", "0").strip() or "0"
        return int(exit_code) if exit_code.isdigit() else 0
    if code != 0:
        print(f"::error title=flux-pipeline::{values['verdict']} (exit {code}): {counts}")
    return code


if __name__ == "__main__":
    sys.exit(main())
