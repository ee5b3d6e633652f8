"""The package keeps its shape: modules, classes and functions within their sizes.

A module passes 400 lines, a class 200, a function 50 only by being split; a size counts
from the ``def`` or ``class`` line (decorators aside) to its last line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import openbayes_serving

MAX_MODULE = 400
MAX_CLASS = 200
MAX_FUNCTION = 50


def oversized(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    lines = len(source.splitlines())
    found = [f"{path.name}: module, {lines} lines"] if lines > MAX_MODULE else []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            kind, limit = "class", MAX_CLASS
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kind, limit = "function", MAX_FUNCTION
        else:
            continue
        assert node.end_lineno is not None
        size = node.end_lineno - node.lineno + 1
        if size > limit:
            found.append(f"{path.name}:{node.lineno}: {kind} {node.name}, {size} lines")
    return found


def test_no_module_class_or_function_passes_its_size():
    package = Path(openbayes_serving.__file__).parent
    found = [line for path in sorted(package.rglob("*.py")) for line in oversized(path)]
    assert found == [], "\n".join(found)


def test_the_sizes_count_from_the_def_line_to_the_last(tmp_path: Path):
    module = tmp_path / "shapes.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION - 1))
    module.write_text(
        f"@decorator\ndef fits():\n{body}\n\n\ndef too_long():\n{body}\n    x = 0\n",
        encoding="utf-8",
    )
    assert oversized(module) == [f"shapes.py:{MAX_FUNCTION + 4}: function too_long, 51 lines"]
