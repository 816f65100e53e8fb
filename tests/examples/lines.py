"""Lines of code, counted one way for the examples and for the peers' versions of them.

A line counts when it is not blank, not a comment and not part of a Python docstring:
what a user writes to get the job done, whatever the language (Python or TOML). The
table in docs/peers-examples.md is checked against these counts by test_examples.py.

    python -m tests.examples.lines examples/curator_poems/poems.py examples/curator_poems/config.toml
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

__all__ = ("code_lines", "count_files")


def _docstring_lines(source: str) -> set[int]:
    """1-based lines taken by module, class and function docstrings."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            end = body[0].end_lineno or body[0].lineno
            lines.update(range(body[0].lineno, end + 1))
    return lines


def code_lines(text: str, *, python: bool) -> int:
    """Lines of ``text`` that are neither blank, comments nor (``python``) docstrings."""
    skip = _docstring_lines(text) if python else set()
    return sum(
        1
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#") and number not in skip
    )


def count_files(paths: list[Path]) -> int:
    """The lines of code of ``paths`` together (``.py`` and ``.py.txt`` read as Python)."""
    return sum(
        code_lines(p.read_text(encoding="utf-8"), python=p.name.endswith((".py", ".py.txt")))
        for p in paths
    )


if __name__ == "__main__":
    files = [Path(arg) for arg in sys.argv[1:]]
    for path in files:
        sys.stdout.write(f"{count_files([path]):5d}  {path}\n")
    sys.stdout.write(f"{count_files(files):5d}  total\n")
