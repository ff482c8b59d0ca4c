"""SQLite erasure verified in the file's bytes: nothing of an erased contact is left on disk."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import threadkeep
from tests.backends._erasure import erase_and_check, fill


def _on_disk(path: Path) -> bytes:
    """Every byte of the database: the main file after a checkpoint, and any WAL or journal."""
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def test_an_erased_contact_leaves_no_byte_in_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "erase.db"
    with threadkeep.open(f"sqlite:///{path}") as store:
        gone = fill(store, "t-1", "gone")
        kept = fill(store, "t-1", "kept")
        before = _on_disk(path)
        assert gone.marker.encode() in before and gone.contact.encode() in before
        erase_and_check(store, gone)
        after = _on_disk(path)
    assert gone.marker.encode() not in after  # content, metadata, payload, state, facts
    assert gone.contact.encode() not in after  # and the contact id itself
    assert kept.marker.encode() in after  # the scan does read what is stored
