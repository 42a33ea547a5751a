"""The repository explains itself: docs/ holds every page the code cites (docs/README.md).

- every docs page cited in the package, the tests or the README exists;
- comments and docstrings cite only files in the repository, never working notes a cloner
  does not have (the forbidden citations are listed in ``FORBIDDEN`` below);
- every relative link inside docs/*.md leads to a file of the repository, and the index
  links every page.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CITED = re.compile(r"\bdocs/[A-Za-z0-9_./-]+\.md\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FORBIDDEN = [
    ("DESIGN §", re.compile(r"DESIGN\s*§")),
    ("CONTRACT", re.compile(r"CONTRACT")),
    ("../shared", re.compile(r"\.\./shared")),
    ("/work/shared", re.compile(r"/work/shared")),
    ("issue <number>", re.compile(r"\bissues?\s*#?\d+", re.IGNORECASE)),
]
# pages code comments cite, and the pages a newcomer starts from
REQUIRED = [
    "README.md",
    "api-contract.md",
    "architecture.md",
    "cli.md",
    "engine.md",
    "exit-codes.md",
    "keys.md",
    "manifest.md",
    "performance.md",
    "reports.md",
    "resume.md",
    "secrets.md",
    "simulator.md",
    "states.md",
]


def _sources() -> list[Path]:
    return sorted([*(ROOT / "flux_pipeline").rglob("*.py"), *(ROOT / "tests").rglob("*.py")])


def _cited_pages() -> dict[str, list[str]]:
    """Cited docs page -> where it is cited (``file:line``)."""
    cited: dict[str, list[str]] = {}
    for path in [*_sources(), ROOT / "README.md"]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in CITED.finditer(line):
                where = f"{path.relative_to(ROOT)}:{number}"
                cited.setdefault(match.group(0), []).append(where)
    return cited


def comments_and_docstrings(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of every comment and every module/class/function docstring."""
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc is not None and node.body:
                yield node.body[0].lineno, doc


def forbidden_citations(source: str) -> list[tuple[int, str]]:
    """(line, what) of every forbidden citation in the comments and docstrings of ``source``."""
    found = []
    for line, text in comments_and_docstrings(source):
        for what, pattern in FORBIDDEN:
            if pattern.search(text):
                found.append((line, what))
    return found


def _links(page: Path) -> Iterator[tuple[int, str]]:
    in_code = False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        for match in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            yield number, match.group(1)


def _relative_target(target: str) -> str | None:
    """The file part of a relative link, or None for external links and in-page anchors."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
        return None
    return target.split("#", 1)[0]


@pytest.mark.parametrize("name", REQUIRED)
def test_required_page_exists(name: str) -> None:
    page = DOCS / name
    assert page.is_file(), f"docs/{name} is missing"
    assert page.read_text(encoding="utf-8").startswith("# "), f"docs/{name} has no title"


def test_every_cited_docs_page_exists() -> None:
    cited = _cited_pages()
    # the package cites its docs in many places: an empty result means the scan is broken
    assert {"docs/states.md", "docs/api-contract.md", "docs/keys.md"} <= set(cited)
    missing = {page: where for page, where in cited.items() if not (ROOT / page).is_file()}
    assert not missing, f"cited but missing: {missing}"


def test_no_comment_or_docstring_cites_notes_outside_the_repository() -> None:
    problems = []
    for path in _sources():
        for line, what in forbidden_citations(path.read_text(encoding="utf-8")):
            problems.append(f"{path.relative_to(ROOT)}:{line}: cites {what!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('"""See DESIGN § 2."""\n', [(1, "DESIGN §")]),
        ("x = 1  # the rule of CONTRACT.md\n", [(1, "CONTRACT")]),
        ('def f() -> None:\n    """As ../shared/notes say."""\n', [(2, "../shared")]),
        ("class A:\n    # read /work/shared/api first\n    pass\n", [(2, "/work/shared")]),
        ("# fixed in issue 12\n", [(1, "issue <number>")]),
        ("# see Issue #7\n", [(1, "issue <number>")]),
        ("# see docs/api-contract.md, ambiguity 1\n", []),
        ('path = "../shared/logo.png"  # a test value, not a citation\n', []),
        ('TEXT = "DESIGN § 1"\n', []),
    ],
)
def test_forbidden_citations_are_found_in_comments_and_docstrings_only(
    source: str, expected: list[tuple[int, str]]
) -> None:
    assert forbidden_citations(source) == expected


def test_every_relative_link_in_docs_resolves() -> None:
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= len(REQUIRED)
    broken = []
    checked = 0
    for page in pages:
        for number, target in _links(page):
            relative = _relative_target(target)
            if relative is None:
                continue
            checked += 1
            resolved = (page.parent / relative).resolve() if relative else page
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}:{number}: {target}")
    assert checked > len(pages), "hardly any links found: is the link pattern broken?"
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_index_links_every_page() -> None:
    index = DOCS / "README.md"
    linked = {_relative_target(target) for _, target in _links(index)}
    pages = {page.name for page in DOCS.glob("*.md")} - {"README.md"}
    assert pages <= linked, f"not in docs/README.md: {sorted(pages - linked)}"


def _mapped_modules() -> set[str]:
    """Module paths named in the first column of docs/architecture.md's module table."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    named: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            named.update(re.findall(r"`([\w/]+\.py)`", first))
    return named


def test_the_module_map_names_every_module_and_nothing_else() -> None:
    package = ROOT / "flux_pipeline"
    modules = {
        p.relative_to(package).as_posix()
        for p in package.rglob("*.py")
        if p.name != "__init__.py" or p.stat().st_size  # empty package markers need no row
    }
    named = _mapped_modules()
    assert not modules - named, f"modules missing from docs/architecture.md: {modules - named}"
    gone = named - modules
    assert not gone, f"docs/architecture.md names modules that are gone: {gone}"
