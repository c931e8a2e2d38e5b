"""The shape of the code: the import graph of restmq/ has no circle, not even one dodged by a late import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the restmq modules it imports anywhere: an import inside a function or under
    ``if TYPE_CHECKING`` dodges a circle at import time but is still one in the design.
    ``from package import submodule`` counts as importing the submodule."""
    files = {module_name(p): p for p in (ROOT / "restmq").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("restmq"):
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    deps.add(sub if sub in files else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("restmq"))
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_restmq_has_no_import_circle() -> None:
    """No module of restmq/ imports, directly or through others, a module that imports it."""
    assert circles(import_graph()) == []


#: Front ends (a module or a package) and the shared parts they use by composition.
FRONT_ENDS = ("http", "line", "resp", "memcache", "syslog", "xmlrpc")
SHARED = ("base", "registry", "pipeline", "connection", "flow", "nothttp")


def front_end_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] == ["restmq", "frontends"] and len(parts) > 2 and parts[2] in FRONT_ENDS:
        return parts[2]
    return None


def test_front_ends_import_neither_the_engine_nor_the_backend_nor_each_other() -> None:
    """A front end reaches the core through the dispatcher only, and shares parts by composition
    (XML-RPC is a resource of the HTTP front end: they may use each other)."""
    graph = import_graph()
    found = []
    for module, deps in graph.items():
        own = front_end_of(module)
        if own is None:
            continue
        for dep in deps:
            if dep.startswith(("restmq.engine", "restmq.backend")):
                found.append(f"{module} imports {dep}")
            other = front_end_of(dep)
            if other is not None and other != own and {own, other} != {"http", "xmlrpc"}:
                found.append(f"{module} imports {dep}")
    assert found == []


def test_no_front_end_imports_txredisapi() -> None:
    """Only the engine and the backend speak to Redis."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "restmq" / "frontends").rglob("*.py")
        if "txredisapi" in path.read_text()
    ]
    assert offenders == []
