"""The package's shape, read from its source with ast (nothing is imported or run).

These are the bars the design notes set: no import cycle among sail_lite's modules (deferred imports
included), no module reading another module's ``_private`` names, functions that fit on a screen and
client-side classes of a readable size. A failure names each offender, file and line.
"""

from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

PACKAGE = "sail_lite"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)
MAX_FUNCTION_LINES = 70
MAX_CLASS_LINES = 300
# Names of other modules that are private by spelling only: documented, public interfaces.
DOCUMENTED_PRIVATE = {"_exit", "_getframe", "_asdict", "_replace", "_fields", "_make"}


def modules() -> Dict[str, ast.Module]:
    found = {}
    for folder, _, names in os.walk(ROOT):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, os.path.dirname(ROOT))[: -len(".py")]
                dotted = relative.replace(os.sep, ".")
                if dotted.endswith(".__init__"):
                    dotted = dotted[: -len(".__init__")]
                with open(path, encoding="utf-8") as handle:
                    found[dotted] = ast.parse(handle.read(), path)
    return found


def dotted(node: ast.AST) -> str:
    """``a.b.c`` for a name or attribute chain (``?`` for anything else); ast.unparse is 3.9+."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return f"{dotted(node.func)}()"
    return "?"


def is_package(name: str) -> bool:
    return os.path.isfile(os.path.join(os.path.dirname(ROOT), *name.split("."), "__init__.py"))


def type_checking_nodes(tree: ast.Module) -> Set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (imports for annotations never run)."""
    skipped: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in dotted(node.test):
            for child in node.body:
                skipped.update(id(inner) for inner in ast.walk(child))
    return skipped


def resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, tree: ast.Module, known: Set[str]) -> Iterator[Tuple[str, int]]:
    """(imported sail_lite module, line) for every import in ``module``, deferred ones included."""
    skipped = type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in known:
                    yield submodule, node.lineno
                elif target in known:
                    yield target, node.lineno


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    found = modules()
    known = set(found)
    graph: Dict[str, Set[str]] = {}
    for module, tree in found.items():
        # A submodule importing its own package's __init__ is how Python loads it, not a cycle.
        graph[module] = {
            target
            for target, _ in imports(module, tree, known)
            if target != module and not module.startswith(target + ".")
        }
    assert find_cycle(graph) is None


def own_private_names(tree: ast.Module) -> Set[str]:
    """The ``_names`` a module defines itself: its functions, classes and attributes it assigns."""
    names: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def private_reads(module: str, tree: ast.Module, known: Set[str]) -> Iterator[str]:
    """``from x import _name`` and ``obj._name`` where ``_name`` is not one this module defines."""
    own = own_private_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = resolve(module, node)
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and target != module and f"{target}.{alias.name}" not in known:
                    yield f"{module}:{node.lineno} imports {target}.{alias.name}"
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in DOCUMENTED_PRIVATE:
                continue
            if name in own:
                continue
            yield f"{module}:{node.lineno} reads {dotted(node)}"


def test_no_module_reads_another_modules_private_names():
    found = modules()
    known = set(found)
    offenders = [line for m, tree in found.items() for line in private_reads(m, tree, known)]
    assert offenders == []


def definitions(kind: type) -> Iterator[Tuple[str, int]]:
    for module, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, kind):
                length = node.end_lineno - node.lineno + 1
                yield f"{module}:{node.lineno} {node.name}", length


def test_functions_fit_on_a_screen():
    long = {
        where: n
        for where, n in definitions((ast.FunctionDef, ast.AsyncFunctionDef))
        if n > MAX_FUNCTION_LINES
    }
    assert long == {}


@pytest.mark.parametrize("limit", [MAX_CLASS_LINES])
def test_client_classes_stay_readable(limit):
    long = {
        where: n
        for where, n in definitions(ast.ClassDef)
        if n > limit and not where.startswith(f"{PACKAGE}.emulator")
    }
    assert long == {}
