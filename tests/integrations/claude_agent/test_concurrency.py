"""Racing mirrors of one session (the SDK retries a batch; two processes resume one session)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import threadkeep
from threadkeep import Retention
from threadkeep.integrations.claude_agent import ThreadkeepSessionStore

KEY: Any = {"project_key": "proj", "session_id": "racing"}
ENTRIES = [{"type": "user", "uuid": f"u{i}", "message": {"role": "user", "content": str(i)}}
           for i in range(10)]  # fmt: skip


def test_the_same_batch_from_four_writers_is_stored_once(store_url: str) -> None:
    prefix = f"{uuid.uuid4()}:"
    shared = threadkeep.open(store_url)  # memory:// cannot be opened twice
    opened = [shared if store_url.startswith("memory:") else threadkeep.open(store_url)
              for _ in range(4)]  # fmt: skip
    stores = [
        ThreadkeepSessionStore(s, retention=Retention(ttl=None), tenant_prefix=prefix)
        for s in opened
    ]
    start = threading.Barrier(len(stores))

    def mirror(store: ThreadkeepSessionStore) -> None:
        start.wait(30)
        asyncio.run(store.append(KEY, ENTRIES))

    threads = [threading.Thread(target=mirror, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    async def check() -> None:
        assert await stores[0].load(KEY) == ENTRIES
        assert [s["session_id"] for s in await stores[0].list_sessions("proj")] == ["racing"]
        (summary,) = await stores[0].list_session_summaries("proj")
        assert summary["session_id"] == "racing"

    try:
        asyncio.run(check())
    finally:
        for s in {id(s): s for s in [shared, *opened]}.values():
            s.close()
