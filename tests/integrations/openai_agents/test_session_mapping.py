"""A session id is exactly one conversation, across processes; any id is accepted."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from typing import Any

import threadkeep
from threadkeep import Retention
from threadkeep.integrations.openai_agents import CHANNEL, ThreadkeepSession

FOREVER = Retention(ttl=None)
PROCESSES, ITEMS = 4, 10


def write(url: str, tenant: str, session_id: str, n: int, start: Any) -> None:
    start.wait(30)
    with threadkeep.open(url) as store:
        session = ThreadkeepSession(session_id, store, retention=FOREVER, tenant=tenant)

        async def go() -> None:
            for i in range(ITEMS):
                await session.add_items([{"role": "user", "content": f"{n}.{i}"}])

        asyncio.run(go())


def test_one_conversation_per_session_across_processes(shared_url: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("fork")  # the children import nothing again
    start = ctx.Event()
    procs = [
        ctx.Process(target=write, args=(shared_url, tenant, "shared session", n, start))
        for n in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with threadkeep.open(shared_url) as store:
        page = store.list(tenant=tenant, limit=10)
        assert [(c.contact_id, c.channel) for c in page.items] == [("shared session", CHANNEL)]
        items = asyncio.run(
            ThreadkeepSession("shared session", store, retention=FOREVER, tenant=tenant).get_items()
        )
    texts = [i["content"] for i in items]
    assert sorted(texts) == sorted(f"{n}.{i}" for n in range(PROCESSES) for i in range(ITEMS))
    for n in range(PROCESSES):  # each writer's items in its own order
        assert [t for t in texts if t.startswith(f"{n}.")] == [f"{n}.{i}" for i in range(ITEMS)]


def test_any_session_id_is_accepted_and_kept_apart(shared_url: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ids = ["x" * 10_000, "x" * 10_001, "two\nlines", "sha256:" + "0" * 64, "  ", "plain-id"]
    with threadkeep.open(shared_url) as store:

        async def go() -> list[list[Any]]:
            sessions = [ThreadkeepSession(s, store, retention=FOREVER, tenant=tenant) for s in ids]
            for n, session in enumerate(sessions):
                await session.add_items([{"role": "user", "content": f"hello {n}"}])
            return [await s.get_items() for s in sessions]

        got = asyncio.run(go())
        assert got == [[{"role": "user", "content": f"hello {n}"}] for n in range(len(ids))]
        contacts = sorted(c.contact_id for c in store.list(tenant=tenant, limit=50).items)
    assert len(contacts) == len(ids)
    assert "plain-id" in contacts
    assert sum(c.startswith("sha256:") for c in contacts) == len(ids) - 1
