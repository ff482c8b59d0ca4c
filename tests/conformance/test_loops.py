"""An AsyncStore works from any event loop: asyncio.run twice, other threads' loops at once.

This is how frameworks call a session store: the OpenAI Agents SDK's ``Runner.run_sync``
starts a new loop per run, and its tests call one session from several threads, each with its
own loop. Every backend must serve them all, and close cleanly from any of them.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import threadkeep


def test_an_async_store_serves_every_event_loop(store_url: str, clock: Any) -> None:
    async def open_it() -> threadkeep.AsyncStore:
        return await threadkeep.open_async(store_url, clock=clock)

    store = asyncio.run(open_it())
    conv = asyncio.run(store.start(f"c-{uuid4()}"))

    async def write(n: int) -> list[int]:
        await store.append(conv.id, "user", f"m{n}")
        got = await store.append_many(conv.id, [("user", f"a{n}"), ("assistant", f"b{n}")])
        return [m.seq for m in got]

    assert asyncio.run(write(0)) == [2, 3]  # a second loop
    assert asyncio.run(write(1)) == [5, 6]  # and a third
    with ThreadPoolExecutor(4) as pool:  # loops in other threads, at the same time
        batches = list(pool.map(lambda n: asyncio.run(write(n)), range(2, 10)))
    for first, second in batches:
        assert second == first + 1
    assert len(asyncio.run(store.messages(conv.id))) == 30

    async def follow() -> list[str]:
        return [e.kind async for e in store.events(timeout=0.0)]

    assert "message.appended" in asyncio.run(follow())
    asyncio.run(store.aclose())
