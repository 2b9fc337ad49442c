"""Lists production functions longer than a limit (default 60 lines), longest first.

    .venv/bin/python tools/long_functions.py [limit]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ("infra", "components", "policy", "__main__.py", "vllm_endpoint")


def long_functions(limit: int) -> list[tuple[int, str]]:
    found = []
    for top in PRODUCTION:
        base = ROOT / top
        paths = [base] if base.is_file() else [p for p in base.rglob("*.py") if not p.is_symlink()]
        for path in paths:
            if any(part.is_symlink() for part in path.parents if part != ROOT and ROOT in part.parents):
                continue
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > limit:
                        found.append((length, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(found, reverse=True)


if __name__ == "__main__":
    for length, where in long_functions(int(sys.argv[1]) if len(sys.argv) > 1 else 60):
        print(f"{length:4d}  {where}")
