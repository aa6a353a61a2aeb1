"""The house rules on size: no function in transfer/ over 80 lines, no module over 420.

A function's lines run from its ``def`` to its last line (signature, docstring and
nested functions included), as a reader scrolls through it; a module's are its
lines as ``wc -l`` counts them. Each failure names the offender, its size and
where it stands.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "transfer"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 420


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, line count)`` of every function in ``source`` over ``limit`` lines."""
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                lines = child.end_lineno - child.lineno + 1
                if lines > limit:
                    found.append((name, child.lineno, lines))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_has_modules_to_check():
    names = {p.relative_to(PACKAGE).as_posix() for p in _modules()}
    assert {"__init__.py", "engine/stage_runner.py", "cli/train.py"} <= names, sorted(names)[:5]


def test_no_function_is_over_80_lines():
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line} {name} has {count} lines"
                 for path in _modules()
                 for name, line, count in long_functions(path.read_text(encoding="utf-8"))]
    assert not offenders, (f"Functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n"
                           + "\n".join(offenders))


def test_no_module_is_over_420_lines():
    offenders = []
    for path in _modules():
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > MAX_MODULE_LINES:
            offenders.append(f"{path.relative_to(PACKAGE.parent)} has {count} lines")
    assert not offenders, (f"Modules over {MAX_MODULE_LINES} lines (split them by job):\n" + "\n".join(offenders))


def _function(name: str, lines: int, indent: str = "") -> str:
    """A function named ``name`` whose def-to-end span is ``lines`` lines."""
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(lines - 1))
    return f"{indent}def {name}():\n{body}"


@pytest.mark.parametrize("lines, expected", [(80, []), (81, [("f", 1, 81)])])
def test_a_function_of_81_lines_is_found_and_one_of_80_is_not(lines, expected):
    assert long_functions(_function("f", lines)) == expected


def test_methods_and_nested_functions_are_found_by_their_qualified_name():
    source = "class Runner:\n" + _function("run", 90, indent="    ")
    source += "def outer():\n" + _function("inner", 85, indent="    ")
    found = long_functions(source)
    assert found == [("Runner.run", 2, 90), ("outer", 92, 86), ("outer.inner", 93, 85)]
