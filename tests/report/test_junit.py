"""junit.xml from task entries: a suite per step, a case per task, failures and skips."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from flux_pipeline.report.junit import junit_xml

from .support import entry


def test_cases_failures_skips_and_text_xml_cannot_hold() -> None:
    entries = [
        entry("b@n=1#1", step="b", outputs=["b/1.png"]),
        entry(
            "b@n=2#1",
            step="b",
            state="failed",
            fail_code="X",
            fail_msg="bad\x00\x1b <&> \U0001f600",
        ),
        entry("b@n=3#1", step="b", state="expired"),
        entry("a#1", step="a", state="submitting"),
        entry("a#2", step="a", state="planned"),
    ]
    text = junit_xml(name="m", entries=entries, step_order=["a", "b"], elapsed=2.5)
    root = ET.fromstring(text)  # noqa: S314 (our own output)
    assert root.attrib == {
        "name": "flux-pipeline: m",
        "tests": "5",
        "failures": "2",
        "errors": "0",
        "skipped": "2",
        "time": "2.500",
    }
    assert [s.attrib["name"] for s in root.iter("testsuite")] == ["m.a", "m.b"]
    cases = {c.attrib["name"]: c for c in root.iter("testcase")}
    assert cases["b@n=1#1"].attrib["classname"] == "m.b"
    assert cases["b@n=1#1"].attrib["time"] == "1.500"
    assert [c.tag for c in cases["b@n=1#1"]] == ["system-out"]
    failure = cases["b@n=2#1"].find("failure")
    assert failure is not None
    assert failure.attrib["type"] == "X"
    assert failure.attrib["message"] == "X: bad\ufffd\ufffd <&> \U0001f600"
    assert "prompt: a prompt" in (failure.text or "")
    expired = cases["b@n=3#1"].find("failure")
    assert expired is not None
    assert expired.attrib["type"] == "EXPIRED"
    skipped = cases["a#1"].find("skipped")
    assert skipped is not None
    assert skipped.attrib["message"].startswith("submitting: ambiguous")
    assert cases["a#2"].find("skipped") is not None
