"""``junit.xml``: one test case per task, for CI test reporters.

One ``<testsuite>`` per step (manifest order), one ``<testcase>`` per task named by its
readable id (classname ``<manifest>.<step>``, time = the API's costTime). A failed task is a
``<failure>`` whose type is its failCode and whose message is ``failCode: failMsg``; an
expired one a ``<failure type="EXPIRED">``; a task not finished (planned, in flight, ambiguous,
not downloaded) is ``<skipped>`` with its state. Text from the API is stripped of the
characters XML 1.0 cannot hold.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Any

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

SKIPPED_TEXT = {
    "planned": "not started",
    "submitting": "ambiguous: create sent, answer lost (rerun with --resubmit-ambiguous)",
    "submitted": "still in flight at the API",
    "succeeded": "finished at the API, not downloaded yet",
}


def _clean(text: object) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def _seconds(entry: dict[str, Any]) -> str:
    cost = entry.get("costTime")
    return f"{cost / 1000:.3f}" if isinstance(cost, int | float) else "0.000"


def _case(suite: ET.Element, classname: str, entry: dict[str, Any]) -> tuple[int, int]:
    """Add ``entry``'s test case to ``suite``; (failures, skipped) it counts for."""
    case = ET.SubElement(
        suite,
        "testcase",
        name=_clean(entry["readable_id"]),
        classname=_clean(classname),
        time=_seconds(entry),
    )
    state: str = entry["state"]
    if state in ("failed", "expired"):
        code = entry.get("failCode") or ("EXPIRED" if state == "expired" else "FAILED")
        message = entry.get("failMsg") or (
            "the results expired before they were downloaded" if state == "expired" else ""
        )
        failure = ET.SubElement(
            case, "failure", type=_clean(code), message=_clean(f"{code}: {message}")
        )
        prompt = (entry.get("request") or {}).get("input", {}).get("prompt")
        details = [
            f"task: {entry['readable_id']}",
            f"state: {state}",
            f"taskId: {entry.get('taskId') or '-'}",
            f"attempts: {entry.get('attempts', 0)}",
            f"failCode: {code}",
            f"failMsg: {message or '-'}",
        ]
        if prompt:
            details.append(f"prompt: {prompt}")
        failure.text = _clean("\n".join(details))
        return 1, 0
    if state != "downloaded":
        ET.SubElement(case, "skipped", message=_clean(f"{state}: {SKIPPED_TEXT.get(state, '')}"))
        return 0, 1
    outputs = [o["path"] for o in entry.get("outputs", [])]
    if outputs:
        ET.SubElement(case, "system-out").text = _clean("\n".join(outputs))
    return 0, 0


def junit_xml(
    *, name: str, entries: list[dict[str, Any]], step_order: list[str], elapsed: float | None
) -> str:
    by_step: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_step[entry["step"]].append(entry)
    steps = [s for s in step_order if s in by_step] + sorted(set(by_step) - set(step_order))
    root = ET.Element("testsuites", name=_clean(f"flux-pipeline: {name}"))
    totals = [0, 0, 0]  # tests, failures, skipped
    for step in steps:
        suite = ET.SubElement(root, "testsuite", name=_clean(f"{name}.{step}"))
        failures = skipped = 0
        for entry in by_step[step]:
            failed, skip = _case(suite, f"{name}.{step}", entry)
            failures += failed
            skipped += skip
        cases = len(by_step[step])
        time = sum(float(_seconds(e)) for e in by_step[step])
        suite.set("tests", str(cases))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", str(skipped))
        suite.set("time", f"{time:.3f}")
        totals[0] += cases
        totals[1] += failures
        totals[2] += skipped
    root.set("tests", str(totals[0]))
    root.set("failures", str(totals[1]))
    root.set("errors", "0")
    root.set("skipped", str(totals[2]))
    if elapsed is not None:
        root.set("time", f"{elapsed:.3f}")
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
