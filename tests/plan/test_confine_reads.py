"""The manifest and every file it names are read only inside the project, only if they are
regular files, and only up to a size (layout.read_inside); globs are bounded and confined
(plan/globs.py). No message quotes a file outside the project."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from flux_pipeline.cli import run_cli
from flux_pipeline.errors import ManifestError
from flux_pipeline.manifest.load import MAX_MANIFEST_BYTES
from flux_pipeline.plan import globs
from flux_pipeline.plan.expand import load_plan

from ..manifest.helpers import cli_limited, png

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
HEAD = "version: 1\nname: confined\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """tmp/repo (a git work tree) with pipelines/ and refs/; a credentials file outside it."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "pipelines" / "refs").mkdir(parents=True)
    (repo / "pipelines" / "refs" / "ok.png").write_bytes(png())
    (tmp_path / "credentials").write_text(f"[default]\naws_secret_access_key = {SECRET}\n")
    return repo


def errors(path: Path) -> str:
    with pytest.raises(ManifestError) as info:
        load_plan(path)
    return "\n".join(str(d) for d in info.value.diagnostics)


def test_a_manifest_linked_to_a_credentials_file_is_refused_without_quoting_it(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    link = project / "pipelines" / "m.yaml"
    link.symlink_to(project.parent / "credentials")
    assert run_cli(["validate", str(link)]) == 2
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    assert "aws_secret_access_key" not in captured.out + captured.err
    assert f"{link}: cannot read the manifest: {link} leads outside the project" in (captured.err)


def test_a_manifest_linked_to_dev_zero_is_refused_at_once(project: Path) -> None:
    (project / "pipelines" / "m.yaml").symlink_to("/dev/zero")
    done = cli_limited(project / "pipelines", "validate", "m.yaml", timeout=30)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "m.yaml: cannot read the manifest: m.yaml leads outside the project" in done.stderr


def test_a_fifo_or_device_inside_the_project_is_never_read(project: Path) -> None:
    os.mkfifo(project / "pipelines" / "m.yaml")
    done = cli_limited(project / "pipelines", "validate", "m.yaml", timeout=30)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "m.yaml is not a regular file (a device, FIFO or socket is never read)" in done.stderr
    os.mkfifo(project / "pipelines" / "words.txt")
    (project / "pipelines" / "n.yaml").write_text(
        HEAD + "steps:\n  - id: a\n    matrix: {w: {lines: words.txt}}\n    prompt: '{{ w }}'\n"
    )
    done = cli_limited(project / "pipelines", "validate", "n.yaml", timeout=30)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "n.yaml:5:25: steps[0].matrix.w.lines: " in done.stderr
    assert "words.txt is not a regular file" in done.stderr


def test_a_manifest_over_the_size_cap_is_refused(project: Path) -> None:
    path = project / "pipelines" / "m.yaml"
    path.write_text(HEAD + "# " + "x" * MAX_MANIFEST_BYTES + "\nsteps: [{id: a, prompt: p}]\n")
    with pytest.raises(ManifestError, match=f"the limit is {MAX_MANIFEST_BYTES} bytes"):
        load_plan(path)


def test_an_axis_file_linked_to_a_secret_is_refused_without_quoting_it(project: Path) -> None:
    (project / "pipelines" / "words.txt").symlink_to(project.parent / "credentials")
    path = project / "pipelines" / "m.yaml"
    path.write_text(
        HEAD + "steps:\n  - id: a\n    matrix: {w: {csv: words.txt}}\n    prompt: '{{ w }}'\n"
    )
    text = errors(path)
    assert "words.txt leads outside the project directory" in text
    assert SECRET not in text


def test_a_reference_image_swapped_for_a_link_after_planning_is_not_read(project: Path) -> None:
    image = project / "pipelines" / "refs" / "ok.png"
    path = project / "pipelines" / "m.yaml"
    path.write_text(
        HEAD + "image_sets:\n  s: [{path: refs/ok.png}]\n"
        "steps:\n  - id: a\n    matrix: {i: {image_set: s}}\n    prompt: 'x {{ i.name }}'\n"
        "    images: ['{{ i.url }}']\n"
    )
    plan = load_plan(path)
    (sha,) = plan.local_images
    image.unlink()
    image.symlink_to("/dev/zero")
    with pytest.raises(ManifestError, match="leads outside the project directory"):
        plan.data_uri(sha)


def test_an_absolute_glob_is_refused_without_walking_or_naming_files(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = project / "pipelines" / "m.yaml"
    path.write_text(
        HEAD + "image_sets:\n  s:\n    files: ['/usr/**/*.nonexistent', '/etc/*']\n"
        "steps:\n  - id: a\n    matrix: {i: {image_set: s}}\n    prompt: 'x {{ i.name }}'\n"
    )
    started = time.monotonic()
    assert run_cli(["validate", str(path)]) == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert (
        f"{path}:5:13: image_sets.s.files[0]: '/usr/**/*.nonexistent' is absolute: "
        "a pattern is relative to the manifest's directory"
    ) in err
    assert "image_sets.s.files[1]: '/etc/*' is absolute" in err
    assert "passwd" not in err


def test_a_glob_leading_out_names_the_pattern_not_the_files(project: Path) -> None:
    (project / "pipelines" / "refs" / "up").symlink_to(project.parent)
    (project / "pipelines" / "refs" / "leak.png").symlink_to(project.parent / "credentials")
    path = project / "pipelines" / "m.yaml"
    path.write_text(
        HEAD + "image_sets:\n  s:\n    files: ['../../../*', 'refs/up/*', 'refs/*.png']\n"
        "steps:\n  - id: a\n    matrix: {i: {image_set: s}}\n    prompt: 'x {{ i.name }}'\n"
    )
    text = errors(path)
    assert "'../../../*' leads outside the project directory" in text
    assert "'refs/up/*' leads outside the project directory" in text
    assert "'refs/*.png' matches refs/leak.png, a link leading outside the project" in text
    assert "credentials" not in text


def test_globs_are_bounded_in_directories_listed_and_files_matched(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = project / "pipelines" / "refs"
    for i in range(6):
        (refs / f"d{i}").mkdir()
        (refs / f"d{i}" / f"{i}.png").write_bytes(png())
    (refs / "d0" / "loop").symlink_to(refs)  # ** does not follow it
    path = project / "pipelines" / "m.yaml"
    path.write_text(
        HEAD + "image_sets:\n  s:\n    files: 'refs/**/*.png'\n"
        "steps:\n  - id: a\n    matrix: {i: {image_set: s}}\n    prompt: 'x {{ i.name }}'\n"
    )
    assert len(load_plan(path).tasks) == 7
    monkeypatch.setattr(globs, "MAX_GLOB_DIRS", 4)
    assert "'refs/**/*.png' lists more than 4 directories: narrow it" in errors(path)
    monkeypatch.setattr(globs, "MAX_GLOB_DIRS", 100)
    monkeypatch.setattr(globs, "MAX_GLOB_FILES", 3)
    assert "'refs/**/*.png' matches more than 3 files" in errors(path)


def test_glob_semantics_match_glob_glob(project: Path) -> None:
    import glob

    base = project / "pipelines"
    for name in ("refs/a/x.png", "refs/a/.h.png", "refs/.hid/y.png", "refs/b/c/z.png", "q.png"):
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(png())
    for pattern in ("refs/**/*.png", "**/*.png", "refs/*/*.png", "refs/?/[xy].png", "q.png",
                    "refs/**", "refs/a/.*.png", "./refs//a/*.png"):  # fmt: skip
        expected = sorted(
            {
                os.path.normpath(p)
                for p in glob.glob(pattern, root_dir=base, recursive=True)
                if (base / p).is_file()
            }
        )
        assert globs.confined_glob(base, project.resolve(), pattern) == expected, pattern
