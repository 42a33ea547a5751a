"""``flux-pipeline diff``: added, removed, changed (which part of the key) and outputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.report.diff import diff_tasks, render_markdown, render_text
from flux_pipeline.report.entry import OutputEntry, TaskEntry

BEFORE = """\
version: 1
name: campaign
defaults:
  provider: auto
  input: {aspect_ratio: "1:1", mode: pro}
steps:
  - id: hero
    matrix:
      product: [mug, tee, cap]
    prompt: "A {{ product }} on a table"
  - id: banner
    from: hero
    prompt: "Add a headline"
"""
BENCH_FOR_TEE = "{{ 'bench' if product == 'tee' else 'table' }}"
AFTER = (
    BEFORE.replace("[mug, tee, cap]", "[mug, tee, hat]")  # cap removed, hat added
    .replace('on a table"', f'on a {BENCH_FOR_TEE}"')  # the tee's prompt only
    .replace('prompt: "Add a headline"', 'prompt: "Add a headline"\n    input: {mode: max}')
)


def report_of(tmp_path: Path, name: str, manifest_text: str) -> Path:
    manifest = tmp_path / f"{name}.yaml"
    manifest.write_text(manifest_text)
    out = tmp_path / name
    assert run_cli(["report", str(manifest), "--out", str(out)]) == 0
    return out / "report.json"


def diff_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    assert run_cli(["diff", *args, "--json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_manifest_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = report_of(tmp_path, "a", BEFORE), report_of(tmp_path, "b", AFTER)
    result = diff_json(capsys, str(a), str(b))
    assert result["added"] == ["hero@product=hat#1", "hero@product=hat#1/banner#1"]
    assert result["removed"] == ["hero@product=cap#1", "hero@product=cap#1/banner#1"]
    changed = {c["readable_id"]: c["parts"] for c in result["changed"]}
    assert {rid: [p["part"] for p in parts] for rid, parts in changed.items()} == {
        "hero@product=tee#1": ["prompt"],
        "hero@product=tee#1/banner#1": ["input.mode", "parent"],  # its parent's key changed
        "hero@product=mug#1/banner#1": ["input.mode"],
    }
    mode = changed["hero@product=mug#1/banner#1"][0]
    assert (mode["before"], mode["after"]) == ("pro", "max")
    prompt = changed["hero@product=tee#1"][0]
    assert (prompt["before"], prompt["after"]) == ("A tee on a table", "A tee on a bench")
    assert result["counts"] == {
        "added": 2, "removed": 2, "changed": 3, "unchanged": 1, "outputs_changed": 0
    }  # fmt: skip
    assert result["outputs"] == []
    assert run_cli(["diff", str(a), str(a), "--exit-code"]) == 0
    assert run_cli(["diff", str(a), str(b), "--exit-code"]) == 1
    text = capsys.readouterr().out
    assert "~ hero@product=tee#1: prompt" in text
    assert "+ hero@product=hat#1" in text


def entry(
    rid: str,
    key: str,
    *,
    outputs: tuple[OutputEntry, ...] = (),
    parent: str | None = None,
    parent_output_index: int | None = None,
    **inputs: Any,
) -> TaskEntry:
    request = {"provider": "auto", "input": {"prompt": "p", "aspect_ratio": "1:1"} | inputs}
    return TaskEntry(
        readable_id=rid,
        key=key,
        step=rid.rpartition("/")[2].partition("#")[0],
        parent=parent,
        parent_output_index=parent_output_index,
        request=request,
        outputs=outputs,
    )


def output(path: str, sha: str, size: int, url: str = "https://x/r.png") -> OutputEntry:
    return OutputEntry(path=path, url=url, bytes=size, sha256=sha)


def test_outputs_whose_bytes_changed() -> None:
    first = output("t-1.png", "aa", 10)
    a = {
        "t#1": entry("t#1", "k1", outputs=(first, output("t-2.png", "bb", 5))),
        "u#1": entry("u#1", "k2", outputs=(output("u.png", "cc", 7),)),
    }
    b = {
        "t#1": entry("t#1", "k1", outputs=(first, output("t-2.png", "dd", 6))),
        "u#1": entry("u#1", "k2", outputs=(output("u-1.png", "cc", 7),)),  # renamed
    }
    d = diff_tasks(a, b)
    assert not d.changed
    assert d.unchanged == 2
    assert [(o.path, o.change, o.bytes_before, o.bytes_after) for o in d.outputs] == [
        ("t-2.png", "changed", 5, 6),
        ("u-1.png", "added", None, 7),
        ("u.png", "removed", 7, None),
    ]
    assert "| `t-2.png` | `t#1` | changed | 5 B → 6 B |" in render_markdown(d)
    assert "* t-2.png (t#1): changed, 5 B -> 6 B" in render_text(d)


def test_parent_image_urls_of_two_runs_are_not_a_change() -> None:
    """A chained task's image is its parent's result URL, which differs between runs."""

    def chain(url: str, key: str, mode: str) -> dict[str, TaskEntry]:
        parent = entry("p#1", "kp", outputs=(output("p.png", "s", 1, url),))
        child = entry(
            "p#1/c#1", key, parent="p#1", parent_output_index=0, image_urls=[url], mode=mode
        )
        return {"p#1": parent, "p#1/c#1": child}

    d = diff_tasks(
        chain("https://x/run1.png", "k1", "pro"), chain("https://x/run2.png", "k2", "max")
    )
    assert [(c.readable_id, [p.part for p in c.parts]) for c in d.changed] == [
        ("p#1/c#1", ["input.mode"])
    ]


def test_provider_images_and_unexplained_keys() -> None:
    a = {"t#1": entry("t#1", "k1"), "u#1": entry("u#1", "k3")}
    b = {"t#1": entry("t#1", "k2"), "u#1": entry("u#1", "k4")}
    fields = {"prompt": "p", "aspect_ratio": "1:1", "image_urls": ["i"]}
    b["t#1"] = replace(b["t#1"], request={"provider": "official", "input": fields})
    d = diff_tasks(a, b)
    parts = {c.readable_id: [p.part for p in c.parts] for c in d.changed}
    assert parts == {"t#1": ["images", "provider"], "u#1": ["other"]}


def test_not_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"tasks": 3}')
    assert run_cli(["diff", str(bad), str(bad)]) == 2
    assert "not a flux-pipeline report.json" in capsys.readouterr().err
    assert run_cli(["diff", str(tmp_path / "missing.json"), str(bad)]) == 2
