"""List the functions longer than a limit (80 lines) that do not say why.

A function's length runs from its ``def`` line to its last line (docstring and
comments included, decorators not). A long function is allowed when the line right
above its ``def`` (or above its first decorator) is a comment ``# long: <reason>``.

    python tools/check_function_length.py [PATH ...] [--max 80]

PATH: files or folders (default: anet_tf). Prints one line per offender,
``path:line: name is N lines (over 80)``, and exits with 1 if there is any.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
from collections.abc import Iterator
from typing import NamedTuple

LIMIT = 80
ALLOW = "# long:"


class LongFunction(NamedTuple):
    path: str
    line: int  # of the def
    name: str  # qualified: Class.method, outer.<locals>.inner
    length: int
    limit: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.name} is {self.length} lines (over {self.limit})"


def python_files(paths) -> Iterator[str]:
    for path in paths:
        if os.path.isdir(path):
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if d != "__pycache__")
                yield from (os.path.join(folder, f) for f in sorted(files) if f.endswith(".py"))
        else:
            yield path


def _explained(lines: list[str], node: ast.AST) -> bool:
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    above = lines[first - 2].strip() if first >= 2 else ""
    return above.startswith(ALLOW) and bool(above[len(ALLOW) :].strip())


def long_functions(path: str, limit: int = LIMIT) -> list[LongFunction]:
    """The functions of one file longer than ``limit`` lines without a ``# long:``."""
    with open(path, encoding="utf-8") as fh:
        source = fh.read()
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = prefix + child.name
                length = child.end_lineno - child.lineno + 1
                if length > limit and not _explained(lines, child):
                    found.append(LongFunction(path, child.lineno, name, length, limit))
                visit(child, name + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=path), "")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=["anet_tf"])
    parser.add_argument("--max", type=int, default=LIMIT, help="lines (default: 80)")
    args = parser.parse_args(argv)
    offenders = [f for p in python_files(args.paths) for f in long_functions(p, args.max)]
    for offender in offenders:
        print(offender)
    if offenders:
        print(
            f"{len(offenders)} function(s) over {args.max} lines: split them, or say why "
            f"in a '{ALLOW} <reason>' comment right above the def (or its decorators)."
        )
    return 1 if offenders else 0


if __name__ == "__main__":
    sys.exit(main())
