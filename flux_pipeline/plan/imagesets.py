"""Image sets (docs/manifest.md): named lists of reference images, resolved and checked.

An image is remote (``url``, used as is) or local (``path``, or a file matched by ``files``).
A local file is checked now: it must exist, be a JPG/PNG/WebP by its magic bytes and weigh at
most 10 MB (the API's limits). Its identity is the SHA-256 of its content. Without a
``url_template`` it is referred to as ``LOCAL_IMAGE_PREFIX + sha256`` and sent inline as a
``data:`` URI at submit time; with one, the rendered template is its URL. An explicit entry's
extra fields (``sku``, ...) are kept for templates (``Image.extra``). ``Resolver.value_image``
applies the same rules to the value of an image column of a ``csv`` / ``lines`` axis
(``axes.py``).

Problems are reported through a callback with the YAML path they concern, so that every one of
them is found in one pass.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from flux_pipeline.errors import did_you_mean
from flux_pipeline.layout import read_inside
from flux_pipeline.manifest.models import ImageEntry, ImageFiles, ImageSet
from flux_pipeline.manifest.yamlload import Path_
from flux_pipeline.media import sha256_bytes, sniff_image
from flux_pipeline.plan import templates
from flux_pipeline.plan.globs import MAX_GLOB_FILES, GlobProblem, confined_glob
from flux_pipeline.plan.tasks import LOCAL_IMAGE_PREFIX

MAX_IMAGE_BYTES = 10 * 1024 * 1024

Report = Callable[[Path_, str], None]


@dataclass(frozen=True, slots=True)
class LocalImage:
    """A local reference file as checked at plan time."""

    path: Path
    mime: str
    size: int
    sha256: str
    root: Path  # the project it was read in: read again (at submit time) only inside it


@dataclass(frozen=True, slots=True)
class Image:
    """One image, as templates see it: ``.name``, ``.url``, (local) ``.path`` and the entry's
    own extra fields (``.sku``, ...)."""

    name: str
    url: str  # http(s) URL, or LOCAL_IMAGE_PREFIX + sha256 for a file sent inline
    path: str | None = None  # as written / matched, relative to the manifest
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_context(self) -> dict[str, Any]:
        value: dict[str, Any] = {"name": self.name, "url": self.url}
        if self.path is not None:
            value["path"] = self.path
        value.update(self.extra)
        return value


IMAGE_FIELDS = ("name", "url", "path")


@dataclass(frozen=True, slots=True)
class Unpublished:
    """Why a ``url_template`` gives no URL for a file."""

    message: str


def sniff_mime(head: bytes) -> str | None:
    """The MIME type of a JPG, PNG or WebP file from its first bytes, else None."""
    kind = sniff_image(head)
    return f"image/{kind}" if kind else None


def inspect_image(path: Path, root: Path) -> LocalImage | str:
    """Check a local reference file inside ``root``; return it, or what is wrong with it."""
    content = read_inside(
        root,
        path,
        MAX_IMAGE_BYTES,
        limit=f"the API accepts at most 10 MB ({MAX_IMAGE_BYTES})",
    )
    if isinstance(content, str):
        return content
    mime = sniff_mime(content[:16])
    if mime is None:
        return f"{path} is not a JPG, PNG or WebP image (checked by its first bytes)"
    return LocalImage(
        path=path, mime=mime, size=len(content), sha256=sha256_bytes(content), root=root
    )


def is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _stem_of_url(url: str) -> str:
    last = posixpath.basename(unquote(urlsplit(url).path))
    return last.rsplit(".", 1)[0] if "." in last else last


class Resolver:
    """Resolves every image set of a manifest, reporting problems as it goes."""

    def __init__(
        self, base: Path, variables: Mapping[str, Any], report: Report, *, root: Path
    ) -> None:
        self.base = base
        self.root = root  # nothing outside it may be read (layout.read_inside, globs.py)
        self.vars = variables
        self._report = report
        self.problems = 0
        self.local: dict[str, LocalImage] = {}  # sha256 -> file
        self._seen: dict[Path, LocalImage | str] = {}

    def report(self, at: Path_, message: str) -> None:
        self.problems += 1
        self._report(at, message)

    def resolve(self, set_name: str, spec: ImageSet) -> list[Image]:
        at: Path_ = ("image_sets", set_name)
        problems = self.problems
        images = self._files(at, spec) if isinstance(spec, ImageFiles) else self._entries(at, spec)
        names: dict[str, int] = {}
        for i, image in enumerate(images):
            if image.name in names:
                self.report(
                    (*at, i) if not isinstance(spec, ImageFiles) else at,
                    f"image set {set_name!r}: two images are named {image.name!r} "
                    "(names must be unique: matrices and readable ids use them)",
                )
            names.setdefault(image.name, i)
        if not images and isinstance(spec, list) and problems == self.problems:
            self.report(at, f"image set {set_name!r} is empty")
        return images

    def _local(self, at: Path_, relative: str, *, inline: bool = True) -> LocalImage | None:
        found = self.local_file(relative, inline=inline)
        if isinstance(found, str):
            self.report(at, found)
            return None
        return found

    def local_file(self, relative: str, *, inline: bool = True) -> LocalImage | str:
        """The checked local file at ``relative`` (to the manifest), or what is wrong with it;
        ``inline``: it will be sent as a ``data:`` URI, so it is kept for submit time."""
        path = self.base / relative
        found = self._seen.get(path)
        if found is None:
            found = inspect_image(path, self.root)
            self._seen[path] = found
        if not isinstance(found, str) and inline:
            self.local[found.sha256] = found
        return found

    def value_image(self, value: str, template: templates.Compiled | None) -> Image | str:
        """The image a CSV / lines value names (an http(s) URL or a local path, published by
        ``template`` if given), or what is wrong with it."""
        if is_http_url(value):
            return Image(name=_stem_of_url(value) or value, url=value)
        if "://" in value or value.startswith("data:"):
            return f"{value!r}: expected an http(s) URL or a local file's path"
        local = self.local_file(value, inline=template is None)
        if isinstance(local, str):
            return local
        name = Path(value).stem
        if template is None:
            return Image(name=name, url=LOCAL_IMAGE_PREFIX + local.sha256, path=value)
        url = self.published(template, value)
        if isinstance(url, Unpublished):
            return f"url_template: {url.message}"
        return Image(name=name, url=url, path=value)

    def published(self, template: templates.Compiled, relative: str) -> str | Unpublished:
        """``template`` rendered for the file at ``relative``: its URL."""
        name = Path(relative).stem
        context = templates.context(
            {"path": relative, "name": name, "file": Path(relative).name, "vars": self.vars}
        )
        try:
            url = templates.render(template, context).strip()
        except templates.TemplateProblem as exc:
            return Unpublished(str(exc))
        if not is_http_url(url):
            return Unpublished(f"renders {url!r} for {relative}: not an http(s) URL")
        return url

    def _extra(self, at: Path_, entry: ImageEntry) -> dict[str, Any]:
        extra = dict(entry.model_extra or {})
        for key in extra:
            hint = did_you_mean(key, list(IMAGE_FIELDS))
            if hint:
                self.report(
                    (*at, key),
                    f"field {key!r} looks like a typo{hint}; rename it if it is a field of "
                    "your own",
                )
        return extra

    def _entries(self, at: Path_, entries: list[ImageEntry]) -> list[Image]:
        images: list[Image] = []
        for i, entry in enumerate(entries):
            where = (*at, i)
            if entry.url is not None:
                if not is_http_url(entry.url):
                    self.report((*where, "url"), f"expected an http(s) URL, found {entry.url!r}")
                    continue
                name = entry.name or _stem_of_url(entry.url)
                if not name:
                    self.report(where, "cannot name this image from its URL: add `name`")
                    continue
                images.append(Image(name=name, url=entry.url, extra=self._extra(where, entry)))
            elif entry.path is not None:
                local = self._local((*where, "path"), entry.path)
                if local is None:
                    continue
                name = entry.name or Path(entry.path).stem
                url = LOCAL_IMAGE_PREFIX + local.sha256
                images.append(
                    Image(name=name, url=url, path=entry.path, extra=self._extra(where, entry))
                )
        return images

    def _files(self, at: Path_, spec: ImageFiles) -> list[Image]:
        patterns = [spec.files] if isinstance(spec.files, str) else spec.files
        if not patterns:
            self.report((*at, "files"), "expected at least one glob pattern")
            return []
        matched: list[str] = []
        for j, pattern in enumerate(patterns):
            where: Path_ = (*at, "files") if isinstance(spec.files, str) else (*at, "files", j)
            if not pattern.strip():
                self.report(where, "expected a glob pattern, found an empty string")
                continue
            try:
                found = confined_glob(self.base, self.root, pattern)
            except GlobProblem as exc:
                self.report(where, str(exc))
                continue
            if not found:
                self.report(where, f"{pattern!r} matches no files (relative to {self.base})")
            matched.extend(p for p in found if p not in matched)
        if len(matched) > MAX_GLOB_FILES:
            self.report((*at, "files"), f"matches {len(matched)} files; at most {MAX_GLOB_FILES}")
            return []
        template: templates.Compiled | None = None
        if spec.url_template is not None:
            try:
                template = templates.compile_template(spec.url_template)
            except templates.TemplateProblem as exc:
                self.report((*at, "url_template"), str(exc))
                return []
        images: list[Image] = []
        for relative in matched:
            local = self._local((*at, "files"), relative, inline=spec.url_template is None)
            if local is None:
                continue
            name = Path(relative).stem
            if template is None:
                images.append(
                    Image(name=name, url=LOCAL_IMAGE_PREFIX + local.sha256, path=relative)
                )
                continue
            url = self.published(template, relative)
            if isinstance(url, Unpublished):
                self.report((*at, "url_template"), url.message)
                return images
            images.append(Image(name=name, url=url, path=relative))
        return images
