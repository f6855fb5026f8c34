"""No product function over 80 lines (def line to last line, signature and docstring included),
counted with `ast` over every module of fmu_cli/, core/, training/ and manifests/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("fmu_cli", "core", "training", "manifests")
LIMIT = 80


def long_functions(text: str, name: str, limit: int = LIMIT) -> list[str]:
    """`module:function (N lines)` for every function or method of `text` longer than `limit`."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                found.append(f"{name}:{node.name} ({lines} lines)")
    return found


def test_the_counter_sees_a_long_function_and_a_long_method():
    function = "def long():\n" + "    x = 1\n" * 80                  # 81 lines
    method = "class C:\n    async def m(self):\n" + "        x = 1\n" * 80
    short = "def short():\n" + "    pass\n" * 79                     # exactly 80: allowed
    assert long_functions(function + method + short, "mod") == ["mod:long (81 lines)", "mod:m (81 lines)"]
    assert long_functions(short, "mod") == []


def test_no_product_function_is_over_80_lines():
    found = []
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += long_functions(path.read_text(), str(path.relative_to(ROOT)))
    assert found == []
