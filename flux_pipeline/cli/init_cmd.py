"""``flux-pipeline init [DIR]``: a starter project that validates and runs on ``--simulate``.

It writes, into DIR (docs/cli.md):

- ``pipeline.yaml``, the starter manifest, whose schema modeline points at a relative path
  that exists wherever the project lives (not into this package's source tree);
- ``looks.csv``, the data file its matrix reads;
- ``.flux-pipeline/manifest.schema.json``, the manifest JSON Schema of this version
  (``manifest/schema.py``; ``flux-pipeline schema --output PATH`` refreshes it);
- a ``/out/`` line in ``.gitignore`` (appended once; the default output directory is
  ``out/<name>``, ``layout.default_out_dir``).

An existing manifest or data file is never overwritten without ``--force`` (exit 2).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from flux_pipeline.errors import ExitCode, UsageError
from flux_pipeline.layout import STATE_DIR
from flux_pipeline.manifest.schema import schema_text
from flux_pipeline.media import write_atomic

MANIFEST = "pipeline.yaml"
DATA = "looks.csv"
SCHEMA = f"{STATE_DIR}/manifest.schema.json"
IGNORE = "/out/"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_IGNORED_ALREADY = {"out", "out/", "/out", "/out/"}

STARTER = """\
# yaml-language-server: $schema={schema}
#
# A starter pipeline: every row of {data} x one subject, then a chained edit of each result.
# 3 looks x 1 = 3 images, each edited once: 6 tasks.
#   flux-pipeline validate {manifest}
#   flux-pipeline run {manifest} --simulate      # the built-in simulator: no key, no cost
#   APIXO_API_KEY=... flux-pipeline run {manifest}
version: 1
name: {name}
description: A starter pipeline made by flux-pipeline init

defaults:
  input:
    mode: pro
    aspect_ratio: "1:1"
    output_format: png

vars:
  subject: a ceramic coffee mug

steps:
  - id: hero
    matrix:
      look: {{csv: {data}}}   # one value per row; the first column labels it
    prompt: >-
      Product photograph of {{{{ vars.subject }}}} {{{{ look.setting }}}}, {{{{ look.light }}}},
      no text
    output: "hero/{{{{ look.look | slug }}}}"

  - id: banner
    from: hero                # edits each hero image
    prompt: >-
      Extend this photo into a wide web banner with empty space on the right
    input: {{aspect_ratio: "21:9"}}
"""

LOOKS = """\
look,setting,light
marble,on a white marble counter,soft window light from the left
picnic,on a checked picnic blanket in a park,late afternoon sun
studio,on a seamless pastel backdrop,even studio softbox light
"""


def project_name(directory: Path) -> str:
    """A manifest name for ``directory``: its name as a slug, else ``starter``."""
    from flux_pipeline.plan.templates import slug_part

    name = slug_part(directory.resolve().name)[:64].strip("-")
    return name if _NAME.match(name) else "starter"


def starter_manifest(name: str) -> str:
    return STARTER.format(schema=SCHEMA, data=DATA, manifest=MANIFEST, name=name)


def add_ignore(path: Path, line: str = IGNORE) -> bool:
    """Append ``line`` to the .gitignore at ``path`` unless it (or an equivalent) is there;
    ``True`` when the file changed."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if any(existing.strip() in _IGNORED_ALREADY for existing in text.splitlines()):
        return False
    if text and not text.endswith("\n"):
        text += "\n"
    write_atomic(path, f"{text}{line}\n")
    return True


@click.command()
@click.argument(
    "directory",
    required=False,
    default=".",
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--name", help="The manifest's name [default: the directory's name as a slug].")
@click.option("--force", is_flag=True, help="Overwrite an existing manifest and data file.")
def init(directory: Path, name: str | None, force: bool) -> int:
    """Start a new project in DIRECTORY (default: here): a starter manifest, its data file,
    the manifest JSON Schema for editors, and /out/ in .gitignore."""
    if name is not None and not _NAME.match(name):
        raise UsageError(f"--name {name!r}: use lowercase letters, digits, '-' and '_'")
    manifest, data = directory / MANIFEST, directory / DATA
    existing = [str(path) for path in (manifest, data) if path.exists()]
    if existing and not force:
        raise UsageError(
            f"{' and '.join(existing)} exist{'s' * (len(existing) == 1)} already: nothing "
            "written (--force overwrites)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(directory / SCHEMA, schema_text())
    write_atomic(data, LOOKS)
    write_atomic(manifest, starter_manifest(name or project_name(directory)))
    written = [manifest, data, directory / SCHEMA]
    if add_ignore(directory / ".gitignore"):
        written.append(directory / ".gitignore")
    for path in written:
        click.echo(str(path))
    click.echo(
        f"next: cd {shlex.quote(str(directory))} && flux-pipeline run {MANIFEST} --simulate",
        err=True,
    )
    return ExitCode.OK


COMMANDS: list[click.Command] = [init]
