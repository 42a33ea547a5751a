"""Which local files a manifest may read: only those inside its project.

Manifests arrive in pull requests. A reference image is sent to the API inline, so a manifest
that could name any file could send any image on the runner to a third party. The project is
the git work tree that holds the manifest (the nearest parent with a ``.git``), or the
manifest's own directory when it is in none. Paths are compared after resolving symlinks, so
neither ``..``, an absolute path nor a link leads outside.
"""

from __future__ import annotations

from pathlib import Path


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
