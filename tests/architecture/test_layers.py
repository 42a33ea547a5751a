"""The import rules of docs/architecture.md, checked on the source: imports flow one way.

cli -> run -> report -> plan -> manifest -> leaves (errors, layout, media, states, outcome);
the simulator imports nothing of the product (it stands in for the real API, so it must not
share our reading of it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "flux_pipeline"
LAYERS = ["leaves", "manifest", "plan", "report", "run", "cli"]  # lowest first
LEAVES = {"errors", "layout", "media", "states", "outcome", "redact", "__init__"}


def _layer(module: str) -> str:
    """'flux_pipeline.run.engine' -> 'run'; a top-level module is a leaf."""
    parts = module.split(".")
    if len(parts) < 2:
        return "leaves"
    top = parts[1]
    if top == "__main__":  # ``python -m flux_pipeline``: the command line
        return "cli"
    if top in LEAVES:
        return "leaves"
    return top


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            if base == "flux_pipeline":
                for alias in node.names:  # a submodule, or a name of the package itself
                    sub = PACKAGE / alias.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                    found.append((node.lineno, f"{base}.{alias.name}" if is_module else base))
            elif base.startswith("flux_pipeline."):
                found.append((node.lineno, base))
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("flux_pipeline")]
            found += [(node.lineno, name) for name in names]
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(relative.parts)


def test_the_package_has_the_layers_it_claims() -> None:
    tops = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert tops == {*LAYERS[1:], "simulator"}
    loose = {p.stem for p in PACKAGE.glob("*.py")}
    assert loose == {*LEAVES, "__main__"}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_imports_flow_one_way(path: Path) -> None:
    module = _name(path)
    own = _layer(module)
    bad = []
    for line, imported in _imports(path):
        if own == "simulator" or _layer(imported) == "simulator":
            continue  # checked below; the product may start the simulator (--simulate)
        if LAYERS.index(_layer(imported)) > LAYERS.index(own):
            bad.append(f"{module}:{line} imports {imported} ({_layer(imported)} > {own})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "simulator").rglob("*.py")), ids=lambda p: _name(p)
)
def test_the_simulator_imports_nothing_of_the_product(path: Path) -> None:
    outside = [
        f"line {line}: {name}"
        for line, name in _imports(path)
        if not name.startswith("flux_pipeline.simulator")
    ]
    assert not outside, outside


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rule itself: a plan module importing the engine would be reported."""
    source = tmp_path / "bad.py"
    source.write_text("from flux_pipeline.run.engine import Engine\nimport flux_pipeline.cli\n")
    names = [name for _, name in _imports(source)]
    assert names == ["flux_pipeline.run.engine", "flux_pipeline.cli"]
    assert LAYERS.index(_layer(names[0])) > LAYERS.index(_layer("flux_pipeline.plan.expand"))


MAX_LINES = 400


@pytest.mark.parametrize("path", _modules(), ids=lambda p: _name(p))
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{_name(path)} has {lines} lines (at most {MAX_LINES})"
