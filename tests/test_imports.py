"""No import circles: the static import graph of actkit's modules has no cycle.

The graph counts every ``import`` statement, at module level or inside a function (a deferred import
that closes a circle still makes two modules depend on each other). A ``from package import name``
where name is a submodule is an edge to that submodule. Importing a package's submodule runs the
package's ``__init__`` first; that implied edge is not counted (every package with submodules has it).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Where each of actkit's packages lives in the source tree (pyproject maps kernels/ and cli/ into actkit).
PACKAGES = {"actkit": ROOT / "actkit", "actkit.kernels": ROOT / "kernels", "actkit.cli": ROOT / "cli"}
CHECKED = ("actkit", "actkit.kernels", "actkit.cli")


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The actkit modules that ``name`` (at ``path``) imports anywhere in its text."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != name)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _checked(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in CHECKED)


def test_import_graph_has_no_circles():
    modules = _modules()
    graph = {name: {t for t in _imports(name, path, modules) if _checked(t)}
             for name, path in modules.items() if _checked(name)}
    assert "actkit.kinds.base" in graph and graph["actkit.kinds.fewbit"]  # the walk found the modules
    assert _cycles(graph) == []


def test_graph_finds_a_circle():
    """The check itself: a deferred import back closes a circle, as fewbit and ops once did."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
