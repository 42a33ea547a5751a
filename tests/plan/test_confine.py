"""A manifest reads local files only inside its project (its git work tree, else its dir)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flux_pipeline.errors import ManifestError
from flux_pipeline.layout import project_root
from flux_pipeline.plan.expand import load_plan

from ..manifest.helpers import png

HEAD = "version: 1\nname: confined\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """tmp/repo (a git work tree) holding pipelines/, with a secret image outside it."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "pipelines" / "refs").mkdir(parents=True)
    (repo / "shared").mkdir()
    (repo / "pipelines" / "refs" / "ok.png").write_bytes(png())
    (repo / "shared" / "logo.png").write_bytes(png((1, 2, 3)))
    (tmp_path / "secret.png").write_bytes(png((9, 9, 9)))
    (tmp_path / "secret.txt").write_text("a\nb\n")
    return repo


def write(project: Path, body: str) -> Path:
    path = project / "pipelines" / "m.yaml"
    path.write_text(HEAD + body)
    return path


def errors(path: Path) -> str:
    with pytest.raises(ManifestError) as info:
        load_plan(path)
    return "\n".join(str(d) for d in info.value.diagnostics)


def test_project_root_is_the_git_work_tree(project: Path) -> None:
    assert project_root(project / "pipelines" / "refs") == project.resolve()


def test_files_inside_the_repository_are_fine_even_above_the_manifest(project: Path) -> None:
    path = write(
        project,
        "image_sets:\n  s:\n    - {path: refs/ok.png}\n    - {path: ../shared/logo.png}\n"
        "steps:\n  - id: a\n    matrix: {i: {image_set: s}}\n    prompt: 'x {{ i.name }}'\n"
        "    images: ['{{ i.url }}']\n",
    )
    assert len(load_plan(path).tasks) == 2


@pytest.mark.parametrize(
    "entry",
    ["{path: ../../secret.png}", "{path: SECRET_ABS}"],
)
def test_image_paths_outside_the_project_are_refused(project: Path, entry: str) -> None:
    entry = entry.replace("SECRET_ABS", str(project.parent / "secret.png"))
    path = write(
        project,
        f"image_sets:\n  s:\n    - {entry}\n"
        "steps:\n  - id: a\n    matrix: {i: {image_set: s}}\n    prompt: 'x {{ i.name }}'\n",
    )
    text = errors(path)
    assert "m.yaml:5:" in text
    assert "outside the project directory" in text


def test_a_symlink_leading_out_is_refused(project: Path) -> None:
    os.symlink(project.parent / "secret.png", project / "pipelines" / "refs" / "link.png")
    path = write(
        project,
        "image_sets:\n  s:\n    files: 'refs/*.png'\n"
        "steps:\n  - id: a\n    matrix: {i: {image_set: s}}\n    prompt: 'x {{ i.name }}'\n",
    )
    assert "outside the project directory" in errors(path)


def test_globs_and_axis_files_outside_are_refused(project: Path) -> None:
    path = write(
        project,
        "image_sets:\n  s:\n    files: '../../*.png'\n"
        "steps:\n  - id: a\n    matrix: {i: {image_set: s}}\n    prompt: 'x {{ i.name }}'\n"
        "  - id: b\n    matrix: {n: {lines: ../../secret.txt}}\n    prompt: 'y {{ n }}'\n",
    )
    text = errors(path)
    assert text.count("outside the project directory") == 2
