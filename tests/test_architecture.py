"""The code's shape rules (docs/architecture.md): short functions with few parameters outside the command
line, and no module reaching into another's private names."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import marsdust

PACKAGE = Path(marsdust.__file__).parent
MAX_PARAMETERS = 12
MAX_LINES = 80


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE), ast.parse(path.read_text(encoding="utf-8"))


def _parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    count = len(names) + bool(args.vararg) + bool(args.kwarg)
    return count - (1 if names and names[0].arg in ("self", "cls") else 0)


def long_or_wide_functions() -> list[str]:
    found = []
    for relative, tree in _modules():
        if relative.parts[0] == "cli":
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n_lines = node.end_lineno - node.lineno + 1
                if _parameter_count(node) > MAX_PARAMETERS or n_lines > MAX_LINES:
                    found.append(f"{relative}:{node.lineno} {node.name}: {_parameter_count(node)} parameters, "
                                 f"{n_lines} lines")
    return found


def private_imports() -> list[str]:
    found = []
    for relative, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("marsdust"):
                found += [f"{relative}:{node.lineno} from {node.module} import {alias.name}"
                          for alias in node.names if alias.name.startswith("_")]
    return found


def test_functions_outside_the_cli_are_short_and_take_few_parameters():
    assert long_or_wide_functions() == []


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


def test_the_checks_find_what_they_look_for(tmp_path, monkeypatch):
    """A function of 13 parameters and 81 lines, and a private import, are reported."""
    parameters = ", ".join(f"p{i}" for i in range(13))
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    source = f"from marsdust.grid import _private\n\ndef wide({parameters}):\n{body}\n"
    (tmp_path / "module.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    assert [line.split(" ", 1)[1] for line in long_or_wide_functions()] == ["wide: 13 parameters, 81 lines"]
    assert private_imports() == ["module.py:1 from marsdust.grid import _private"]
