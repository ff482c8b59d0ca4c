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


_HOSTILE = [
    " ",
    "\x00 nul, \x01\x1f control, \x7f del",
    "quotes \" ' ` and backslashes \\ \\\\ \\u0000 \\n",
    "unicode: é ١٢ 🤖 \u200d\u202e rtl \ufeff bom \U0010ffff",
    '{"looks": ["like", "json"]}',
    "[1, 2, null]",
    "é" * 30_000,  # 60,000 bytes: near the content limit
]
_BIG = 2**63 - 1  # beyond 2**53: not exact through a double


@pytest.mark.parametrize("sealed", [False, True])
def test_hostile_values_come_back_exactly_through_every_read(tmp_path: Path, sealed: bool) -> None:
    """Every read returns each stored text, metadata, key and payload exactly: control
    characters and NUL, quotes, backslashes, any Unicode, JSON-looking text, very long
    content, integers beyond 2**53, NULLs; plain and encrypted."""
    from tests.backends._sealed import KEYS

    options: dict[str, Any] = {"encryption": KEYS} if sealed else {}
    with threadkeep.open(f"sqlite:///{tmp_path}/h.db", **options) as store:
        cid = store.resume("p", tenant="t").id
        sent = []
        for i, text in enumerate(_HOSTILE):
            short = text[:1000]  # metadata and payload have smaller limits
            metadata = {"text": short, "big": _BIG, "neg": -_BIG, "nested": [None, short]}
            payload = None if i % 2 else {"calls": [{"arguments": short, "n": _BIG}]}
            sent.append(
                store.append(
                    cid,
                    "user",
                    text,
                    metadata=metadata,
                    idempotency_key=f"k{i}",
                    payload=payload,
                )  # fmt: skip
            )
        state = {"text": [text[:1000] for text in _HOSTILE], "big": _BIG, "none": None}
        store.save_state(cid, state)

        def fields(messages: list[Any]) -> list[tuple[Any, ...]]:
            return [
                (m.seq, m.role, m.content, m.created_at, m.metadata, m.idempotency_key, m.payload)
                for m in messages
            ]

        expected = fields(sent)
        n = len(_HOSTILE)
        for tenant in (None, "t"):
            assert fields(store.messages(cid, last=n, tenant=tenant)) == expected
            assert fields(store.messages(cid, after=0, limit=n, tenant=tenant)) == expected
            assert fields(store.messages(cid, before=n + 1, limit=n, tenant=tenant)) == expected
            for i, want in enumerate(expected):
                found = store.message_by_key(cid, f"k{i}", tenant=tenant)
                assert found is not None and fields([found]) == [want]
            window = store.context(cid, tenant=tenant)
            assert [m["content"] for m in window] == _HOSTILE
            assert store.load_state(cid, tenant=tenant).value == state
