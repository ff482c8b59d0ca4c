"""Moving in: the peer libraries write their own stores, threadkeep imports them.

langchain-community's ``RedisChatMessageHistory`` (Debian's Redis has no RediSearch, which
langchain-redis' own class needs; both keep one JSON list per session),
langchain-postgres' ``PostgresChatMessageHistory``, and the OpenAI Agents SDK's
``SQLiteSession`` and ``RedisSession``, on the local servers, into every threadkeep backend,
through the library function and through ``threadkeep import --from``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents import SQLiteSession
from agents.extensions.memory.redis_session import RedisSession
from langchain_community.chat_message_histories import RedisChatMessageHistory
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_postgres import PostgresChatMessageHistory

import threadkeep
from conftest import POSTGRES, REDIS
from threadkeep import Retention
from threadkeep.importers import import_sessions
from threadkeep.integrations._common import name_for
from threadkeep.integrations.openai_agents import ThreadkeepSession

CLI = [str(Path(sys.executable).with_name("threadkeep"))]
FOREVER = Retention(ttl=None)

LANGCHAIN = [
    SystemMessage("You value houses."),
    HumanMessage("What is my house in 78701 worth?", id="h1"),
    AIMessage("", tool_calls=[{"name": "estimate", "args": {"zip": "78701"}, "id": "call_1"}]),
    ToolMessage("450k", tool_call_id="call_1"),
    AIMessage("About 450k."),
]
OPENAI_ITEMS: list[Any] = [
    {"role": "user", "content": "What is my house in 78701 worth?"},
    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA=="},
    {"type": "function_call", "call_id": "call_1", "name": "estimate",
     "arguments": '{"zip":"78701"}', "id": "fc_1"},
    {"type": "function_call_output", "call_id": "call_1", "output": "450k"},
    {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
     "content": [{"type": "output_text", "text": "About 450k.", "annotations": []}]},
]  # fmt: skip


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def conversation(store: Any, tenant: str, session_id: str) -> Any:
    conv = store.find_open(name_for(session_id), tenant=tenant)
    assert conv is not None, session_id
    return conv


def assert_langchain_history(store: Any, tenant: str, session_id: str) -> None:
    conv = conversation(store, tenant, session_id)
    assert conv.channel == "langchain"
    msgs = store.messages(conv.id)
    assert [m.role for m in msgs] == ["system", "user", "assistant", "tool", "assistant"]
    assert msgs[1].payload == {"role": "user", "content": "What is my house in 78701 worth?"}
    assert msgs[1].metadata == {"langchain_type": "human", "langchain_id": "h1"}
    assert msgs[2].payload["tool_calls"] == [
        {"id": "call_1", "type": "function",
         "function": {"name": "estimate", "arguments": '{"zip": "78701"}'}},
    ]  # fmt: skip
    assert msgs[3].payload == {"role": "tool", "content": "450k", "tool_call_id": "call_1"}
    chat = store.context(conv.id, format="openai")
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "tool", "assistant"]
    assert chat[2]["tool_calls"][0]["id"] == chat[3]["tool_call_id"] == "call_1"


def test_langchain_redis_through_the_cli(cli_store_url: str, redis_prefix: str) -> None:
    key_prefix = f"{redis_prefix}:lc:"
    for sid in ("alice", "bob"):
        history = RedisChatMessageHistory(sid, url=REDIS, key_prefix=key_prefix)
        history.add_messages(LANGCHAIN)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    source = f"{REDIS}?key_prefix={key_prefix}"
    args = ["import", "--from", "langchain-redis", source, "--store", cli_store_url,
            "--tenant", tenant, "--ttl", "none"]  # fmt: skip
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert (
        "imported 2 session(s) from langchain-redis: 10 message(s) new, 0 already" in first.stderr
    )
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "0 message(s) new, 10 already there" in again.stderr
    with threadkeep.open(cli_store_url) as store:
        for sid in ("alice", "bob"):
            assert_langchain_history(store, tenant, sid)
        assert store.counts(tenant=tenant).total == 2


def test_langchain_postgres_keeps_times(store_url: str, pg_table: str) -> None:
    import psycopg

    sessions = [str(uuid.uuid4()), str(uuid.uuid4())]
    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        PostgresChatMessageHistory.create_tables(conn, pg_table)
        for sid in sessions:
            PostgresChatMessageHistory(pg_table, sid, sync_connection=conn).add_messages(LANGCHAIN)
        times = {
            sid: [t for (t,) in conn.execute(
                f'SELECT created_at FROM "{pg_table}" WHERE session_id = %s ORDER BY id', (sid,)
            ).fetchall()]
            for sid in sessions
        }  # fmt: skip
    clock = threadkeep.ManualClock()
    seen: list[tuple[int, int]] = []
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    with threadkeep.open(store_url, clock=clock) as store:
        source = f"{POSTGRES}?table={pg_table}"
        report = import_sessions(
            store, "langchain-postgres", source, retention=FOREVER, tenant=tenant, clock=clock,
            progress=lambda done, total: seen.append((done, total)),
        )  # fmt: skip
        assert (report.sessions, report.messages, report.replayed) == (2, 10, 0)
        assert seen == [(1, 2), (2, 2)]
        for sid in sessions:
            assert_langchain_history(store, tenant, sid)
            msgs = store.messages(conversation(store, tenant, sid).id)
            assert [m.created_at for m in msgs] == [t.astimezone(UTC) for t in times[sid]]
        again = import_sessions(
            store, "langchain-postgres", source, retention=FOREVER, tenant=tenant
        )
        assert (again.messages, again.replayed) == (0, 10)


def test_openai_sqlite_then_the_session_carries_on(store_url: str, tmp_path: Path) -> None:
    import anyio

    db = tmp_path / "agents.db"

    async def write() -> list[Any]:
        old = SQLiteSession("user-42", db)
        await old.add_items(OPENAI_ITEMS)
        items = await old.get_items()
        old.close()
        return items

    written = anyio.run(write)
    clock = threadkeep.ManualClock()
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    with threadkeep.open(store_url, clock=clock) as store:
        report = import_sessions(
            store, "openai-sqlite", str(db), retention=FOREVER, tenant=tenant, clock=clock
        )
        assert (report.sessions, report.messages) == (1, 5)
        msgs = store.messages(conversation(store, tenant, "user-42").id)
        now = datetime.now(UTC)
        assert all(abs((now - m.created_at).total_seconds()) < 60 for m in msgs)
        assert all(m.created_at.microsecond == 0 for m in msgs)  # SQLite's CURRENT_TIMESTAMP
        assert [m.role for m in msgs] == ["user", "assistant", "assistant", "tool", "assistant"]

        async def carry_on() -> list[Any]:
            session = ThreadkeepSession("user-42", store, retention=FOREVER, tenant=tenant)
            assert await session.get_items() == written
            await session.add_items([{"role": "user", "content": "thanks"}])
            return await session.get_items(limit=2)

        assert anyio.run(carry_on) == [written[-1], {"role": "user", "content": "thanks"}]


def test_openai_redis_through_the_cli(cli_store_url: str, redis_prefix: str) -> None:
    import anyio

    key_prefix = f"{redis_prefix}:oai"
    long_id = "s" * 300  # longer than a threadkeep name: hashed, not refused

    async def write() -> None:
        for sid in ("user-1", long_id):
            session = RedisSession.from_url(sid, url=REDIS, key_prefix=key_prefix)
            await session.add_items(OPENAI_ITEMS)
            await session.close()

    anyio.run(write)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    done = run_cli("import", "--from", "openai-redis", f"{REDIS}?key_prefix={key_prefix}",
                   "--store", cli_store_url, "--tenant", tenant, "--ttl", "86400")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "imported 2 session(s) from openai-redis: 10 message(s) new" in done.stderr
    with threadkeep.open(cli_store_url) as store:

        async def read(sid: str) -> list[Any]:
            return await ThreadkeepSession(sid, store, retention=FOREVER, tenant=tenant).get_items()

        for sid in ("user-1", long_id):
            assert anyio.run(read, sid) == OPENAI_ITEMS
        conv = conversation(store, tenant, long_id)
        assert conv.contact_id.startswith("sha256:")
        assert conv.expires_at is not None  # --ttl 86400


def test_bad_sources_are_clear_errors_and_write_nothing(cli_store_url: str, tmp_path: Path) -> None:
    base = ["--store", cli_store_url, "--ttl", "none"]
    unknown = run_cli("import", "--from", "langchain-mongo", "x", *base)
    assert unknown.returncode == 1
    assert "unknown source 'langchain-mongo'; allowed: langchain-redis" in unknown.stderr
    missing = run_cli("import", "--from", "openai-sqlite", str(tmp_path / "nope.db"), *base)
    assert missing.returncode == 1
    assert "is not a SQLiteSession database file" in missing.stderr
    no_ttl = run_cli("import", "--from", "openai-sqlite", str(tmp_path / "nope.db"),
                     "--store", cli_store_url)  # fmt: skip
    assert no_ttl.returncode == 1
    assert "--from needs --ttl" in no_ttl.stderr
    with threadkeep.open(cli_store_url) as store:
        assert store.counts(tenant="default").total == 0
