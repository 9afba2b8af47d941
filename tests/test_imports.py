"""Imports run one way, with no circles: the module graph of toolkit/, jobs/, families/ and extensions/.

Every import statement counts, wherever it is (module top, inside functions, under ``if TYPE_CHECKING``):
a lazy import still ties two modules together. ``from package import name`` depends on the package (its
``__init__`` runs first) and, when ``name`` is a submodule, on that module too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("toolkit", "jobs", "families", "extensions")
MAY_IMPORT = {"toolkit": {"toolkit"}, "jobs": {"toolkit", "jobs"}, "families": {"toolkit", "families"},
              "extensions": {"toolkit", "families", "extensions"}}
"""Which top-level packages each one may import: extensions -> families -> toolkit, jobs -> toolkit."""


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules (of ``packages`` under ``root``) it imports."""
    files = {module_name(root, path): path for top in packages for path in sorted((root / top).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {target for target in found if target in files and target != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or around a loop (Tarjan's strongly connected
    components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def wrong_way(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports against the direction (toolkit importing a family, a family an extension, ...) and between two
    extensions."""
    bad = []
    for source, targets in graph.items():
        for target in targets:
            top, other = source.split(".")[0], target.split(".")[0]
            between_extensions = top == other == "extensions" and source.split(".")[1:2] != target.split(".")[1:2]
            if other not in MAY_IMPORT[top] or (between_extensions and target != "extensions"):
                bad.append((source, target))
    return sorted(bad)


def test_no_import_circles() -> None:
    assert circles(import_graph(ROOT)) == []


def test_imports_run_one_way_and_no_extension_imports_another() -> None:
    graph = import_graph(ROOT)
    assert any(target.startswith("families.unet") for target in graph["extensions.sdxl.adapter"])  # the graph sees them
    assert wrong_way(graph) == []


def test_the_checks_see_lazy_type_only_and_package_imports(tmp_path: Path) -> None:
    """The rules on a small tree: a lazy import, a TYPE_CHECKING one and a ``from package import module`` each close
    a circle, and an extension importing another is reported."""
    files = {
        "toolkit/__init__.py": "",
        "toolkit/a.py": "def f():\n    from toolkit.b import g\n",
        "toolkit/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from toolkit.a import f\n",
        "toolkit/p/__init__.py": "from toolkit.p.m import x\n",
        "toolkit/p/m.py": "from toolkit.p import n\nx = 1\n",
        "toolkit/p/n.py": "from . import m\n",
        "extensions/__init__.py": "",
        "extensions/one/__init__.py": "from extensions.two import y\n",
        "extensions/two/__init__.py": "from toolkit import a\ny = 2\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, ("toolkit", "extensions"))
    assert sorted(circles(graph)) == [["toolkit.a", "toolkit.b"], ["toolkit.p", "toolkit.p.m", "toolkit.p.n"]]
    assert wrong_way(graph) == [("extensions.one", "extensions.two")]
