"""Moving in: histories from LangChain's and the OpenAI Agents SDK's stores into threadkeep.

``threadkeep import --from KIND SOURCE`` and ``import_sessions(store, KIND, SOURCE, …)`` read
the peer's storage directly (no peer library is imported) and write each session as one
conversation, in order, each message once:

- ``langchain-redis``, SOURCE ``redis://host:port/db?key_prefix=message_store:``:
  langchain-community's ``RedisChatMessageHistory`` lists (one per session, newest first).
- ``langchain-postgres``, SOURCE ``postgresql://…/db?table=chat_history``: langchain-postgres'
  ``PostgresChatMessageHistory`` rows (``id, session_id, message, created_at``).
- ``openai-sqlite``, SOURCE a ``SQLiteSession`` database file (``?sessions_table=`` and
  ``?messages_table=`` when they were renamed): ``agent_messages`` rows.
- ``openai-redis``, SOURCE ``redis://host:port/db?key_prefix=agents:session``: ``RedisSession``
  hashes and item lists.

OpenAI Agents SDK items are stored exactly as ``ThreadkeepSession`` stores them (payload
verbatim, same contact, channel ``openai-agents``), so a ``ThreadkeepSession`` with the same
session id and tenant carries on where the old session stopped. LangChain messages become
OpenAI Chat Completions messages (``{"role", "content", "tool_calls"}``; tool messages keep
their ``tool_call_id``), which every ``context()`` format reads, on channel ``langchain``;
their LangChain type and id are kept in the message's metadata.

Timestamps: with ``clock`` (a ``ManualClock`` the store was opened with), messages keep the
times the source has (langchain-postgres and SQLiteSession rows); the others are stored at the
time of the import. A conversation's activity is then its newest message's time, so with a
``ttl`` a session idle for longer than it expires at once (the report counts them).

Idempotent: each message's idempotency key names its place in the source (the row id, or the
position in a Redis list counted from the oldest), so running the import again stores only what
is new. A source that removed or rewrote old messages in between is not detected.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from threadkeep import ConversationNotFound, InvalidInput, ManualClock, Retention, Store
from threadkeep.integrations._common import name_for, payload_row

__all__ = ["KINDS", "ImportReport", "SourceMessage", "import_sessions", "read_source"]

#: The sources ``import_sessions`` reads.
KINDS: Final = ("langchain-redis", "langchain-postgres", "openai-sqlite", "openai-redis")
_CHANNEL: Final = {"langchain": "langchain", "openai": "openai-agents"}
_LC_ROLES: Final = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """One message as a source holds it.

    Attributes:
        key: its place in the source (becomes the idempotency key).
        item: the stored JSON (a LangChain ``message_to_dict`` or an Agents SDK item).
        created_at: when the source stored it, if it says.
    """

    key: str
    item: Any
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did.

    Attributes:
        sessions: sessions read from the source.
        messages: messages stored.
        replayed: messages already there from an earlier run (not stored again).
        expired: conversations that came out expired (idle longer than the ttl).
    """

    sessions: int
    messages: int
    replayed: int
    expired: int


def _split(source: str, allowed: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """Return the URL without the importer's query parameters, and their values (or defaults)."""
    parts = urlsplit(source)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = dict(allowed)
    rest = []
    for name, value in query:
        if name in allowed:
            options[name] = value
        else:
            rest.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), options


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _redis_client(url: str) -> Any:
    try:
        import redis
    except ImportError:  # pragma: no cover - the extra names it
        raise InvalidInput(
            "reading Redis needs redis-py: pip install 'threadkeep[redis]'"
        ) from None
    return redis.Redis.from_url(url)


def _langchain_redis(source: str) -> Iterator[tuple[str, list[SourceMessage]]]:
    url, opts = _split(source, {"key_prefix": "message_store:"})
    prefix = opts["key_prefix"].encode()
    client = _redis_client(url)
    try:
        for key in sorted(client.scan_iter(match=prefix + b"*", count=500)):
            if client.type(key) != b"list":
                continue
            raw = client.lrange(key, 0, -1)[::-1]  # LPUSH: newest first
            yield (
                key[len(prefix) :].decode(),
                [SourceMessage(f"lc-redis:{i}", json.loads(m)) for i, m in enumerate(raw)],
            )
    finally:
        client.close()


def _openai_redis(source: str) -> Iterator[tuple[str, list[SourceMessage]]]:
    url, opts = _split(source, {"key_prefix": "agents:session"})
    suffix = b":messages"
    client = _redis_client(url)
    try:
        pattern = opts["key_prefix"].encode() + b":*" + suffix
        for key in sorted(client.scan_iter(match=pattern, count=500)):
            if client.type(key) != b"list":
                continue
            session_id = client.hget(key[: -len(suffix)], "session_id")
            if session_id is None:
                continue
            raw = client.lrange(key, 0, -1)  # RPUSH: oldest first
            yield (
                session_id.decode(),
                [SourceMessage(f"oai-redis:{i}", json.loads(m)) for i, m in enumerate(raw)],
            )
    finally:
        client.close()


def _langchain_postgres(source: str) -> Iterator[tuple[str, list[SourceMessage]]]:
    try:
        import psycopg
        from psycopg import sql
    except ImportError:  # pragma: no cover - the extra names it
        raise InvalidInput(
            "reading PostgreSQL needs psycopg: pip install 'threadkeep[postgres]'"
        ) from None
    url, opts = _split(source, {"table": "chat_history"})
    table = sql.Identifier(*opts["table"].split(".", 1))
    with psycopg.connect(url) as conn:
        ids = conn.execute(
            sql.SQL("SELECT DISTINCT session_id::text FROM {} ORDER BY 1").format(table)
        ).fetchall()
        for (session_id,) in ids:
            rows = conn.execute(
                sql.SQL(
                    "SELECT id, message, created_at FROM {} WHERE session_id = %s ORDER BY id"
                ).format(table),
                (session_id,),
            ).fetchall()
            yield session_id, [SourceMessage(f"lc-pg:{i}", m, _utc(t)) for i, m, t in rows]


def _openai_sqlite(source: str) -> Iterator[tuple[str, list[SourceMessage]]]:
    path, opts = _split(
        source, {"sessions_table": "agent_sessions", "messages_table": "agent_messages"}
    )
    if not Path(path).is_file():
        raise InvalidInput(f"{path!r} is not a SQLiteSession database file", field="source")
    messages = opts["messages_table"].replace('"', '""')
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ids = conn.execute(f'SELECT DISTINCT session_id FROM "{messages}" ORDER BY 1').fetchall()
        for (session_id,) in ids:
            rows = conn.execute(
                f'SELECT id, message_data, created_at FROM "{messages}" '
                "WHERE session_id = ? ORDER BY id",
                (session_id,),
            ).fetchall()
            yield (
                session_id,
                [
                    SourceMessage(
                        f"oai-sqlite:{i}",
                        json.loads(data),
                        _utc(datetime.fromisoformat(at)) if at else None,
                    )  # fmt: skip
                    for i, data, at in rows
                ],
            )
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{path!r}: {exc}", field="source") from None
    finally:
        conn.close()


_READERS: Final[Mapping[str, Callable[[str], Iterator[tuple[str, list[SourceMessage]]]]]] = {
    "langchain-redis": _langchain_redis,
    "langchain-postgres": _langchain_postgres,
    "openai-sqlite": _openai_sqlite,
    "openai-redis": _openai_redis,
}


def read_source(kind: str, source: str) -> list[tuple[str, list[SourceMessage]]]:
    """Return every session of a source with its messages, oldest first.

    Raises:
        InvalidInput: an unknown kind, or a source that cannot be read.
    """
    if kind not in _READERS:
        raise InvalidInput(f"unknown source {kind!r}; allowed: {', '.join(KINDS)}", field="kind")
    return list(_READERS[kind](source))


def _langchain_row(message: SourceMessage) -> tuple[str, str, dict[str, Any]]:
    """A LangChain ``message_to_dict`` as an OpenAI Chat Completions message."""
    kind = message.item.get("type")
    data = message.item.get("data") or {}
    role = _LC_ROLES.get(kind, data.get("role") if data.get("role") in _LC_ROLES.values() else None)
    if role is None:
        role = "user"
    chat: dict[str, Any] = {"role": role, "content": data.get("content", "")}
    calls = [
        {
            "id": call.get("id"),
            "type": "function",
            "function": {"name": call.get("name"), "arguments": json.dumps(call.get("args", {}))},
        }
        for call in data.get("tool_calls") or []
    ]
    if calls:
        chat["tool_calls"] = calls
    if role == "tool":
        chat["tool_call_id"] = data.get("tool_call_id")
    metadata = {"langchain_type": kind}
    if data.get("id"):
        metadata["langchain_id"] = data["id"]
    role, content, options = payload_row(chat, idempotency_key=message.key, metadata=metadata)
    return role, content, options


def import_sessions(
    store: Store,
    kind: str,
    source: str,
    *,
    retention: Retention,
    tenant: str = "default",
    clock: ManualClock | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import every session of a peer's store into ``store``, one conversation each.

    Args:
        store: the threadkeep store.
        kind: one of ``KINDS``.
        source: where the peer keeps its sessions (see the module docs).
        retention: how long the imported conversations live (required, as for the adapters).
        tenant: the tenant of the conversations.
        clock: the ``ManualClock`` ``store`` was opened with, to keep the source's timestamps
            (None: everything is stored at the store's current time).
        progress: called with (sessions done, sessions in all) after each session.

    Returns:
        What was imported.

    Raises:
        InvalidInput: an unknown kind, an unreadable source, or a message threadkeep refuses
            (over ``Limits.max_payload_bytes``); the sessions before it stay imported.
    """
    sessions = read_source(kind, source)
    family = kind.split("-", 1)[0]
    stored = replayed = expired = 0
    for done, (session_id, messages) in enumerate(sessions, 1):
        if clock is not None:
            clock.set(next((m.created_at for m in messages if m.created_at), datetime.now(UTC)))
        conv = store.resume(
            name_for(session_id), tenant=tenant, retention=retention, channel=_CHANNEL[family]
        )
        rows = [
            _langchain_row(m)
            if family == "langchain"
            else payload_row(m.item, idempotency_key=m.key)
            for m in messages
        ]
        start = 0
        while start < len(rows):
            when = messages[start].created_at
            end = start + 1
            while end < len(rows) and messages[end].created_at == when:
                end += 1
            end = min(end, start + store.limits.max_batch)
            if clock is not None:
                clock.set(when or datetime.now(UTC))
            for m in store.append_many(conv.id, rows[start:end], tenant=tenant):
                replayed += m.replayed
                stored += not m.replayed
            start = end
        if clock is not None:
            clock.set(datetime.now(UTC))
        try:
            store.get(conv.id, tenant=tenant)
        except ConversationNotFound:
            expired += 1
        if progress is not None:
            progress(done, len(sessions))
    return ImportReport(len(sessions), stored, replayed, expired)
