"""The README's pydantic-ai example runs as written."""

from __future__ import annotations

from pathlib import Path

import pytest
from _backends import readme_example


def test_readme_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example("pydantic_ai"), "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out == "2 ['c-1']\n"
