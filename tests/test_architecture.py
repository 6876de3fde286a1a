"""The project's import structure, read from the source (no module is imported).

Every import counts: top level, inside functions and under ``TYPE_CHECKING``, because each one is
a dependency a reader has to follow. Each rule starts from a baseline allowlist of the violations
the redesign (issue 13, docs/design/query-backends.md 3.2) has not removed yet. The lists may only
shrink: an entry that is no longer needed fails the test too, so it is deleted when its cause is.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("compiler", "common", "storage", "backends", "engine", "engagement", "cli", "api")
PACKAGES = PRODUCT + ("benchmarks",)

# Layer of each top package (a module may import its own package and lower layers). engine.runtime is
# the composition root: the one engine module allowed to import engagement.
RANK = {"compiler": 0, "common": 1, "storage": 2, "backends": 3, "engine": 4, "engagement": 5,
        "engine.runtime": 6, "api": 7, "cli": 7}
# Pairs the ranks would allow but the design forbids.
FORBIDDEN = {("storage", "compiler")}

# Third-party packages that only some of our modules may import (prefixes of module names).
THIRD_PARTY = {
    "duckdb": ("backends.duckdb", "storage", "engine.ingest.bulk", "engine.ingest.service"),
    "pyspark": ("backends.spark",),
    "fastapi": ("api",),
    "starlette": ("api",),
    "pydantic": ("api", "engine.settings", "compiler.model"),
    "pydantic_settings": ("api", "engine.settings", "compiler.model"),
}

# ---- baseline allowlists (today's violations; they may only shrink, to empty at step 12) ----

# Imports that close a circle of modules, as "importer -> imported".
CIRCLE_EDGES: set[str] = set()

# Imports against the layer table, as "importer -> imported".
LAYER_EDGES: set[str] = set()

# Modules importing a third-party package outside its owners, as "importer -> package".
THIRD_PARTY_EDGES: set[str] = set()

# Product modules that import by name at run time (importlib.import_module / __import__).
DYNAMIC_IMPORTS: set[str] = set()

# Calls made at import time by product modules, as "module: callee" (registration and other side effects).
MODULE_CALLS: set[str] = set()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the full dotted name imported (ours or third party)
    line: int
    typing_only: bool  # under ``if TYPE_CHECKING:``: never runs


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        if (ROOT / package).is_dir():
            for path in sorted((ROOT / package).rglob("*.py")):
                modules[_module_name(path)] = path
    return modules


MODULES = _sources()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _imports(name: str, tree: ast.Module, is_package: bool) -> list[Import]:
    typing_only = {id(inner) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for inner in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, node.lineno, id(node) in typing_only) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            found += [Import(name, f"{base}.{alias.name}", node.lineno, id(node) in typing_only)
                      for alias in node.names]
    return found


IMPORTS = [imp for name, tree in TREES.items() for imp in _imports(name, tree, MODULES[name].name == "__init__.py")]


def _ours(dotted: str) -> str | None:
    """The module of ours that importing ``dotted`` loads (its longest known prefix), if any."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return None


def _graph(*, typing_only: bool = True) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in IMPORTS:
        if imp.typing_only and not typing_only:
            continue
        target = _ours(imp.target)
        if target is not None and target != imp.importer:
            graph[imp.importer].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (the graph has hundreds of modules)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _ratchet(found: set[str], allowed: set[str], what: str) -> None:
    new, stale = sorted(found - allowed), sorted(allowed - found)
    message = []
    if new:
        message.append(f"{what}, not allowed:\n  " + "\n  ".join(new))
    if stale:
        message.append(f"{what} allowlisted but gone (delete these entries):\n  " + "\n  ".join(stale))
    assert not message, "\n".join(message)


def _is_product(module: str) -> bool:
    return module.split(".")[0] in PRODUCT


def _layer(module: str) -> str:
    return "engine.runtime" if module == "engine.runtime" else module.split(".")[0]


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_tarjan_finds_circles_and_only_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    found = sorted(sorted(c) for c in strongly_connected(graph) if len(c) > 1)
    assert found == [["a", "b", "c"], ["d", "e"]]


def test_the_parser_sees_every_kind_of_import():
    source = ("import duckdb.typing\nfrom typing import TYPE_CHECKING\nfrom . import sibling\n"
              "from ..up import thing\nif TYPE_CHECKING:\n    from engine.runtime import Runtime\n"
              "def f():\n    import pyspark.sql as ps\n")
    found = {(i.target, i.typing_only) for i in _imports("engine.sub.mod", ast.parse(source), is_package=False)}
    assert found == {("duckdb.typing", False), ("typing.TYPE_CHECKING", False), ("engine.sub.sibling", False),
                     ("engine.up.thing", False), ("engine.runtime.Runtime", True), ("pyspark.sql", False)}
    package = {i.target for i in _imports("engine.sub", ast.parse("from .mod import x\n"), is_package=True)}
    assert package == {"engine.sub.mod.x"}
    assert _ours("engine.runtime.Runtime") == "engine.runtime" and _ours("duckdb.typing") is None


def _circle_edges(graph: dict[str, set[str]]) -> set[str]:
    edges = set()
    for component in strongly_connected(graph):
        if len(component) > 1:
            edges |= {f"{a} -> {b}" for a in sorted(component) for b in sorted(graph[a] & component)}
    return edges


def test_no_import_circles():
    _ratchet(_circle_edges(_graph()), CIRCLE_EDGES, "imports inside a circle of modules")


def test_no_import_circles_at_run_time():
    """Without TYPE_CHECKING imports (the circles that can break an import order); no allowlist."""
    _ratchet(_circle_edges(_graph(typing_only=False)), set(), "imports that run, inside a circle of modules")


def test_imports_point_down():
    edges = set()
    for imp in IMPORTS:
        target = _ours(imp.target)
        if target is None or not _is_product(imp.importer):
            continue
        src, dst = _layer(imp.importer), _layer(target)
        if src.split(".")[0] == dst.split(".")[0] and "engine.runtime" not in (src, dst):
            continue  # inside one package
        if src == "engine.runtime" and dst == "engine":
            continue
        if RANK[dst] >= RANK[src] or (src, dst) in FORBIDDEN:
            edges.add(f"{imp.importer} -> {target}")
    _ratchet(edges, LAYER_EDGES, "imports against the layers (api, cli -> engine, engagement -> backends, "
                                 "storage -> common -> compiler)")


def test_engine_specific_packages_stay_in_their_modules():
    edges = set()
    for imp in IMPORTS:
        package = imp.target.split(".")[0]
        if package in THIRD_PARTY and _is_product(imp.importer) and not _under(imp.importer, THIRD_PARTY[package]):
            edges.add(f"{imp.importer} -> {package}")
    _ratchet(edges, THIRD_PARTY_EDGES, "third-party imports outside their owners")


def test_no_imports_by_name():
    found = set()
    for name, tree in TREES.items():
        if not _is_product(name):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                callee = ast.unparse(node.func)
                if callee in ("importlib.import_module", "import_module", "__import__"):
                    found.add(name)
    _ratchet(found, DYNAMIC_IMPORTS, "modules importing by name (wire explicitly instead)")


def _module_level_calls(body: list[ast.stmt]):
    for stmt in body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            yield ast.unparse(stmt.value.func)
        elif isinstance(stmt, ast.If):
            if ast.unparse(stmt.test) in ('__name__ == "__main__"', "__name__ == '__main__'", "TYPE_CHECKING"):
                continue
            yield from _module_level_calls(stmt.body + stmt.orelse)
        elif isinstance(stmt, (ast.Try, ast.With)):
            yield from _module_level_calls(stmt.body + getattr(stmt, "orelse", []) + getattr(stmt, "finalbody", []))


def test_no_module_registers_itself_at_import():
    found = {f"{name}: {callee}" for name, tree in TREES.items() if _is_product(name)
             for callee in _module_level_calls(tree.body)
             if not callee.endswith(".model_rebuild")}  # pydantic resolving forward references, not a registration
    _ratchet(found, MODULE_CALLS, "calls at import time (registration belongs in engine.runtime)")
