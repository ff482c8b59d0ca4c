"""The README's Claude Agent SDK example runs as written."""

from __future__ import annotations

from pathlib import Path

import pytest
from _backends import readme_example


def test_readme_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example("claude_agent"), "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "[{'type': 'user', 'uuid': 'u1', 'message': {'role': 'user', 'content': 'hi'}}]" in out
    assert "['550e8400-e29b-41d4-a716-446655440000']" in out
