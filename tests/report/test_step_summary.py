"""report.md appended to $GITHUB_STEP_SUMMARY: the whole file stays within GitHub's 1 MiB
(what it already holds counts), a report that does not fit is cut at a line with a note."""

from __future__ import annotations

from pathlib import Path

from flux_pipeline.report.files import STEP_SUMMARY_LIMIT, TRUNCATED_NOTE, append_step_summary


def report(lines: int) -> str:
    return "".join(f"- `task@n={i}#1` failed: CONTENT_VIOLATION ✗\n" for i in range(lines))


def test_a_report_that_fits_is_appended_as_is(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_text("earlier step output\n", encoding="utf-8")
    append_step_summary(path, report(3))
    assert path.read_text(encoding="utf-8") == "earlier step output\n" + report(3)
    fresh = tmp_path / "new.md"  # the file need not exist yet
    append_step_summary(fresh, "# ok\n")
    assert fresh.read_text(encoding="utf-8") == "# ok\n"


def test_truncated_at_the_limit_counting_what_the_file_holds(tmp_path: Path) -> None:
    assert STEP_SUMMARY_LIMIT == 1024 * 1024
    path = tmp_path / "summary.md"
    earlier = "x" * 1000 + "\n"
    held = STEP_SUMMARY_LIMIT - 20_000
    path.write_text(earlier * (held // len(earlier)), encoding="utf-8")
    before = path.read_bytes()
    big = report(2000)  # ~100 KB: fits alone, not after what the file holds
    assert len(big.encode()) < STEP_SUMMARY_LIMIT
    append_step_summary(path, big)
    data = path.read_bytes()
    assert len(data) <= STEP_SUMMARY_LIMIT
    assert len(data) > STEP_SUMMARY_LIMIT - 200  # used, not wasted
    assert data.startswith(before)
    added = data[len(before) :].decode("utf-8")  # cut on a line: still valid UTF-8
    assert added.endswith(TRUNCATED_NOTE)
    kept = added.removesuffix(TRUNCATED_NOTE)
    assert big.startswith(kept + "\n")


def test_an_open_code_fence_is_closed_before_the_note(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    text = "# report\n\n```sh\n" + "flux-pipeline run x.yaml --out y\n" * 50 + "```\n"
    append_step_summary(path, text, limit=800)
    data = path.read_text(encoding="utf-8")
    assert len(data.encode()) <= 800
    assert data.endswith("\n```" + TRUNCATED_NOTE)
    assert data.count("```") == 2


def test_nothing_is_appended_when_not_even_the_note_fits(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_bytes(b"y" * (STEP_SUMMARY_LIMIT - 10))
    append_step_summary(path, report(1))
    assert path.stat().st_size == STEP_SUMMARY_LIMIT - 10
