"""The core imports no Django settings machinery, and the package has no import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mingus_sessions"


def _core_modules() -> list[str]:
    """Every module of the core, those of its sub-packages included."""
    names = []
    for path in (PACKAGE / "_core").rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def _loaded_after(*imports: str) -> dict[str, list[str]]:
    """What a fresh interpreter, with no Django settings, has loaded after ``imports``."""
    program = (
        "import importlib, sys\n"
        f"for name in {list(imports)!r}:\n"
        "    importlib.import_module(name)\n"
        "print({top: sorted(m for m in sys.modules if m.split('.')[0] == top)\n"
        "       for top in ('django', 'celery', 'mingus_sessions')})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "", "PYTHONPATH": str(PACKAGE.parent)},
    )
    loaded: dict[str, list[str]] = ast.literal_eval(result.stdout.strip())
    return loaded


def test_the_core_imports_without_django_settings() -> None:
    """Every core module imports in a fresh interpreter with no settings, and loads nothing of
    the package outside the core and nothing of Django but ``django.core.exceptions``."""
    loaded = _loaded_after(*_core_modules())
    assert loaded["django"] == _loaded_after("django.core.exceptions")["django"]
    assert loaded["celery"] == []
    outside = [m for m in loaded["mingus_sessions"] if not m.startswith("mingus_sessions._core")]
    assert outside == ["mingus_sessions"]  # the package itself, whose names load on first use


def _import_cycles() -> list[list[str]]:
    """The package's import cycles (strongly connected modules), function-level imports included."""
    import grimp

    graph = grimp.build_graph("mingus_sessions", cache_dir=None)
    modules = sorted(graph.modules)
    edges = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in modules}
    return _strongly_connected(edges)


def _strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of more than one module that import each other in a ring."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in edges:
        if node not in index:
            visit(node)
    return groups


def test_the_package_has_no_import_cycle() -> None:
    """No module imports, even inside a function or only for type checking, one that imports it
    back, directly or through others."""
    assert _import_cycles() == []
