"""The layer map is a contract: each module imports only its own layer or lower ones, nothing imports in a circle,
and no module grows past 400 lines. Read from the source (every import statement, lazy ones inside functions too),
so no import at run time can hide one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sparsepack"

# Lowest first. A module may import from its own layer or below.
LAYERS = [
    ("sparsepack.errors", "sparsepack._st_compat"),
    ("sparsepack.contract",),
    ("sparsepack.metrics",),
    ("sparsepack.templates",),
    ("sparsepack.packaging", "sparsepack.wheel_models"),
    ("sparsepack.registry", "sparsepack.node", "sparsepack.serve"),
    ("sparsepack.migrate",),
    ("sparsepack.rollout", "sparsepack.demo"),
    ("sparsepack.cli", "sparsepack.__main__"),
]
MAX_LINES = 400


def rank(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(source: str, module: str, is_package: bool = False, top_level_only: bool = False) -> set[str]:
    """The sparsepack modules ``module`` (whose code is ``source``) imports; the package root itself is left out,
    as it only names the public API."""
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sparsepack.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("sparsepack"):
                continue
            for alias in node.names:  # `from . import x` names a module; `from .m import f` a name in m
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found - {"sparsepack"}


def imports_of(module: str, top_level_only: bool = False) -> set[str]:
    path = MODULES[module]
    return imports(path.read_text(), module, path.name == "__init__.py", top_level_only)


def upward(module: str, deps: set[str]) -> list[str]:
    mine = rank(module)
    assert mine is not None, module
    return sorted(d for d in deps if (r := rank(d)) is not None and r > mine)


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m != "sparsepack" and rank(m) is None] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "sparsepack"))
def test_imports_point_down(module):
    assert upward(module, imports_of(module)) == [], f"{module} imports a higher layer"


def test_the_checker_catches_a_lazy_upward_import():
    probe = "import json\n\ndef f():\n    from ..rollout import run\n    from . import manifest\n"
    deps = imports(probe, "sparsepack.contract.probe")
    assert deps == {"sparsepack.rollout.run", "sparsepack.contract.manifest"}
    assert upward("sparsepack.contract.probe", deps) == ["sparsepack.rollout.run"]
    assert imports(probe, "sparsepack.contract.probe", top_level_only=True) == set()


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d) :] + [d]
            if d not in state and (circle := visit(d)):
                return circle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (circle := visit(m)):
            return circle
    return None


def test_no_import_circles():
    graph = {m: {d for d in imports_of(m, top_level_only=True) if d in MODULES and d != m} for m in MODULES}
    assert find_circle(graph) is None


def test_the_circle_finder_finds_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


def test_no_module_over_400_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
