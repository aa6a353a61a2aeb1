"""The package's layering, checked on every module's imports (those inside functions too).

Layers, bottom to top (see the README's "Architecture"):

    core  <  backbones, data  <  tasks (registry and base)  <  engine  <  serving
          <  tasks.<task> (classify, localize, detect, segment)  <  api (the Python API's facade)  <  cli

A module imports only from its own layer or a lower one; ``backbones`` and
``data`` do not import each other, and no task imports another task. The only
import of the root package allowed is ``transfer.__version__``. Together these
rules leave no room for an import circle, which is checked as well.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "transfer"
RANK = {"core": 0, "backbones": 1, "data": 1, "tasks-api": 2, "engine": 3, "serving": 4, "task": 5, "api": 6,
        "cli": 7, "__main__": 8}


def module_files() -> dict[str, pathlib.Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: pathlib.Path, modules: dict) -> set[str]:
    """The ``transfer`` modules that ``name`` imports anywhere in its source (resolved to modules)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            if base == "transfer" and all(alias.name == "__version__" for alias in node.names):
                continue
        for target in targets:
            if not target.startswith("transfer"):
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                found.add(target)
    return found


def layer(name: str) -> tuple[str, str]:
    """(layer, group): a task's modules share the group of their task."""
    parts = name.split(".")
    if len(parts) == 1:
        return "root", "root"
    if parts[1] == "tasks":
        if len(parts) == 2 or parts[2] in ("base", "custom_objects"):
            return "tasks-api", "tasks-api"
        return "task", parts[2]
    return parts[1], parts[1]


def graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for name, targets in edges.items():
        kind, group = layer(name)
        for target in sorted(targets):
            target_kind, target_group = layer(target)
            if target_kind == "root":
                if name != "transfer.__main__":  # transfer/__init__ imports nothing
                    found.append(f"{name} imports the root package {target} (only __version__ is allowed)")
                continue
            if kind == "root":
                continue
            if group == target_group:
                continue
            if RANK[target_kind] < RANK[kind] and not {kind, target_kind} == {"backbones", "data"}:
                continue
            found.append(f"{name} ({group}) imports {target} ({target_group})")
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import circles (strongly connected components of more than one module, or a module importing itself)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_layers_only_import_downward():
    assert violations(graph()) == []


def test_no_import_circles():
    assert cycles(graph()) == []


def test_the_checker_sees_an_upward_import_and_a_circle():
    edges = {"transfer.core.atomic": {"transfer.engine.run"}, "transfer.engine.run": {"transfer.core.atomic"},
             "transfer.tasks.detect.model": {"transfer.tasks.classify.model"}, "transfer.tasks.classify.model": set()}
    assert violations(edges) == [
        "transfer.core.atomic (core) imports transfer.engine.run (engine)",
        "transfer.tasks.detect.model (detect) imports transfer.tasks.classify.model (classify)",
    ]
    assert cycles(edges) == [["transfer.core.atomic", "transfer.engine.run"]]


def test_relative_and_function_level_imports_are_seen(tmp_path):
    modules = {"transfer.core.atomic": None, "transfer.engine.run": None, "transfer.engine": None}
    source = tmp_path / "run.py"
    source.write_text("def f():\n    from transfer.core import atomic\n    from . import run\n")
    assert imports_of("transfer.engine.x", source, modules) == {"transfer.core.atomic", "transfer.engine.run"}


@pytest.mark.parametrize("name", ["transfer.core", "transfer.backbones", "transfer.data", "transfer.engine",
                                  "transfer.serving", "transfer.tasks", "transfer.cli"])
def test_every_layer_is_a_package(name):
    assert name in module_files()
