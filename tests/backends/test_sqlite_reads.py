"""SQLite's one-statement reads: what they bind, and the same answers with or without a tenant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import threadkeep
from threadkeep import ConversationNotFound, InvalidInput


class _Recording:
    """The backend's connection, recording each statement's parameters."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.bound: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.bound.append(tuple(params))
        return self.conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def _recorded(store: threadkeep.Store) -> _Recording:
    backend: Any = store._backend
    recording = _Recording(backend._conn())
    backend._local.conn = recording
    return recording


def test_the_reads_bind_no_none(tmp_path: Path) -> None:
    """sqlite3 binds a None through its adapter lookup (a failed ``__adapt__`` lookup that
    formats an AttributeError): a read without a tenant, or of the current state version,
    runs a statement of its own instead of binding a NULL."""
    with threadkeep.open(f"sqlite:///{tmp_path}/r.db") as store:
        cid = store.resume("p", tenant="t").id
        for i in range(5):
            store.append(cid, "user", f"m{i}", idempotency_key=f"k{i}")
        store.save_state(cid, {"v": 1})
        store.save_state(cid, {"v": 2})
        recording = _recorded(store)
        for tenant in (None, "t"):
            assert [m.seq for m in store.messages(cid, last=2, tenant=tenant)] == [4, 5]
            assert [m.seq for m in store.messages(cid, after=1, limit=2, tenant=tenant)] == [2, 3]
            assert [m.seq for m in store.messages(cid, before=3, limit=5, tenant=tenant)] == [1, 2]
            assert [m["content"] for m in store.context(cid, tenant=tenant)][-1] == "m4"
            assert store.load_state(cid, tenant=tenant).value == {"v": 2}
            assert store.load_state(cid, tenant=tenant, version=1).value == {"v": 1}
        assert len(recording.bound) == 12
        assert [p for p in recording.bound if None in p] == []
        assert sum("t" in p for p in recording.bound) == 6  # the tenant, when given


def test_a_read_of_another_tenant_or_a_missing_version_is_refused(tmp_path: Path) -> None:
    with threadkeep.open(f"sqlite:///{tmp_path}/r.db") as store:
        cid = store.resume("p", tenant="t").id
        store.append(cid, "user", "hi")
        store.save_state(cid, {"v": 1})
        for read in (
            lambda: store.messages(cid, last=5, tenant="u"),
            lambda: store.messages(cid, after=0, limit=5, tenant="u"),
            lambda: store.context(cid, tenant="u"),
            lambda: store.load_state(cid, tenant="u"),
            lambda: store.load_state(cid, tenant="u", version=1),
        ):
            with pytest.raises(ConversationNotFound):
                read()
        with pytest.raises(InvalidInput):
            store.load_state(cid, version=7)
        with pytest.raises(InvalidInput):
            store.load_state(cid, version=7, tenant="t")
        empty = store.resume("q", tenant="t").id
        assert store.load_state(empty).version == 0
        assert store.load_state(empty, tenant="t").value is None
        assert store.messages(empty, last=5) == []
