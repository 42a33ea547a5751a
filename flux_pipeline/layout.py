"""Where things live: default paths, and the confinement of every path a manifest names.

Default paths: ``out/<manifest name>`` for outputs, ``OUT/.flux-pipeline/state.sqlite3`` for
the state DB (one DB per shard: ``state-2of3.sqlite3``), and beside it the ``--simulate``
simulator's own state (``state.simulator.db``).

Reading: a manifest may read local files only inside its project.

Manifests arrive in pull requests. A reference image is sent to the API inline, so a manifest
that could name any file could send any image on the runner to a third party. The project is
the git work tree that holds the manifest (the nearest parent with a ``.git``), or the
manifest's own directory when it is in none. Paths are compared after resolving symlinks, so
neither ``..``, an absolute path nor a link leads outside.

Writing: output paths are relative to the output directory and must stay inside it
(``inside``); nothing is written anywhere else.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

STATE_DIR = ".flux-pipeline"


def default_out_dir(name: str) -> Path:
    return Path("out") / name


def default_state_path(out_dir: Path, shard: tuple[int, int] | None = None) -> Path:
    """One DB per shard, so shard runs sharing an output directory never share a DB."""
    name = f"state-{shard[0]}of{shard[1]}.sqlite3" if shard else "state.sqlite3"
    return out_dir / STATE_DIR / name


def simulator_state_path(state_path: Path) -> Path:
    """Where ``run --simulate`` keeps its simulator's tasks: beside the state DB it serves
    (``state.simulator.db``; one per shard, like the DB), so a rerun finds them again."""
    return state_path.with_name(state_path.stem + ".simulator.db")


def project_root(manifest_dir: Path) -> Path:
    start = manifest_dir.resolve()
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            return candidate
    return start


def outside(root: Path, path: Path) -> str | None:
    """None when ``path`` is inside ``root``, else the one-line reason."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        return f"cannot resolve {path}: {exc}"
    if resolved == root or root in resolved.parents:
        return None
    return (
        f"{path} is outside the project directory {root}: a manifest may only read files "
        "inside its repository (or its own directory when not in one)"
    )


def inside(root: Path, relative: str) -> Path:
    """``root / relative`` for a relative POSIX path that stays inside ``root`` lexically and
    after resolving symlinks; ValueError otherwise."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ValueError(f"output path {relative!r} is not inside the output directory")
    target = root.joinpath(*parts)
    base = root.resolve()
    resolved = target.resolve()
    if resolved != base and base not in resolved.parents:
        raise ValueError(f"output path {relative!r} leads outside the output directory")
    return target
