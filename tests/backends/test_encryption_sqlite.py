"""SQLite encryption at rest verified in the file's bytes (pages and WAL)."""

from __future__ import annotations

from pathlib import Path

import threadkeep
from tests.backends._sealed import KEYS, fill
from tests.backends.test_erasure_sqlite import _on_disk


def test_sealed_values_leave_no_plaintext_in_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "sealed.db"
    with threadkeep.open(f"sqlite:///{path}") as plain:
        shown = fill(plain, "plain")
    with threadkeep.open(f"sqlite:///{path}", encryption=KEYS) as store:
        hidden = fill(store, "sealed")
        on_disk = _on_disk(path)
        assert shown.encode() in on_disk  # the scan does read what is stored
        assert hidden.encode() not in on_disk
        assert store.recall(store.list(tenant="t-1").items[0].contact_id, tenant="t-1")
