"""The README's OpenAI Agents SDK example runs as written."""

from __future__ import annotations

from pathlib import Path

import pytest
from _backends import readme_example


def test_readme_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example("openai_agents"), "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "'type': 'function_call'" in out
    popped = "{'type': 'function_call_output', 'call_id': 'c1', 'output': '450k'}"
    assert out.strip().endswith(popped)
