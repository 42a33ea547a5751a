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
from collections.abc import Sequence

from flux_pipeline.report.entry import TaskEntry
from flux_pipeline.states import TaskState

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

AMBIGUOUS_HINT = " (rerun with --resubmit-ambiguous)"
EXPIRED_MESSAGE = "the results expired before they were downloaded"


def _clean(text: object) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def _seconds(entry: TaskEntry) -> str:
    cost = entry.cost_time
    return f"{cost / 1000:.3f}" if cost is not None else "0.000"


def _case(suite: ET.Element, classname: str, entry: TaskEntry) -> tuple[int, int]:
    """Add ``entry``'s test case to ``suite``; (failures, skipped) it counts for."""
    case = ET.SubElement(
        suite,
        "testcase",
        name=_clean(entry.readable_id),
        classname=_clean(classname),
        time=_seconds(entry),
    )
    state = entry.state
    if state.failed:
        code = entry.failure_code
        message = entry.fail_msg or (EXPIRED_MESSAGE if state is TaskState.EXPIRED else "")
        failure = ET.SubElement(
            case, "failure", type=_clean(code), message=_clean(f"{code}: {message}")
        )
        details = [
            f"task: {entry.readable_id}",
            f"state: {state.value}",
            f"taskId: {entry.task_id or '-'}",
            f"attempts: {entry.attempts}",
            f"failCode: {code}",
            f"failMsg: {message or '-'}",
        ]
        if entry.prompt:
            details.append(f"prompt: {entry.prompt}")
        failure.text = _clean("\n".join(details))
        return 1, 0
    if state is not TaskState.DOWNLOADED:
        hint = AMBIGUOUS_HINT if state is TaskState.SUBMITTING else ""
        ET.SubElement(case, "skipped", message=_clean(f"{state.value}: {state.text}{hint}"))
        return 0, 1
    outputs = [o.path for o in entry.outputs]
    if outputs:
        ET.SubElement(case, "system-out").text = _clean("\n".join(outputs))
    return 0, 0


def junit_xml(
    *, name: str, entries: Sequence[TaskEntry], step_order: list[str], elapsed: float | None
) -> str:
    by_step: dict[str, list[TaskEntry]] = defaultdict(list)
    for entry in entries:
        by_step[entry.step].append(entry)
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
