"""Stores written before payloads existed (b07f6d3) read and work after the upgrade.

The data in ``data/`` was written by the code of b07f6d3 (see its README); each test restores
it into an isolated SQLite file, PostgreSQL schema or Redis prefix, opens it with today's code
(which migrates the schema, or reads the old Redis encoding) and uses it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import threadkeep
from tests._servers import cleanup_url, isolated_url, require_reachable

DATA = Path(__file__).parent / "data"
IDS = json.loads((DATA / "v1_ids.json").read_text())
CALL = {"type": "function_call", "call_id": "c1", "name": "estimate", "arguments": "{}"}


def restore_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript((DATA / "v1_sqlite.sql").read_text())
    conn.close()
    return f"sqlite:///{path}"


def restore_postgres(url: str) -> None:
    import psycopg

    schema = url.rsplit("schema=", 1)[1]
    dump = (DATA / "v1_postgres.sql").read_text().replace("tk_v1fixture", schema)
    # pg_dump writes psql meta-commands (\\restrict); a plain connection takes only SQL
    script = "\n".join(line for line in dump.splitlines() if not line.startswith("\\"))
    with psycopg.connect(url.split("?", 1)[0], autocommit=True) as conn:
        conn.execute(script.encode())


def restore_redis(url: str) -> None:
    import redis

    prefix = url.rsplit("prefix=", 1)[1]
    dump = json.loads((DATA / "v1_redis.json").read_text())
    client = redis.Redis.from_url(url.split("?", 1)[0], decode_responses=True)
    try:
        for old_key, entry in dump["keys"].items():
            key = old_key.replace(dump["prefix"], prefix)
            kind, value = entry["type"], entry["value"]
            if kind == "hash":
                client.hset(key, mapping=value)
            elif kind == "list":
                client.rpush(key, *value)
            elif kind == "zset":
                client.zadd(key, dict(value))
            elif kind == "set":
                client.sadd(key, *value)
            elif kind == "string":
                client.set(key, value)
            else:
                for event_id, fields in value:
                    client.xadd(key, fields, id=event_id)
            if entry["ttl_ms"] > 0:
                client.pexpire(key, entry["ttl_ms"])
    finally:
        client.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def old_store(request: pytest.FixtureRequest, tmp_path: Path, run_id: str) -> Iterator[Any]:
    kind = request.param
    if kind == "sqlite":
        url = restore_sqlite(tmp_path)
    else:
        url = isolated_url(kind, tmp_path, f"{run_id}v1")
        require_reachable(url)
        cleanup_url(url)
        if kind == "postgres":
            restore_postgres(url)
        else:
            restore_redis(url)
    clock = threadkeep.ManualClock(datetime(2026, 1, 2, tzinfo=UTC))
    try:
        with threadkeep.open(url, clock=clock) as store:
            yield store, IDS[kind]
    finally:
        cleanup_url(url)


def test_old_messages_read_unchanged(old_store: Any) -> None:
    store, ids = old_store
    conv = store.get(ids["a"], tenant="t1")
    assert (conv.status, conv.stage, conv.message_count, conv.state_version) == (
        "active", "Q2", 4, 2
    )  # fmt: skip
    messages = store.messages(ids["a"])
    assert [(m.seq, m.role, m.content, m.payload) for m in messages] == [
        (1, "user", "Hi, I want to sell\nmy house", None),
        (2, "assistant", "Great! What is the address?", None),
        (3, "tool", "estimate: 450k", None),
        (4, "agent", "Jorge here.", None),
    ]
    assert (messages[0].metadata, messages[0].idempotency_key) == ({"via": "sms"}, "wamid.1")
    assert store.message_by_key(ids["a"], "wamid.1") == messages[0]
    assert store.context(ids["a"]) == [{"role": m.role, "content": m.content} for m in messages]
    assert store.context(ids["a"], format="anthropic")["messages"][0]["role"] == "user"
    assert store.load_state(ids["a"]).value == {"budget": 460000}
    assert [f.value for f in store.recall("contact-a", tenant="t1")] == ["text"]
    closed = store.get(ids["b"])
    assert closed.status == "closed"
    assert [m.content for m in store.messages(ids["b"])] == ["stop"]


def test_old_conversations_take_new_messages(old_store: Any) -> None:
    store, ids = old_store
    replay = store.append(
        ids["a"], "user", "Hi, I want to sell\nmy house", idempotency_key="wamid.1"
    )
    assert (replay.seq, replay.replayed) == (1, True)
    new = store.append(ids["a"], "assistant", "", payload=CALL, idempotency_key="k-new")
    assert (new.seq, new.payload) == (5, CALL)
    assert store.messages(ids["a"], last=1) == [new]
    assert store.pop_last(ids["a"]) == new
    got = store.append_many(ids["a"], [("assistant", "", {"payload": CALL}), ("user", "ok")])
    assert [m.seq for m in got] == [5, 6]
    assert [m.seq for m in store.messages(ids["a"], before=3, limit=5)] == [1, 2]
    # the trimmed conversation keeps trimming: max_messages=2
    trimmed = store.append(ids["c"], "user", "m4")
    assert [(m.seq, m.content) for m in store.messages(ids["c"])] == [(4, "m3"), (5, "m4")]
    assert trimmed.seq == 5
    assert store.clear_messages(ids["c"]) == 2
    kinds = [e.kind for e in store.events(tenant="t1")]
    assert kinds[0] == "conversation.started"
    assert kinds[-1] == "messages.cleared"
