"""Export writes a conversation page by page; import reads one record at a time."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

from typer.testing import CliRunner

import threadkeep
from threadkeep.cli.main import app
from threadkeep.transfer import conversation_record, write_record

MESSAGES = 4000
CONTENT = "x" * 2000  # an 8 MB history


def test_export_streams_a_long_history(tmp_path: Path) -> None:
    """Exporting an 8 MB history allocates well under 2 MB at any one time (it built the
    whole record and its JSON line before), and writes exactly the record's JSON."""
    with threadkeep.open("memory://") as store:
        conv = store.start("c-1")
        for _ in range(MESSAGES // 1000):
            store.append_many(conv.id, [("user", CONTENT)] * 1000)
        size = 0

        def count(text: str) -> None:
            nonlocal size
            size += len(text)

        tracemalloc.start()
        try:
            write_record(store, store.get(conv.id), count)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert size > MESSAGES * len(CONTENT)
        assert peak < 2_000_000, peak
        small = store.start("c-2")
        store.append(small.id, "user", "hi", metadata={"k": [1, "é"]})
        parts: list[str] = []
        write_record(store, small, parts.append)
        assert "".join(parts) == json.dumps(conversation_record(store, small))


def test_import_of_a_file_checks_every_line_before_writing(tmp_path: Path) -> None:
    """A file whose last line is malformed imports nothing, read line by line."""
    source = tmp_path / "src.db"
    with threadkeep.open(f"sqlite:///{source}") as store:
        for i in range(3):
            store.append(store.start(f"c-{i}").id, "user", f"m{i}")
    runner = CliRunner()
    out = tmp_path / "export.jsonl"
    result = runner.invoke(app, ["export", "--store", f"sqlite:///{source}", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with out.open("a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    target = f"sqlite:///{tmp_path / 'dst.db'}"
    result = runner.invoke(app, ["import", str(out), "--store", target])
    assert result.exit_code != 0
    assert "line 4" in result.output
    with threadkeep.open(target) as store:
        assert store.list().items == []
    result = runner.invoke(app, ["import", "-", "--store", target], input=out.read_text())
    assert result.exit_code != 0  # the same from stdin
    with threadkeep.open(target) as store:
        assert store.list().items == []
    lines = out.read_text().splitlines()[:3]
    result = runner.invoke(app, ["import", "-", "--store", target], input="\n".join(lines))
    assert result.exit_code == 0, result.output
    assert "imported 3 conversation(s), 3 new" in result.output
