"""The README's moving-in example runs as written, on a SQLiteSession file written by the SDK."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from _backends import readme_example
from agents import SQLiteSession


def test_readme_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)

    async def write() -> None:
        for sid in ("a", "b"):
            session = SQLiteSession(sid, "agents.db")
            await session.add_items([{"role": "user", "content": f"hi from {sid}"}])
            session.close()

    anyio.run(write)
    exec(compile(readme_example("peers"), "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert out.startswith("1/2\n2/2\nImportReport(sessions=2, messages=2, replayed=0, expired=0)")
