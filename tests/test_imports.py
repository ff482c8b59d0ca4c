"""Import hygiene: optional deps stay unimported; the rules stay sans-I/O."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[1] / "src" / "threadkeep" / "_rules"
FORBIDDEN_IN_RULES = {"sqlite3", "redis", "psycopg", "asyncio", "threading", "time", "socket"}


def test_import_does_not_pull_optional_deps() -> None:
    code = (
        "import sys, threadkeep; threadkeep.open('memory://').close(); print(','.join(m for m in "
        "('fastapi','typer','redis','psycopg','cryptography') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("path", sorted(RULES.glob("*.py")), ids=lambda p: p.name)
def test_rules_are_sans_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_IN_RULES, f"{path.name} imports {name}"
